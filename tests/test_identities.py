"""Sender identities: the pure rules without Redis, then the store, DNS verification, the
per-process cache and the DKIM signer's ownership rule against a real Redis and DNS."""

from __future__ import annotations

import dkim
import pytest

from relay.clock import FakeClock
from relay.delivery.mx import make_resolver
from relay.errors import InvalidInput, NotFound, VerificationFailed
from relay.sender_auth import DkimKeyStore, DkimSigner, IdentityCache, IdentityStore
from relay.sender_auth.identities import (
    conflict,
    covers,
    normalise_address,
    normalise_domain,
    overlaps,
    token_found,
    token_name,
    token_value,
    verify_by_dns,
)
from reputation.dkim import dns_record, generate_key
from tests.support.vault import temp_vault

# --- pure ---


@pytest.mark.parametrize(
    "given,expected",
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  mail.Example.com.  ", "mail.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ],
)
def test_domains_are_normalised(given, expected):
    assert normalise_domain(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "com", "example..com", "-a.example", "a_b.example", "x" * 64 + ".example", "a b.c"]
)
def test_what_is_not_a_domain_is_refused(bad):
    with pytest.raises(InvalidInput, match="not a domain"):
        normalise_domain(bad)


def test_addresses_are_normalised():
    assert normalise_address("Bob@Example.COM.") == "bob@example.com"
    assert normalise_address("zoë@bücher.example") == "zoë@xn--bcher-kva.example"
    for bad in ("@example.com", "bob", "b ob@example.com", "bob@"):
        with pytest.raises(InvalidInput):
            normalise_address(bad)


IDENTITIES = frozenset({"example.com", "news@other.example"})


@pytest.mark.parametrize(
    "address,covered",
    [
        ("alice@example.com", True),
        ("Alice@EXAMPLE.com.", True),
        ("bob@mail.example.com", True),  # a subdomain of a verified domain
        ("bob@a.b.example.com", True),
        ("news@other.example", True),
        ("NEWS@Other.Example", True),
        ("sales@other.example", False),  # an address covers only itself
        ("x@sub.other.example", False),
        ("ceo@bank.example", False),
        ("x@evil-example.com", False),
        ("x@example.com.evil.example", False),
        ("x@com", False),
        ("not an address", False),
        ("", False),
    ],
)
def test_covers(address, covered):
    assert covers(IDENTITIES, address) is covered


def test_overlaps_and_conflicts():
    assert overlaps("example.com", "example.com")
    assert overlaps("example.com", "sub.example.com") and overlaps("sub.example.com", "example.com")
    assert overlaps("example.com", "news@example.com")
    assert overlaps("news@sub.example.com", "example.com")
    assert not overlaps("news@example.com", "sales@example.com"), "two addresses of one domain"
    assert not overlaps("example.com", "notexample.com")
    owners = {"example.com": "bob", "x@hosted.example": "carol"}
    assert conflict("alice", "mail.example.com", owners) == ("example.com", "bob")
    assert conflict("bob", "mail.example.com", owners) is None, "its own names never conflict"
    assert conflict("alice", "y@hosted.example", owners) is None
    assert conflict("alice", "hosted.example", owners) == ("x@hosted.example", "carol")


def test_token_record():
    assert token_name("example.com") == "_relay-verify.example.com"
    assert token_name("news@example.com") == "_relay-verify.example.com"
    assert token_value("abc") == "relay-verify=abc"
    assert token_found(["v=spf1 -all", "relay-verify=abc"], "abc")
    assert not token_found(["relay-verify=abcd", "relay-verify=ab"], "abc")


# --- the store ---


async def test_one_name_belongs_to_one_account(redis, clock):
    store = IdentityStore(redis, clock)
    pending = await store.add("alice", "Example.COM.")
    assert pending.name == "example.com" and not pending.verified
    assert await store.verified("alice") == frozenset()
    assert (await store.add("alice", "example.com")).token == pending.token, "idempotent"
    # another account may claim it too while nobody has verified it
    await store.add("bob", "example.com")
    await store.mark_verified("alice", "example.com", "dns")
    assert await store.verified("alice") == {"example.com"}
    for name in ("example.com", "mail.example.com", "ceo@example.com"):
        with pytest.raises(InvalidInput, match="verified for account alice"):
            await store.add("bob", name)
    with pytest.raises(InvalidInput, match="verified for account alice"):
        await store.mark_verified("bob", "example.com", "dns")
    assert await store.owner("mail.example.com") == "alice"
    await store.remove("alice", "example.com")
    assert await store.owner("example.com") is None
    await store.mark_verified("bob", "example.com", "operator")
    assert await store.verified("bob") == {"example.com"}
    assert await store.verified("alice") == frozenset()


async def test_addresses_of_a_hosted_domain_go_to_different_accounts(redis, clock):
    store = IdentityStore(redis, clock)
    await store.mark_verified("alice", "alice@hosted.example", "operator")
    await store.mark_verified("bob", "bob@hosted.example", "operator")
    with pytest.raises(InvalidInput, match=r"alice@hosted\.example"):
        await store.add("carol", "hosted.example")
    assert await store.owner("hosted.example") is None, "an address does not own its domain"


async def test_public_suffixes_and_unknown_identities(redis, clock):
    store = IdentityStore(redis, clock)
    with pytest.raises(InvalidInput, match="public suffix"):
        await store.add("alice", "co.uk")
    with pytest.raises(NotFound):
        await store.remove("alice", "example.com")
    with pytest.raises(NotFound):
        await store.mark_verified("alice", "example.com", "dns")


