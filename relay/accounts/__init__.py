"""SMTP credentials: logins with argon2id password hashes, stored in Redis."""

from relay.accounts.store import Account, AccountStore, unknown_login

__all__ = ["Account", "AccountStore", "unknown_login"]
