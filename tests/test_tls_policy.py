"""TLS of the listeners: TLS 1.2 or newer, no weak cipher, no credentials before STARTTLS."""

from __future__ import annotations

import ssl
import warnings

import pytest
from structlog.testing import capture_logs

from relay.tls import server_context
from tests.conftest import PASSWORD, add_sender
from tests.support.guarded import RawClient, guarded_stack

WEAK = (
    "RC4",
    "DES",
    "3DES",
    "NULL",
    "EXP",
    "MD5",
    "anon",
    "ADH",
    "AECDH",
    "PSK",
    "SRP",
    "CAMELLIA",
)


@pytest.fixture
async def stack(redis, clock, server_cert, ca):
    await add_sender(redis)
    async with guarded_stack(redis, clock, server_cert, ca) as stack:
        yield stack


def test_the_server_offers_only_forward_secret_aead_or_sha2_suites(server_cert):
    ciphers = server_context(*server_cert).get_ciphers()
    assert ciphers
    for cipher in ciphers:
        name = cipher["name"]
        assert cipher["protocol"] in ("TLSv1.2", "TLSv1.3"), name
        assert not any(weak in name for weak in WEAK), name
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] in ("kx-ecdhe", "kx-dhe"), f"{name}: no forward secrecy"
            assert cipher["digest"] in (None, "sha256", "sha384"), f"{name}: SHA-1 MAC"


def old_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # an old client is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


def weak_cipher_client(ciphers: str) -> ssl.SSLContext:
    context = old_client(ssl.TLSVersion.TLSv1_2)
    try:
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip(f"this OpenSSL cannot even offer {ciphers}")
    return context


CLIENTS = {
    "TLS 1.0": lambda: old_client(ssl.TLSVersion.TLSv1),
    "TLS 1.1": lambda: old_client(ssl.TLSVersion.TLSv1_1),
    "static RSA key exchange": lambda: weak_cipher_client(
        "AES128-SHA:AES256-SHA:AES128-GCM-SHA256"
    ),
    "SHA-1 MAC suites": lambda: weak_cipher_client("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA"),
    "3DES": lambda: weak_cipher_client("DES-CBC3-SHA"),
    "anonymous": lambda: weak_cipher_client("aNULL"),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
async def test_weak_clients_cannot_complete_a_handshake(stack, client, implicit):
    context = CLIENTS[client]()
    if implicit:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await RawClient.connect(stack.implicit_port, tls=context)
        return
    raw = await RawClient.connect(stack.starttls_port)
    try:
        assert (await raw.reply())[0] == 220
        await raw.command(b"EHLO old.client")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await raw.starttls(context)
    finally:
        await raw.close()
    # The listener is still fine for a modern client.
    good = await RawClient.connect(stack.implicit_port, tls=stack.client_tls)
    assert (await good.reply())[0] == 220
    await good.close()


async def test_a_modern_client_gets_tls_1_2_or_newer(stack):
    client = await RawClient.connect(stack.implicit_port, tls=stack.client_tls)
    try:
        assert (await client.reply())[0] == 220
        ssl_object = client.writer.get_extra_info("ssl_object")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        await client.close()


async def test_credentials_before_starttls_are_refused_and_never_checked(stack):
    client = await RawClient.connect(stack.starttls_port)
    try:
        assert (await client.reply())[0] == 220
        code, _ = await client.command(b"EHLO client.test")
        assert code == 250
        with capture_logs() as logs:
            assert await client.login("alice", PASSWORD) == (
                530,
                "5.7.0 Must issue a STARTTLS command first",
            )
            assert (await client.command(b"AUTH LOGIN"))[0] == 530
            assert (await client.command(b"MAIL FROM:<alice@example.org>"))[0] == 530
            assert (await client.command(b"RCPT TO:<bob@example.com>"))[0] == 530
            assert (await client.command(b"DATA"))[0] == 530
        assert not [e for e in logs if e["event"].startswith("auth.")], "nothing was checked"
        # After STARTTLS the same credentials work.
        await client.starttls(stack.client_tls)
        assert (await client.command(b"EHLO client.test"))[0] == 250
        assert (await client.login("alice", PASSWORD))[0] == 235
    finally:
        await client.close()


async def test_auth_is_advertised_only_after_starttls(stack):
    client = await RawClient.connect(stack.starttls_port)
    try:
        await client.reply()
        await client.send(b"EHLO client.test\r\n")
        before = await client.reader.readuntil(b"250 ")
        assert b"AUTH" not in before and b"STARTTLS" in before
        await client.reader.readline()
        await client.starttls(stack.client_tls)
        await client.send(b"EHLO client.test\r\n")
        after = await client.reader.readuntil(b"250 ")
        assert b"AUTH LOGIN PLAIN" in after or b"AUTH PLAIN LOGIN" in after
        assert b"STARTTLS" not in after
        await client.reader.readline()
    finally:
        await client.close()


async def test_commands_injected_before_the_tls_handshake_are_discarded(stack):
    """CVE-2011-0411 style: plaintext sent after STARTTLS must not run inside the TLS session."""
    client = await RawClient.connect(stack.starttls_port)
    try:
        await client.reply()
        assert (await client.command(b"EHLO client.test"))[0] == 250
        await client.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        assert (await client.reply())[0] == 220
        await client.writer.start_tls(stack.client_tls, server_hostname="127.0.0.1")
        # The first reply inside TLS answers our NOOP, not the injected MAIL.
        assert await client.command(b"NOOP") == (250, "2.0.0 OK")
    finally:
        await client.close()
