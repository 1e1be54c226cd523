"""Password hashing with argon2id. Slow on purpose (~20 ms of CPU): it runs on a few threads
behind a bounded queue (relay/accounts/hashing.py), and a session that logs in again with
the same password is not hashed again (`VerifiedCache`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id floor: 19 MiB, 2 iterations, 1 lane.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Verified against when the login is unknown, so that both cases take the same time.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)


class VerifiedCache:
    """Logins verified in the last `ttl` seconds (as Dovecot's auth cache): web applications
    connect for every message with the same credentials. An entry is a keyed HMAC of the
    password (the key never leaves this process) tied to the stored hash, so a password
    change misses at once; failures are never cached."""

    def __init__(self, ttl: float = 300.0, size: int = 10_000) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, tuple[str, float, bytes]] = OrderedDict()
        """login → (the stored hash it was verified against, expiry, HMAC of the password)"""

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def hit(self, login: str, password_hash: str, password: str) -> bool:
        entry = self._entries.get(login)
        return entry is not None and entry[0] == password_hash and self._matches(entry, password)

    def may_hit(self, login: str, password: str) -> bool:
        """Whether `hit` can be true whatever the stored hash turns out to be: when not, a
        check that must wait for hashing can be refused before anything is read."""
        entry = self._entries.get(login)
        return entry is not None and self._matches(entry, password)

    def _matches(self, entry: tuple[str, float, bytes], password: str) -> bool:
        return entry[1] >= time.monotonic() and hmac.compare_digest(entry[2], self._mac(password))

    def remember(self, login: str, password_hash: str, password: str) -> None:
        self._entries[login] = (password_hash, time.monotonic() + self._ttl, self._mac(password))
        self._entries.move_to_end(login)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
