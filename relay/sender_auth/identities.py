"""Sender identities: the domains and single addresses an account may send from.

Without them any customer could send as any domain, and the relay's good name (its egress
IPs in the customer's SPF, its DKIM keys) would vouch for the forgery. An account *owns* a
domain once it proved control of its DNS (a TXT token at `_relay-verify.<domain>`) or an
operator asserted it (`relay domain add … --verified`, audited); a verified domain covers
its subdomains, an address covers only itself. One name belongs to at most one account.

Redis, keys of one account under its hash tag (as `acct:{LOGIN}` and `quota:{LOGIN}:…`):
  ident:{LOGIN}   hash: name → JSON (token, added_at, verified_at, method)
  identities      hash: verified name → login (the global index; another Cluster slot, so
                  it is written first and read tolerantly: it may name a login that lost
                  the name, never miss an owner)

The pure part (normalising, `covers`, the token record, conflicts) needs no Redis.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
import redis.asyncio as aioredis

from relay.address import domain_text, local_part
from relay.address import normalise_domain as _lower_idna
from relay.clock import Clock
from relay.errors import InvalidInput, NotFound, VerificationFailed
from relay.redis_client import store_errors, text, text_dict
from reputation import registrable_domain

__all__ = [
    "Identity",
    "IdentityCache",
    "IdentityMode",
    "IdentityStore",
    "ancestors",
    "conflict",
    "covers",
    "normalise_address",
    "normalise_domain",
    "normalise_identity",
    "overlaps",
    "token_found",
    "token_name",
    "token_value",
    "verify_by_dns",
]

IdentityMode = Literal["off", "warn", "enforce"]

TOKEN_LABEL = "_relay-verify"
TOKEN_PREFIX = "relay-verify="
_INDEX = "identities"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# --- pure: names, coverage, tokens, conflicts ---


def normalise_domain(text: str) -> str:
    """`Example.COM.` → `example.com`, `bücher.example` → `xn--bcher-kva.example`; raises
    InvalidInput for anything that is not a host name of two labels or more."""
    name = _lower_idna(text)
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise InvalidInput(f"not a domain: {text!r}")
    return name


def normalise_address(text: str) -> str:
    """`Bob@Example.COM.` → `bob@example.com` (the local part lower-cased too: mailbox
    providers treat it case-insensitively, and an identity must not be dodged by case)."""
    local = local_part(text.strip())
    if "@" not in text or not local or any(ch.isspace() or ch < " " for ch in local):
        raise InvalidInput(f"not an address: {text!r}")
    return f"{local.lower()}@{normalise_domain(domain_text(text))}"


def normalise_identity(text: str) -> str:
    """A domain or a single address, normalised."""
    return normalise_address(text) if "@" in text else normalise_domain(text)


def domain_part(name: str) -> str:
    """The domain of an identity: itself, or the part after the @ of an address."""
    return domain_text(name) or name


def ancestors(domain: str) -> list[str]:
    """`a.b.example` → [`a.b.example`, `b.example`, `example`]: the domain and its parents."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def covers(identities: Collection[str], address: str) -> bool:
    """Whether an address may be used by an account with these verified identities: the
    address itself, or its domain, or a parent domain of it, is one of them."""
    try:
        normalised = normalise_address(address)
    except InvalidInput:
        return False
    if normalised in identities:
        return True
    return any(d in identities for d in ancestors(domain_part(normalised)))


def overlaps(a: str, b: str) -> bool:
    """Whether two identities can cover one same address: equal, or one is a domain that
    the other is (or is an address) under. Two different addresses never overlap."""
    if a == b:
        return True
    domain_a, domain_b = domain_part(a), domain_part(b)
    if a == domain_a and domain_a in ancestors(domain_b):
        return True
    return b == domain_b and domain_b in ancestors(domain_a)


def conflict(login: str, name: str, owners: Mapping[str, str]) -> tuple[str, str] | None:
    """(name, login) of a verified identity of *another* account that overlaps `name`.

    `owners`: verified name → login, at least for `name`, its parent domains and (for a
    domain) the names under it. One address is sent from by at most one account.
    """
    for other, owner in sorted(owners.items()):
        if owner != login and overlaps(name, other):
            return other, owner
    return None


