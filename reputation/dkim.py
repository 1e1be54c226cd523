"""DKIM signing (RFC 6376, relaxed/relaxed; RFC 8463 Ed25519) with `cryptography`.

dkimpy signs RSA in pure Python (~7 ms a message, a throughput cap); `cryptography` signs the
same in a fraction of that (numbers: `python -m bench.dkim`). dkimpy stays the independent
verifier in the tests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from reputation.errors import ReputationError

__all__ = [
    "DEFAULT_HEADERS",
    "Algorithm",
    "DkimError",
    "DkimKey",
    "RelaxedBodyHash",
    "dns_record",
    "generate_key",
    "sign",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
DEFAULT_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
_WSP = re.compile(rb"[ \t]+")


class DkimError(ReputationError):
    """A key that cannot be used, or a message that cannot be signed."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    private_pem: bytes

    def _private(self) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        key = _load(self.private_pem)
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise DkimError(f"{self.domain}: unsupported key type {type(key).__name__}")
        return key


@functools.lru_cache(maxsize=1024)
def _load(pem: bytes) -> object:
    """Loading an RSA key checks it (tens of ms): once per key, not once per message."""
    return serialization.load_pem_private_key(pem, password=None)


def generate_key(domain: str, selector: str, algorithm: Algorithm, bits: int = 2048) -> DkimKey:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", selector):
        raise DkimError(f"invalid selector {selector!r}: letters, digits and -")
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa-sha256":
        if bits < 1024:
            raise DkimError("RSA keys shorter than 1024 bits are not accepted by verifiers")
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DkimKey(domain.lower().rstrip("."), selector, algorithm, pem)


def dns_record(key: DkimKey) -> tuple[str, str]:
    """(name, TXT value) to publish."""
    public = key._private().public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        value = f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    else:
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        value = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    return f"{key.selector}._domainkey.{key.domain}", value


def _split(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded lines, CRLF-terminated) and the body."""
    text = re.sub(rb"\r?\n", b"\r\n", message)
    head, sep, body = text.partition(b"\r\n\r\n")
    if not sep:
        head, body = text, b""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, body


def _relaxed_header(field: bytes) -> bytes:
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = [_WSP.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


class RelaxedBodyHash:
    """The relaxed body hash (RFC 6376 3.4.4, SHA-256) of a body fed in pieces of any size,
    so a message streamed to disk is hashed as it arrives and never held whole.

    Same result as hashing `_relaxed_body` of the whole body with its line ends made CRLF:
    only complete lines are canonicalized; empty lines are held back until a non-empty line
    follows them, since trailing empty lines are dropped.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._partial = b""
        self._blank = 0
        """Empty lines seen but not yet hashed (dropped if nothing else follows)."""

    def update(self, data: bytes) -> None:
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data
            return
        self._partial = data[cut + 1 :]
        self._lines(_canonical(data[: cut + 1]))

    def _lines(self, text: bytes) -> None:
        """Hash complete canonical lines (each ends in CRLF), holding back trailing blanks."""
        end = len(text)
        while end >= 2 and text[end - 2 : end] == b"\r\n":  # the trailing CRLFs
            end -= 2
        ends = (len(text) - end) // 2
        content = text[:end]
        if not content:
            self._blank += ends
            return
        self._hash.update(b"\r\n" * self._blank + content + b"\r\n")
        self._blank = ends - 1

    def hexdigest(self) -> str:
        return self._final().hexdigest()

    def b64digest(self) -> str:
        return base64.b64encode(self._final().digest()).decode()

    def _final(self) -> hashlib._Hash:
        final = self._hash.copy()
        last = _WSP.sub(b" ", self._partial).rstrip(b" ")
        if last:
            final.update(b"\r\n" * self._blank + last + b"\r\n")
        return final


_LINE_END = re.compile(rb"\r?\n")
_SPACE_BEFORE_END = re.compile(rb" \r\n")


def _canonical(lines: bytes) -> bytes:
    """Complete lines: CRLF ends, runs of whitespace as one space, none at line ends."""
    text = lines  # each step only when it has work: base64 parts, the bulk of big mail, have none
    if text.count(b"\n") != text.count(b"\r\n"):
        text = _LINE_END.sub(b"\r\n", text)
    if b"\t" in text or b"  " in text:
        text = _WSP.sub(b" ", text)
    if b" \r\n" in text:
        text = _SPACE_BEFORE_END.sub(b"\r\n", text)
    return text


def sign(
    message: bytes,
    key: DkimKey,
    *,
    now: int,
    headers: Sequence[str] = DEFAULT_HEADERS,
    body_hash: str | None = None,
) -> bytes:
    """The `DKIM-Signature:` field (CRLF-terminated) to put in front of the message.

    `body_hash`: the body's hash from `RelaxedBodyHash` when the body was streamed; then
    `message` needs to hold only the header section.
    """
    fields, body = _split(message)
    if body_hash is None:
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
    by_name: dict[bytes, list[bytes]] = {}
    for field in fields:
        by_name.setdefault(field.partition(b":")[0].strip().lower(), []).append(field)
    signed: list[bytes] = []
    names: list[str] = []
    for name in headers:
        instances = by_name.get(name.encode())
        if instances:  # the last instance, as verifiers take them bottom-up
            signed.append(_relaxed_header(instances[-1]))
            names.append(name)
    if "from" not in names:
        raise DkimError("the message has no From: header")
    tags = (
        f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector};"
        f" t={now}; h={':'.join(names)}; bh={body_hash}; b="
    )
    data = b"".join(h + b"\r\n" for h in signed) + _relaxed_header(
        b"DKIM-Signature: " + tags.encode()
    )
    private = key._private()
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:  # RFC 8463: Ed25519 over the SHA-256 of the data
        signature = private.sign(hashlib.sha256(data).digest())
    b64 = base64.b64encode(signature).decode()
    folded = "\r\n\t".join(b64[i : i + 72] for i in range(0, len(b64), 72))
    return f"DKIM-Signature: {tags}\r\n\t{folded}\r\n".encode()
