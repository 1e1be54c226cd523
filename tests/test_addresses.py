import pytest

from relay.submission.addresses import is_mailbox


@pytest.mark.parametrize(
    "address",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        '"quoted local"@example.com',
        "user@[192.0.2.1]",
        "pré@exemple.fr",
        "x@localhost",
    ],
)
def test_mailboxes(address):
    assert is_mailbox(address)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "postmaster",
        "@example.com",
        "a@",
        "a b@example.com",
        "a@exa mple.com",
        "a@@example.com",
        "<a@example.com>",
        "a@example..com",
        "a@" + "x" * 320,
    ],
)
def test_not_mailboxes(address):
    assert not is_mailbox(address)