def token_name(name: str) -> str:
    """Where the token is published: `_relay-verify.<domain>` (an address: its domain)."""
    return f"{TOKEN_LABEL}.{domain_part(name)}"


def token_value(token: str) -> str:
    return f"{TOKEN_PREFIX}{token}"


def token_found(txt_values: Iterable[str], token: str) -> bool:
    """Whether one of the TXT strings (several records may sit at one name) is ours."""
    wanted = token_value(token)
    return any(value.strip() == wanted for value in txt_values)


# --- the stored identities of an account ---


@dataclass(frozen=True)
class Identity:
    name: str
    """A normalised domain (`example.com`) or address (`news@example.com`)."""
    login: str
    token: str
    """What `_relay-verify.<domain>` must hold (as `relay-verify=<token>`)."""
    added_at: float
    verified_at: float | None = None
    method: str = ""
    """How it was verified: `dns` (the token was found) or `operator` (asserted, audited)."""

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def kind(self) -> Literal["domain", "address"]:
        return "address" if "@" in self.name else "domain"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "login": self.login,
            "verified": self.verified,
            "verified_at": self.verified_at,
            "method": self.method,
            "added_at": self.added_at,
            "token_record": f'{token_name(self.name)} TXT "{token_value(self.token)}"',
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "token": self.token,
                "added_at": self.added_at,
                "verified_at": self.verified_at,
                "method": self.method,
            }
        )

    @classmethod
    def from_json(cls, login: str, name: str, raw: str) -> Identity:
        data = json.loads(raw)
        return cls(
            name=name,
            login=login,
            token=data["token"],
            added_at=float(data["added_at"]),
            verified_at=data.get("verified_at"),
            method=data.get("method", ""),
        )


def _key(login: str) -> str:
    return f"ident:{{{login}}}"


class IdentityStore:
    def __init__(self, redis: aioredis.Redis, clock: Clock) -> None:
        self._redis = redis
        self._clock = clock

    async def add(self, login: str, name: str) -> Identity:
        """A pending identity with a new token (or the one already there, unchanged).
        Refused when another account has verified an overlapping name."""
        name = _checked(name)
        existing = await self.get(login, name)
        if existing is not None and existing.verified:
            return existing
        await self._refuse_conflict(login, name)
        if existing is not None:
            return existing
        identity = Identity(name, login, secrets.token_hex(16), self._clock.now())
        with store_errors():
            await self._redis.hsetnx(_key(login), name, identity.to_json())
        found = await self.get(login, name)
        assert found is not None
        return found

    async def mark_verified(self, login: str, name: str, method: str) -> Identity:
        """Verified from now on (an operator's assertion adds it first when missing)."""
        name = _checked(name)
        identity = await self.get(login, name)
        if identity is None:
            if method != "operator":
                raise NotFound(f"{login} has no identity {name}: add it first")
            identity = await self.add(login, name)
        if identity.verified:
            return identity
        await self._refuse_conflict(login, name)
        with store_errors():
            claimed = await self._redis.hsetnx(_INDEX, name, login)
            if not claimed and text(await self._redis.hget(_INDEX, name) or "") != login:
                # verified meanwhile by another account (or a stale entry an operator removes)
                raise InvalidInput(f"{name} is already verified for another account")
            done = Identity(
                name, login, identity.token, identity.added_at, self._clock.now(), method
            )
            await self._redis.hset(_key(login), name, done.to_json())
        return done

    async def get(self, login: str, name: str) -> Identity | None:
        with store_errors():
            raw = await self._redis.hget(_key(login), name)
        return None if raw is None else Identity.from_json(login, name, text(raw))

    async def of(self, login: str) -> list[Identity]:
        with store_errors():
            raw = text_dict(await self._redis.hgetall(_key(login)))
        return sorted(
            (Identity.from_json(login, n, v) for n, v in raw.items()), key=lambda i: i.name
        )

    async def verified(self, login: str) -> frozenset[str]:
        """The names the account may send from: one HGETALL (what the cache calls)."""
        return frozenset(i.name for i in await self.of(login) if i.verified)

    async def remove(self, login: str, name: str) -> Identity:
        name = _checked(name)
        identity = await self.get(login, name)
        if identity is None:
            raise NotFound(f"{login} has no identity {name}")
        with store_errors():
            await self._redis.hdel(_key(login), name)
            if text(await self._redis.hget(_INDEX, name) or "") == login:
                await self._redis.hdel(_INDEX, name)
        return identity

    async def forget(self, login: str) -> list[Identity]:
        """Drop every identity of an account (it is being removed)."""
        identities = await self.of(login)
        for identity in identities:
            await self.remove(login, identity.name)
        return identities

    async def owner(self, domain: str) -> str | None:
        """The account with a verified domain identity covering `domain` (itself or a
        parent); the index is only believed when the account's own hash agrees."""
        names = ancestors(normalise_domain(domain))
        with store_errors():
            logins = await self._redis.hmget(_INDEX, names)
        for name, login in zip(names, logins, strict=True):
            if login is None:
                continue
            found = await self.get(text(login), name)
            if found is not None and found.verified:
                return found.login
        return None

    async def _refuse_conflict(self, login: str, name: str) -> None:
        found = conflict(login, name, await self._owners_around(name))
        if found is not None:
            other, owner = found
            raise InvalidInput(
                f"{name} overlaps {other}, verified for account {owner}; "
                f"an operator must `relay domain remove {owner} {other}` first"
            )

    async def _owners_around(self, name: str) -> dict[str, str]:
        """The index entries of `name`, its parent domains and (a domain) the names under it."""
        domain = domain_part(name)
        names = list(dict.fromkeys([name, *ancestors(domain)]))
        owners: dict[str, str] = {}
        with store_errors():
            for n, login in zip(names, await self._redis.hmget(_INDEX, names), strict=True):
                if login is not None:
                    owners[n] = text(login)
            if name == domain:  # an operator command: scanning the index is affordable
                for pattern in (f"*.{domain}", f"*@{domain}"):
                    async for n, login in self._redis.hscan_iter(_INDEX, match=pattern):
                        owners[text(n)] = text(login)
        return owners


