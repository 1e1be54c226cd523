"""Encryption at rest of DKIM private keys: AES-256-GCM with keys kept outside Redis.

Whoever reads Redis (its AOF on disk, a backup, a replica, a stolen `rediss://` password)
must not get the private keys that make mail verify as our customers'. The keys that encrypt
them live in a file (`sender_auth.key_file`) or an environment variable
(`sender_auth.key_env`), never in Redis.

The source holds one or more keys, each 32 random bytes in base64: the first encrypts, all of
them decrypt. A stored value names the key that sealed it (`aesgcm1:<key id>:<data>`), so a
new key goes first, `relay dkim rekey` re-encrypts everything with it, and the old one can then
be dropped. The key id is a hash of the key: it tells keys apart and reveals nothing of them.
Each value is bound to what it protects (`context`, e.g. `dkim:example.com`): a value copied
to another entry does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.config import SenderAuthSettings
from relay.errors import RelayError
from relay.private_files import write_private

__all__ = [
    "KeyVault",
    "KeyVaultError",
    "VaultKey",
    "is_sealed",
    "new_key_line",
    "open_sealed",
    "parse_keys",
    "seal",
    "sealed_key_id",
]

log = structlog.get_logger("relay.dkim")

_FORMAT = "aesgcm1"
_NONCE = 12
_KEY_BYTES = 32
_KEY_HINT = "32 random bytes in base64, e.g. from `openssl rand -base64 32`"


class KeyVaultError(RelayError):
    """No key to encrypt or decrypt with, or one that does not fit; names the config key."""


@dataclass(frozen=True)
class VaultKey:
    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def of(cls, secret: bytes) -> VaultKey:
        digest = hashlib.sha256(b"relay key id\0" + secret).hexdigest()
        return cls(digest[:8], secret)


def new_key_line() -> str:
    """A fresh key as it is written in the key file or the environment variable."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode()


def parse_keys(text: str, *, where: str) -> list[VaultKey]:
    """Keys in order (current first): one per line, or separated by spaces or commas;
    blank lines and `#` comments skipped. `where` names the source in errors; a bad key is
    reported by its position only, never shown."""
    keys = []
    words = [w for line in text.splitlines() for w in re.split(r"[\s,]+", line.split("#")[0])]
    for number, word in enumerate((w for w in words if w), start=1):
        try:
            padded = word + "=" * (-len(word) % 4)  # accept it without its padding
            secret = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != _KEY_BYTES:
            raise KeyVaultError(f"{where}: key {number} is not a key ({_KEY_HINT})")
        keys.append(VaultKey.of(secret))
    if not keys:
        raise KeyVaultError(f"{where}: holds no key ({_KEY_HINT})")
    return keys


def is_sealed(value: str) -> bool:
    return value.startswith(f"{_FORMAT}:")


def sealed_key_id(value: str) -> str | None:
    """The id of the key that sealed `value`; None for a value that is not sealed."""
    return value.split(":", 2)[1] if is_sealed(value) and value.count(":") >= 2 else None


def seal(key: VaultKey, plaintext: bytes, *, context: str, nonce: bytes | None = None) -> str:
    """`plaintext` encrypted and authenticated with `key`, bound to `context`."""
    nonce = nonce if nonce is not None else os.urandom(_NONCE)
    sealed = AESGCM(key.secret).encrypt(nonce, plaintext, context.encode())
    data = base64.urlsafe_b64encode(nonce + sealed).decode()
    return f"{_FORMAT}:{key.key_id}:{data}"


def open_sealed(keys: Mapping[str, VaultKey], value: str, *, context: str, where: str) -> bytes:
    """The plaintext of a `seal` result; KeyVaultError when no key of `keys` opens it."""
    fmt, _, rest = value.partition(":")
    key_id, _, data = rest.partition(":")
    try:
        raw = base64.urlsafe_b64decode(data.encode()) if fmt == _FORMAT else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) <= _NONCE:
        raise KeyVaultError(f"{context}: the stored value is not an encrypted key")
    key = keys.get(key_id)
    if key is None:
        raise KeyVaultError(
            f"{where}: no key with id {key_id}, which encrypted {context};"
            " put it back (after the current key) or run `relay dkim rekey` where it is"
        )
    try:
        return AESGCM(key.secret).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
    except InvalidTag:
        raise KeyVaultError(
            f"{where}: key {key_id} does not decrypt {context} (the value is damaged,"
            " or was copied from another entry)"
        ) from None


class KeyVault:
    """The configured keys, read on first use and again when a value names an unknown key
    (so a key added to the file is picked up without a restart)."""

    def __init__(self, read: Callable[[], str | None], *, where: str, create: Path | None) -> None:
        self._read = read
        self.where = where
        """The config key and source, for errors: `sender_auth.key_file: var/dkim.key`."""
        self._create = create
        self._keys: list[VaultKey] | None = None

    @classmethod
    def from_settings(
        cls, settings: SenderAuthSettings, environ: Mapping[str, str] | None = None
    ) -> KeyVault:
        env = os.environ if environ is None else environ
        if settings.key_env:
            name = settings.key_env
            return cls(lambda: env.get(name), where=f"sender_auth.key_env: ${name}", create=None)
        path = settings.key_file
        return cls(
            lambda: _read_key_file(path),
            where=f"sender_auth.key_file: {path}",
            create=path if settings.create_key_file else None,
        )

    @property
    def current(self) -> VaultKey:
        return self._load(create=False)[0]

    def seal(self, plaintext: bytes, *, context: str) -> str:
        return seal(self._load(create=True)[0], plaintext, context=context)

    def open(self, value: str, *, context: str) -> bytes:
        keys = self._load(create=False)
        key_id = sealed_key_id(value)
        if key_id is not None and all(k.key_id != key_id for k in keys):
            keys = self._load(create=False, again=True)
        return open_sealed({k.key_id: k for k in keys}, value, context=context, where=self.where)

    def _load(self, *, create: bool, again: bool = False) -> list[VaultKey]:
        if self._keys is not None and not again:
            return self._keys
        try:
            text = self._read()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise KeyVaultError(f"{self.where}: cannot read: {reason or exc}") from None
        if text is None and create and self._create is not None:
            text = self._make_key_file(self._create)
        if text is None:
            missing = "not set" if self.where.startswith("sender_auth.key_env") else "not found"
            raise KeyVaultError(
                f"{self.where}: {missing} (DKIM keys are encrypted with it; a key is made by"
                " `openssl rand -base64 32`)"
            )
        self._keys = parse_keys(text, where=self.where)
        return self._keys

    def _make_key_file(self, path: Path) -> str:
        line = new_key_line()
        try:
            write_private(path, f"{line}\n".encode())
        except OSError as exc:
            raise KeyVaultError(f"{self.where}: cannot create: {exc.strerror or exc}") from None
        log.warning("dkim.key_file_created", path=str(path), hint="back it up, apart from Redis's")
        return line


def _read_key_file(path: Path) -> str | None:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("dkim.key_file_readable", path=str(path), mode=oct(stat.S_IMODE(info.st_mode)))
    return text
