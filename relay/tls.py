"""TLS contexts for the listeners and for `relay send`, and the dev self-signed certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.errors import ConfigError
from relay.private_files import make_private_dirs

__all__ = ["client_context", "ensure_self_signed", "server_context"]

_VALIDITY = dt.timedelta(days=365)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """OpenSSL's modern cipher defaults, TLS 1.2 or newer; a bad pair is a ConfigError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # The password callback stops OpenSSL from prompting on the terminal for an encrypted key.
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(_diagnose(cert, key, exc)) from None
    return context


def client_context(cafile: Path | None = None, verify: bool = True) -> ssl.SSLContext:
    """System trust plus `cafile` (so the self-signed dev certificate verifies)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if cafile is not None:
        try:
            context.load_verify_locations(cafile=cafile)
        except FileNotFoundError:
            raise ConfigError(f"{cafile}: CA file not found") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{cafile}: cannot load CA certificates: {_reason(exc)}") from None
    return context


def ensure_self_signed(cert: Path, key: Path, hostname: str) -> bool:
    """Create a self-signed pair when either file is missing; True when it did.

    The certificate is its own CA (basicConstraints CA=true) so a client can trust it
    directly with `client_context(cafile=cert)`.
    """
    if cert.exists() and key.exists():
        return False
    private_key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(private_key, hostname)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(key, key_pem, mode=0o600)
    _write_atomic(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return True


def _self_signed(private_key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    for name in (hostname, "localhost", "127.0.0.1", "::1"):
        general = _general_name(name)
        if general not in names:
            names.append(general)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    public_key = private_key.public_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    return builder.sign(private_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write via a temporary file so a crash never leaves half a key; the mode is set at open.
    Folders it creates (`var/`, `var/tls/`) are 0700: only the relay reads its key."""
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, mode)  # the umask applies to os.open; make the mode exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _no_password() -> bytes:
    raise ValueError("encrypted private key")  # reported by _diagnose


def _diagnose(cert: Path, key: Path, exc: Exception) -> str:
    """OpenSSL does not say which file was wrong; find out with `cryptography`."""
    try:
        cert_data = cert.read_bytes()
    except OSError as err:
        return f"{cert}: cannot read certificate: {_reason(err)}"
    try:
        key_data = key.read_bytes()
    except OSError as err:
        return f"{key}: cannot read private key: {_reason(err)}"
    try:
        certificate = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        return f"{cert}: not a PEM certificate"
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        return f"{key}: encrypted private key (a passphrase is not supported)"
    except (ValueError, UnsupportedAlgorithm):
        return f"{key}: not a PEM private key"
    if private_key.public_key() != certificate.public_key():
        return f"{key}: private key does not match certificate {cert}"
    return f"{cert}: cannot load certificate/key pair: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