def _checked(name: str) -> str:
    name = normalise_identity(name)
    if registrable_domain(domain_part(name)) is None:
        raise InvalidInput(f"{domain_part(name)} is a public suffix: nobody owns it")
    return name


# --- verification through DNS ---


async def txt_values(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """The TXT strings at `name` (each record's strings joined); [] when there are none."""
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise VerificationFailed(f"DNS lookup of {name} TXT failed: {exc}") from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


async def verify_by_dns(
    store: IdentityStore, resolver: dns.asyncresolver.Resolver, login: str, name: str
) -> Identity:
    """Verified when the identity's token is published; VerificationFailed otherwise."""
    identity = await store.get(login, _checked(name))
    if identity is None:
        raise NotFound(f"{login} has no identity {name}: `relay domain add {login} {name}` first")
    if identity.verified:
        return identity
    where = token_name(identity.name)
    if not token_found(await txt_values(resolver, where), identity.token):
        raise VerificationFailed(
            f'{where} has no TXT record "{token_value(identity.token)}" (yet): publish it, '
            "wait for the DNS to update, then verify again"
        )
    return await store.mark_verified(login, identity.name, "dns")


# --- the submission path: a short-lived copy per process ---


class IdentityCache:
    """The verified identities of each account, kept in the process for `ttl` seconds, so
    checking a message costs no Redis round trip in the usual case (at most one HGETALL
    per account per `ttl`, per process).

    Staleness accepted: a name *removed* (or an account that lost it) keeps being allowed
    by a process for up to `ttl` (60 s). A name *added* is seen within `recheck` (1 s): an
    address the cached copy does not cover is looked up again once that copy is older than
    `recheck`, so a customer who was refused, then verified the domain, is not refused for
    another minute; unverified senders (refused, or accepted under warn) cost at most one
    HGETALL per account per `recheck`.
    """

    def __init__(
        self,
        store: IdentityStore,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = 60.0,
        recheck: float = 1.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._recheck = recheck
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def covers(self, login: str, address: str) -> bool:
        """Whether `address` is a verified identity of `login` (StoreUnavailable if Redis
        cannot tell)."""
        now = self._clock()
        hit = self._cache.get(login)
        if hit is not None and now - hit[0] < self._ttl:
            if covers(hit[1], address):
                return True
            if now - hit[0] < self._recheck:
                return False
        return covers(await self._load(login, now), address)

    async def _load(self, login: str, now: float) -> frozenset[str]:
        names = await self._store.verified(login)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[login] = (now, names)
        return names
