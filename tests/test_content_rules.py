"""The pure rules of relay.content: verdicts, list precedence, clamd replies, digests."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relay.config import Settings, _describe
from relay.content.clamd import ClamdAddress, parse_reply
from relay.content.desk import digest_lines
from relay.content.errors import ScannerUnavailable
from relay.content.lists import ListAction, ListEntry, ListKind, decide, keys_for, normalize
from relay.content.quarantine import Held, Quarantined, subject_of
from relay.content.rspamd import SpamCheck, parse_response
from relay.content.verdict import (
    Action,
    MalwareResult,
    OnError,
    ScanPolicy,
    SpamResult,
    suspend_due,
)
from relay.content.verdict import (
    decide as verdict,
)
from relay.errors import InvalidInput
from relay.spool.check import compare

POLICY = ScanPolicy(quarantine_at=6.0, reject_at=15.0)
CLEAN, FOUND = MalwareResult(), MalwareResult(signature="Win.Test.EICAR_HDB-1")
CLAMD_DOWN, RSPAMD_DOWN = MalwareResult(error="refused"), SpamResult(error="timeout")


@pytest.mark.parametrize(
    "malware,spam,allowed,policy,expected",
    [
        (None, None, False, POLICY, Action.DELIVER),
        (CLEAN, SpamResult(score=1.0), False, POLICY, Action.DELIVER),
        (FOUND, SpamResult(score=-5.0), True, POLICY, Action.REJECT_MALWARE),
        (FOUND, RSPAMD_DOWN, True, POLICY, Action.REJECT_MALWARE),
        (CLEAN, SpamResult(score=15.0), False, POLICY, Action.REJECT_SPAM),
        (CLEAN, SpamResult(score=99.0), True, POLICY, Action.REJECT_SPAM),
        (CLEAN, SpamResult(score=6.0), False, POLICY, Action.QUARANTINE_SPAM),
        (None, SpamResult(score=14.9), False, POLICY, Action.QUARANTINE_SPAM),
        (CLEAN, SpamResult(score=6.0), True, POLICY, Action.DELIVER),
        (CLAMD_DOWN, SpamResult(score=0.0), False, POLICY, Action.TEMPFAIL),
        (
            CLAMD_DOWN,
            SpamResult(score=7.0),
            False,
            ScanPolicy(malware_on_error=OnError.FAIL_OPEN),
            Action.QUARANTINE_SPAM,
        ),
        (CLEAN, RSPAMD_DOWN, False, POLICY, Action.DELIVER),
        (CLEAN, RSPAMD_DOWN, False, ScanPolicy(spam_on_error=OnError.TEMPFAIL), Action.TEMPFAIL),
        (None, RSPAMD_DOWN, True, ScanPolicy(spam_on_error=OnError.TEMPFAIL), Action.TEMPFAIL),
    ],
)
def test_verdicts(malware, spam, allowed, policy, expected):
    assert verdict(malware=malware, spam=spam, policy=policy, allowed=allowed).action is expected


def test_allow_listed_delivery_is_marked_and_malware_names_its_signature():
    allowed = verdict(malware=CLEAN, spam=SpamResult(score=8.0), policy=POLICY, allowed=True)
    assert allowed.allow_listed and allowed.score == 8.0
    assert verdict(malware=FOUND, spam=None, policy=POLICY).signature == "Win.Test.EICAR_HDB-1"


@pytest.mark.parametrize("hits,after,due", [(1, 3, False), (3, 3, True), (9, 0, False)])
def test_suspension_count(hits, after, due):
    assert suspend_due(hits, after) is due


def entry(account: str, kind: ListKind, action: ListAction) -> ListEntry:
    return ListEntry(account, kind, "x", action, reason=f"{account or 'global'} {action.value}")


def test_account_entries_override_global_and_deny_wins_within_a_scope():
    g_deny = entry("", ListKind.DOMAIN, ListAction.DENY)
    g_allow = entry("", ListKind.RECIPIENT, ListAction.ALLOW)
    a_allow = entry("alice", ListKind.RECIPIENT, ListAction.ALLOW)
    a_deny = entry("alice", ListKind.DOMAIN, ListAction.DENY)
    assert decide([g_deny], [a_allow]) is a_allow, "the account's exception wins"
    assert decide([g_allow], [a_deny]) is a_deny
    assert decide([g_allow, g_deny], []) is g_deny, "deny first within a scope"
    assert decide([g_allow], [a_allow, a_deny]) is a_deny
    assert decide([], []) is None


def test_list_values():
    assert normalize(ListKind.RECIPIENT, " <Bob@Example.COM> ") == "bob@example.com"
    assert normalize(ListKind.DOMAIN, "@Example.com.") == "example.com"
    for kind, bad in [
        (ListKind.DOMAIN, "a@b.c"),
        (ListKind.SENDER, "nobody"),
        (ListKind.RECIPIENT, "@x"),
    ]:
        with pytest.raises(InvalidInput):
            normalize(kind, bad)
    assert keys_for(ListKind.RECIPIENT, "Bob@Example.com") == [
        "recipient:bob@example.com",
        "domain:example.com",
    ]
    assert keys_for(ListKind.SENDER, "a@b.c") == ["sender:a@b.c"]


def test_rspamd_answers():
    body = b'{"score": 7.5, "action": "add header", "symbols": {"B": {}, "A": {}}}'
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert parse_response(plain) == SpamCheck(7.5, "add header", ("A", "B"))
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % 10
        + body[:10]
        + b"\r\n"
        + b"%x\r\n" % (len(body) - 10)
        + body[10:]
        + b"\r\n0\r\n\r\n"
    )
    assert parse_response(chunked).score == 7.5
    for bad, why in [
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\n{}", "HTTP 500"),
        (b"HTTP/1.1 200 OK\r\n\r\nnot json", "unreadable"),
        (b"SSH-2.0-OpenSSH\r\n", "incomplete"),
        (b"", "incomplete"),
    ]:
        with pytest.raises(ScannerUnavailable, match=why):
            parse_response(bad)


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("stream: OK", None),
        ("stream: Test.EICAR.NDB.UNOFFICIAL FOUND", "Test.EICAR.NDB"),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1"),
    ],
)
def test_clamd_replies(reply, expected):
    assert parse_reply(reply) == expected


@pytest.mark.parametrize("reply", ["INSTREAM size limit exceeded. ERROR", "stream: garbage"])
def test_clamd_error_replies_are_no_verdict(reply):
    with pytest.raises(ScannerUnavailable):
        parse_reply(reply)


def test_clamd_addresses():
    assert ClamdAddress.parse("unix:/run/clamav/clamd.ctl").path == "/run/clamav/clamd.ctl"
    assert ClamdAddress.parse("/tmp/c.sock").path == "/tmp/c.sock"
    tcp = ClamdAddress.parse("127.0.0.1:3310")
    assert (tcp.host, tcp.port, str(tcp)) == ("127.0.0.1", 3310, "127.0.0.1:3310")
    with pytest.raises(ValueError):
        ClamdAddress.parse("clamd")


@pytest.mark.parametrize(
    "content,problem",
    [
        ({"clamd": {"address": "nowhere"}}, "content.clamd.address"),
        ({"rspamd": {"url": "127.0.0.1:11333"}}, "content.rspamd.url"),
        ({"spam_quarantine": 10, "spam_reject": 5}, "content.spam_reject"),
        ({"clamd": {"address": "unix:/x", "on_error": "maybe"}}, "content.clamd.on_error"),
    ],
)
def test_content_config_errors_name_the_key(content, problem):
    with pytest.raises(ValidationError) as caught:
        Settings(content=content)
    assert problem in _describe(caught.value)


def test_subject_unfolded_and_cleaned():
    head = b"From: a@b\r\nSubject: hello\r\n world\x1b[31m\r\nTo: c@d\r\n\r\n"
    assert subject_of(head) == "hello world", "folded lines joined, escapes dropped"
    assert subject_of(b"From: a@b\r\n\r\n") == ""


def test_quarantined_bodies_are_not_orphans():
    files = [("aa01", 0.0, 10), ("bb02", 0.0, 20), ("cc03", 0.0, 30)]
    report = compare(files, {"aa01"}, now=10_000.0, grace=3600.0, kept={"bb02"})
    assert [o[0] for o in report.orphans] == ["cc03"]
    assert compare(files, {"aa01"}, now=10_000.0, grace=3600.0).orphans[0][0] == "bb02"


def held(qid: str, kind: Held, subject: str, recipients: tuple[str, ...]) -> Quarantined:
    return Quarantined(
        id=qid,
        kind=kind,
        account="alice",
        mail_from="alice@example.org",
        recipients=recipients,
        reason="score 8.00" if kind is Held.SPAM else "Test.EICAR.NDB",
        subject=subject,
        size=1234,
        created_at=1_800_000_000.0,
        expires_at=1_800_000_000.0 + 30 * 86400,
        node="n",
    )


def test_digest_lists_every_message_with_what_can_be_done():
    lines = digest_lines(
        "alice",
        [
            held("q1", Held.SPAM, "Big offer", ("bob@example.com",)),
            held("q2", Held.MALWARE, "Invoice", tuple(f"r{i}@x.test" for i in range(5))),
        ],
        "support@provider.test",
    )
    text = "\n".join(lines)
    assert "1 suspected spam, 1 with malware" in text
    assert "q1" in text and "Big offer" in text and "bob@example.com" in text
    assert "q2" in text and "Invoice" in text and "(+2)" in text and "Test.EICAR.NDB" in text
    assert "kept one year" in text and "change your password" in text
    assert "delivered or deleted from your page" in text and "Mail held by the content scan" in text
    assert lines[-1] == "Support: support@provider.test"
