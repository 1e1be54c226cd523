"""SMTP credentials: logins with argon2id password hashes, stored in Redis."""

from relay.accounts.store import Account, AccountStore

__all__ = ["Account", "AccountStore"]
