"""Creating and removing a credential touches the account and its quota: one place for both."""

from __future__ import annotations

import secrets

from quota import Plan, QuotaStore
from relay.accounts.store import Account, AccountStore

__all__ = ["create_account", "new_plan_id", "remove_account"]


def new_plan_id() -> str:
    return secrets.token_hex(4)


async def create_account(
    accounts: AccountStore,
    quota: QuotaStore,
    *,
    login: str,
    password: str,
    email: str = "",
    daily: int = 0,
) -> tuple[Account, Plan | None]:
    """The account, and its first plan when `daily` > 0 (without a plan it cannot send)."""
    plan = Plan(new_plan_id(), daily=daily) if daily > 0 else None  # validates before writing
    account = await accounts.add(login, password, email)
    if plan is not None:
        await quota.add_plan(login, plan)
    return account, plan


async def remove_account(accounts: AccountStore, quota: QuotaStore, login: str) -> None:
    await accounts.remove(login)
    await quota.forget(login)
