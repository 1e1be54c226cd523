import pytest

from relay.address import domain_of, domain_text, is_mailbox, is_null_sender, local_part
from relay.notices import plan_notice
from relay.outcomes import AttemptPlan, Disposition, RecipientOutcome
from relay.queue import DsnRequest
from relay.queue.model import split_by_domain


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


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("Bob@EXAMPLE.com.", "example.com"),
        ("bob@example.com", "example.com"),
        ("user@bücher.de", "xn--bcher-kva.de"),
        ("user@BÜCHER.de.", "xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("a@[192.0.2.1]", "[192.0.2.1]"),
        ("not-an-address", ""),
        ("<>", ""),
        ("", ""),
    ],
)
def test_every_part_of_the_relay_sees_one_domain(address: str, domain: str) -> None:
    assert domain_of(address) == domain


def test_a_message_to_one_domain_written_three_ways_is_one_job() -> None:
    groups = split_by_domain(("Bob@EXAMPLE.com.", "carol@example.com", "dan@Example.Com"))
    assert groups == {"example.com": ("Bob@EXAMPLE.com.", "carol@example.com", "dan@Example.Com")}
    assert split_by_domain(("zoë@bücher.de",)) == {"xn--bcher-kva.de": ("zoë@bücher.de",)}


def test_the_client_reads_its_domain_as_written() -> None:
    assert domain_text("user@Bücher.de") == "Bücher.de"
    assert local_part("Bob@EXAMPLE.com.") == "Bob"


@pytest.mark.parametrize("sender", ["", "<>", " <> "])
def test_the_null_sender_in_each_form_has_no_domain_and_gets_no_notice(sender: str) -> None:
    assert is_null_sender(sender) and domain_of(sender) == ""
    plan = AttemptPlan(
        delivered=(),
        failed=(
            RecipientOutcome(
                "x@dest", Disposition.PERMANENT, 550, "5.1.1", "no", None, None, False
            ),
        ),
        expired=(),
        deferred=(),
        retry_at=None,
        delay_notice=False,
    )
    assert plan_notice(plan, mail_from=sender, dsn=DsnRequest(), now=0.0, expires_at=1.0) is None


@pytest.mark.parametrize("address", ["a@b.example", "<a@b.example>", "postmaster"])
def test_other_senders_are_not_null(address: str) -> None:
    assert not is_null_sender(address)