async def test_forget_frees_every_name(redis, clock):
    store = IdentityStore(redis, clock)
    await store.mark_verified("alice", "example.com", "operator")
    await store.add("alice", "pending.example")
    assert [i.name for i in await store.forget("alice")] == ["example.com", "pending.example"]
    await store.mark_verified("bob", "example.com", "operator")


# --- verification through DNS ---


async def test_verify_by_the_published_token(redis, clock, dns):
    store = IdentityStore(redis, clock)
    resolver = make_resolver(dns.settings())
    identity = await store.add("alice", "example.com")
    with pytest.raises(VerificationFailed, match="has no TXT record"):
        await verify_by_dns(store, resolver, "alice", "example.com")  # NXDOMAIN
    dns.set("_relay-verify.example.com", "TXT", '"relay-verify=not-the-token"', '"v=spf1 -all"')
    with pytest.raises(VerificationFailed, match="has no TXT record"):
        await verify_by_dns(store, resolver, "alice", "example.com")
    assert await store.verified("alice") == frozenset()
    dns.set("_relay-verify.example.com", "TXT", f'"{token_value(identity.token)}"')
    verified = await verify_by_dns(store, resolver, "alice", "EXAMPLE.com.")
    assert verified.verified and verified.method == "dns"
    assert await store.verified("alice") == {"example.com"}


async def test_an_address_is_verified_by_its_domains_token(redis, clock, dns):
    store = IdentityStore(redis, clock)
    identity = await store.add("alice", "news@example.com")
    dns.set("_relay-verify.example.com", "TXT", f'"{token_value(identity.token)}"')
    await verify_by_dns(store, make_resolver(dns.settings()), "alice", "news@example.com")
    assert await store.verified("alice") == {"news@example.com"}


async def test_dns_failure_is_one_clear_error(redis, clock, dns):
    store = IdentityStore(redis, clock)
    await store.add("alice", "example.com")
    dns.servfail("_relay-verify.example.com")
    with pytest.raises(VerificationFailed, match=r"DNS lookup of _relay-verify\.example\.com"):
        await verify_by_dns(store, make_resolver(dns.settings()), "alice", "example.com")


# --- the per-process cache ---


async def test_cache_sees_removals_within_its_ttl_and_additions_within_recheck(redis):
    clock = FakeClock()
    store = IdentityStore(redis, clock)
    cache = IdentityCache(store, clock=clock.now, ttl=60, recheck=5)
    await store.mark_verified("alice", "example.com", "operator")
    assert await cache.covers("alice", "a@example.com")
    await store.remove("alice", "example.com")
    clock.advance(59)
    assert await cache.covers("alice", "a@example.com"), "stale for at most the ttl"
    clock.advance(2)
    assert not await cache.covers("alice", "a@example.com")
    await store.mark_verified("alice", "new.example", "operator")
    clock.advance(1)
    assert not await cache.covers("alice", "a@new.example"), "within recheck: no lookup"
    clock.advance(5)
    assert await cache.covers("alice", "a@new.example")


# --- DKIM keys sign only their owner's mail ---

MESSAGE = b"From: CEO <ceo@b.example>\r\nTo: x@example.com\r\nSubject: pay\r\n\r\nNow.\r\n"


async def test_dkim_signer_signs_only_for_the_keys_owner(redis):
    keys = DkimKeyStore(redis, temp_vault())
    key = generate_key("b.example", "s1", "ed25519-sha256")
    await keys.set_owner("b.example", "bob")
    await keys.put(key)
    orphan = generate_key("orphan.example", "s1", "ed25519-sha256")
    await keys.put(orphan)  # a key from before owners existed: signs nothing
    signer = DkimSigner(keys)
    assert await signer.sign_whole(MESSAGE, "alice") == MESSAGE
    signed = await signer.sign_whole(MESSAGE, "bob")
    _, value = dns_record(key)
    assert dkim.verify(signed, dnsfunc=lambda q, timeout=5: value.encode())
    sub = MESSAGE.replace(b"ceo@b.example", b"ceo@mail.b.example")
    assert (await signer.sign_whole(sub, "bob")).startswith(b"DKIM-Signature"), (
        "registrable-domain key"
    )
    assert await signer.sign_whole(sub, "alice") == sub
    lone = MESSAGE.replace(b"ceo@b.example", b"x@orphan.example")
    assert (
        await signer.sign_whole(lone, "alice") == lone and await signer.sign_whole(lone, "") == lone
    )
    assert await keys.remove_owned("bob", "b.example") == ["b.example"]
    assert await DkimSigner(keys).sign_whole(MESSAGE, "bob") == MESSAGE


async def test_only_the_mail_of_accounts_that_own_a_key_is_hashed_as_it_arrives(redis, clock):
    """The body hash costs ~70 ms per 20 MB: paid only when a signature may follow."""
    keys = DkimKeyStore(redis, temp_vault())
    signer = DkimSigner(keys, clock=clock.now)
    assert not await signer.signs_for("bob"), "no key at all"
    await keys.set_owner("b.example", "bob")
    await keys.put(generate_key("b.example", "s1", "ed25519-sha256"))
    clock.advance(61)  # the owners are read again after the cache's minute
    assert await signer.signs_for("bob")
    assert not await signer.signs_for("alice")
