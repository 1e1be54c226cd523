"""Password hashing with argon2id. Slow on purpose (~tens of ms): callers run it off the loop."""

from __future__ import annotations

import secrets

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
