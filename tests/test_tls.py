"""Real handshakes on 127.0.0.1 with the contexts and certificate that `relay.tls` builds."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.errors import ConfigError
from relay.tls import client_context, ensure_self_signed, server_context


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert ensure_self_signed(cert, key, "relay.test")
    return cert, key


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def handshake(port: int, context: ssl.SSLContext, server_hostname: str) -> str:
    """Connect, read the greeting, and return the negotiated TLS version."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname),
        timeout=10,
    )
    try:
        assert await asyncio.wait_for(reader.readline(), timeout=10) == b"hello\n"
        version = str(writer.get_extra_info("ssl_object").version())
    finally:
        writer.close()
    return version


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "relay.test"])
async def test_self_signed_cert_verifies_with_itself_as_ca(
    pair: tuple[Path, Path], name: str
) -> None:
    cert, key = pair
    async with tls_server(server_context(cert, key)) as port:
        version = await handshake(port, client_context(cafile=cert), name)
    assert version in ("TLSv1.2", "TLSv1.3")


async def test_self_signed_cert_not_trusted_without_cafile(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    async with tls_server(server_context(cert, key)) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, client_context(), "127.0.0.1")
        # verify=False is the explicit way around it
        assert await handshake(port, client_context(verify=False), "127.0.0.1")


async def test_hostname_not_in_certificate_is_refused(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    async with tls_server(server_context(cert, key)) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await handshake(port, client_context(cafile=cert), "other.test")


def _old_tls_client() -> ssl.SSLContext:
    """A client that really offers TLS 1.0/1.1 (its own security level would forbid it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


async def test_tls_1_1_client_is_refused_by_the_server(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    async with tls_server(server_context(cert, key)) as port:
        # asyncio's server drops the connection on a failed handshake, sometimes before
        # its protocol-version alert is flushed: either is a refusal.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await handshake(port, _old_tls_client(), "127.0.0.1")

    # Control: the same client does get TLS 1.1 from a server that allows it.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(cert, key)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    async with tls_server(permissive) as port:
        assert await handshake(port, _old_tls_client(), "127.0.0.1") == "TLSv1.1"


def test_mismatched_key_names_the_key_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, _ = pair
    other_cert, other_key = tmp_path / "other" / "cert.pem", tmp_path / "other" / "key.pem"
    ensure_self_signed(other_cert, other_key, "other.test")
    with pytest.raises(ConfigError) as info:
        server_context(cert, other_key)
    message = str(info.value)
    assert str(other_key) in message
    assert "does not match" in message
    assert "\n" not in message


def test_unusable_files_name_the_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"

    cases = {
        (garbage, key): f"{garbage}: not a PEM certificate",
        (cert, garbage): f"{garbage}: not a PEM private key",
        (missing, key): f"{missing}: cannot read certificate",
        (cert, missing): f"{missing}: cannot read private key",
    }
    for (c, k), expected in cases.items():
        with pytest.raises(ConfigError) as info:
            server_context(c, k)
        assert str(info.value).startswith(expected), str(info.value)


def test_encrypted_key_is_an_error_not_a_prompt(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=re.escape(f"{encrypted}: encrypted private key")):
        server_context(cert, encrypted)


def test_ensure_self_signed_is_idempotent(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    before = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    assert ensure_self_signed(cert, key, "relay.test") is False
    after = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    assert after == before


def test_ensure_self_signed_recreates_a_missing_half(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    old_cert = cert.read_bytes()
    key.unlink()
    assert ensure_self_signed(cert, key, "relay.test") is True
    assert cert.read_bytes() != old_cert
    server_context(cert, key)  # the new pair matches


def test_self_signed_certificate_contents(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["relay.test", "localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 365 <= lifetime.days <= 366
    assert serialization.load_pem_private_key(key.read_bytes(), password=None)


def test_client_context_missing_cafile_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.pem: CA file not found"):
        client_context(cafile=tmp_path / "missing.pem")
