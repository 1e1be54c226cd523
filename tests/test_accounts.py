import asyncio

import pytest

from relay.accounts import AccountStore
from relay.accounts.hashing import HashAdmission, HashingQueue
from relay.errors import InvalidInput, NotFound


@pytest.fixture
def accounts(redis, clock):
    return AccountStore(redis, clock)


async def test_add_then_authenticate(accounts):
    await accounts.add("alice", "correct horse", email="alice@example.com")
    account = await accounts.authenticate("alice", "correct horse")
    assert account is not None and account.email == "alice@example.com"
    assert await accounts.authenticate("alice", "wrong password") is None
    assert await accounts.authenticate("nobody", "correct horse") is None


async def test_password_is_not_stored_in_clear(accounts, redis):
    await accounts.add("bob", "s3cret-pass")
    stored = await redis.hget("acct:{bob}", "password")
    assert b"s3cret-pass" not in stored and stored.startswith(b"$argon2id$")


async def test_duplicate_and_invalid_input_change_nothing(accounts):
    await accounts.add("carol", "password1")
    with pytest.raises(InvalidInput, match="already exists"):
        await accounts.add("carol", "password2")
    assert await accounts.authenticate("carol", "password1") is not None
    with pytest.raises(InvalidInput, match="invalid login"):
        await accounts.add("bad login{x}", "password1")
    with pytest.raises(InvalidInput, match="too short"):
        await accounts.add("dave", "short")
    with pytest.raises(InvalidInput, match="contact email"):
        await accounts.add("erin", "password1", email="not-an-email")
    assert [a.login for a in await accounts.list()] == ["carol"]


async def test_passwd_and_remove(accounts):
    await accounts.add("frank", "password1")
    await accounts.set_password("frank", "password2")
    assert await accounts.authenticate("frank", "password1") is None
    assert await accounts.authenticate("frank", "password2") is not None
    await accounts.remove("frank")
    assert await accounts.get("frank") is None
    with pytest.raises(NotFound):
        await accounts.remove("frank")
    with pytest.raises(NotFound):
        await accounts.set_password("frank", "password3")


class CountingQueue(HashingQueue):
    def __init__(self) -> None:
        super().__init__(HashAdmission(threads=1))
        self.checked: list[str] = []

    async def verify(self, password_hash, password, *, known):
        self.checked.append(password)
        return await super().verify(password_hash, password, known=known)


async def test_a_repeated_login_skips_the_hash_but_never_a_wrong_or_changed_password(redis, clock):
    hashing = CountingQueue()
    accounts = AccountStore(redis, clock, hashing=hashing)
    await accounts.add("gina", "password-one")
    assert await accounts.authenticate("gina", "password-one") is not None
    assert hashing.checked == ["password-one"]
    assert await accounts.authenticate("gina", "password-one") is not None, "from the cache"
    assert hashing.checked == ["password-one"]
    assert await accounts.authenticate("gina", "wrong password") is None
    assert hashing.checked[1:] == ["wrong password"], "a wrong password is always checked in full"
    await accounts.set_password("gina", "password-two")
    assert await accounts.authenticate("gina", "password-one") is None, "changed: cache missed"
    assert await accounts.authenticate("gina", "password-two") is not None


async def test_the_same_password_checked_at_once_is_hashed_once(redis, clock):
    hashing = CountingQueue()
    accounts = AccountStore(redis, clock, hashing=hashing)
    await accounts.add("hana", "password-one")
    checks = [accounts.authenticate("hana", "password-one") for _ in range(10)]
    checks += [accounts.authenticate("hana", "wrong password") for _ in range(10)]
    results = await asyncio.gather(*checks)
    assert [r is not None for r in results] == [True] * 10 + [False] * 10
    assert sorted(hashing.checked) == ["password-one", "wrong password"]
