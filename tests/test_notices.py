"""Which notice an attempt calls for, and the RFC 3464 message itself: pure, no servers."""

from __future__ import annotations

import email
import email.message
import email.policy

import pytest

from relay.delivery.attempt import AttemptPlan
from relay.delivery.outcome import Disposition, RecipientOutcome
from relay.notices import NoticeMessage, RecipientReport, compose, original_headers, plan_notice
from relay.queue import DsnRequest, RecipientDsn

T0 = 1_800_000_000.0
ORIGINAL = (
    b"Received: from x\r\n\tby y; date\r\nFrom: alice@sender.test\r\nSubject: hi\r\n"
    b"Message-ID: <m1@sender.test>\r\n\r\nBody line.\r\n"
)


def outcome(rcpt: str, disposition: Disposition, reply: str = "") -> RecipientOutcome:
    code, status, text = {
        Disposition.DELIVERED: (250, "2.0.0", "OK"),
        Disposition.TRANSIENT: (451, "4.3.0", "later"),
        Disposition.PERMANENT: (550, "5.1.1", "no such user"),
    }[disposition]
    return RecipientOutcome(rcpt, disposition, code, status, reply or text, "mx.dest", None, True)


def plan(delivered=(), failed=(), expired=(), deferred=(), delay_notice=False) -> AttemptPlan:
    return AttemptPlan(
        delivered=tuple(outcome(r, Disposition.DELIVERED) for r in delivered),
        failed=tuple(outcome(r, Disposition.PERMANENT) for r in failed),
        expired=tuple(outcome(r, Disposition.TRANSIENT) for r in expired),
        deferred=tuple(outcome(r, Disposition.TRANSIENT) for r in deferred),
        retry_at=T0 + 900 if deferred else None,
        delay_notice=delay_notice,
    )


NO_DSN = DsnRequest()


def decide(p: AttemptPlan, dsn: DsnRequest = NO_DSN, sender: str = "a@sender.test"):
    return plan_notice(p, mail_from=sender, dsn=dsn, now=T0, expires_at=T0 + 86400)


def dsn_for(**notify: frozenset[str] | None) -> DsnRequest:
    return DsnRequest(
        recipients=tuple((f"{name}@dest", RecipientDsn(value)) for name, value in notify.items())
    )


@pytest.mark.parametrize("sender", ["", "<>"])
def test_never_a_notice_for_the_null_sender(sender: str) -> None:
    assert decide(plan(failed=["x@dest"]), sender=sender) is None


def test_failures_and_delays_by_default_not_successes() -> None:
    assert decide(plan(delivered=["ok@dest"])) is None
    assert decide(plan(deferred=["d@dest"])) is None, "before the delay threshold"
    failure = decide(plan(failed=["f@dest"], deferred=["d@dest"], delay_notice=True))
    assert failure is not None
    assert [(r.recipient, r.action) for r in failure.reports] == [
        ("f@dest", "failed"),
        ("d@dest", "delayed"),
    ]
    assert (failure.kind, failure.delay) == ("failure", "with-delay")
    delay = decide(plan(deferred=["d@dest"], delay_notice=True))
    assert delay is not None and (delay.kind, delay.delay) == ("delay", "delay")
    assert delay.reports[0].will_retry_until == T0 + 86400


def test_notify_never_success_and_delay_only() -> None:
    p = plan(delivered=["s@dest"], failed=["n@dest", "d@dest"], deferred=["x@dest"])
    dsn = dsn_for(s=frozenset({"SUCCESS"}), n=frozenset(), d=frozenset({"DELAY"}))
    decided = decide(p, dsn)
    assert decided is not None
    assert [(r.recipient, r.action) for r in decided.reports] == [("s@dest", "relayed")]
    assert (decided.kind, decided.delay) == ("success", "plain")
    assert decide(plan(failed=["n@dest"]), dsn_for(n=frozenset())) is None


def test_expired_recipients_fail_with_4_4_7_quoting_the_last_reply() -> None:
    decided = decide(plan(expired=["e@dest"]))
    assert decided is not None
    [report] = decided.reports
    assert (report.action, report.status, report.smtp_reply) == ("failed", "4.4.7", False)
    assert report.diagnostic == "delivery time expired; last error: 451 4.3.0 later"


def test_orcpt_goes_into_the_report() -> None:
    dsn = DsnRequest(recipients=(("f@dest", RecipientDsn(None, "rfc822;F@Dest")),))
    decided = decide(plan(failed=["f@dest"]), dsn)
    assert decided is not None and decided.reports[0].orcpt == "rfc822;F@Dest"


def test_dsn_request_round_trips_through_json() -> None:
    assert DsnRequest().to_json() == ""
    assert DsnRequest.from_json("") == DsnRequest()
    request = DsnRequest(
        ret="HDRS",
        envid="e+2Bx",
        recipients=(
            ("a@x", RecipientDsn(frozenset({"DELAY", "FAILURE"}), "rfc822;a@x")),
            ("b@x", RecipientDsn(frozenset())),
        ),
    )
    assert DsnRequest.from_json(request.to_json()) == request
    assert request.of("b@x").wants("FAILURE") is False
    assert request.of("c@x").wants("DELAY") and not request.of("c@x").wants("SUCCESS")


def notice(reports, **kwargs) -> bytes:
    values = dict(
        notice_id="n1",
        hostname="relay.test",
        sender="alice@sender.test",
        queue_id="q1",
        arrival=T0,
        now=T0 + 60,
        original=ORIGINAL,
        reports=tuple(reports),
    )
    values.update(kwargs)
    return compose(NoticeMessage(**values))


def parse(raw: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


FAILED = RecipientReport(
    recipient="bob@dest.test",
    action="failed",
    status="5.1.1",
    diagnostic="550 5.1.1 no such user",
    remote_mta="mx.dest.test",
    orcpt="rfc822;Bob@dest.test",
    last_attempt=T0 + 60,
)


def test_failure_notice_is_a_well_formed_multipart_report() -> None:
    raw = notice([FAILED], envid="env-1")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    message = parse(raw)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@relay.test>"
    assert b"\r\nTo: <alice@sender.test>\r\n" in raw
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Message-ID"] == "<n1@relay.test>"
    assert message["In-Reply-To"] == "<m1@sender.test>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    text, status, headers = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "<bob@dest.test>: (said mx.dest.test)" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = [dict(block.items()) for block in status.get_payload()]
    assert per_message == {
        "Reporting-MTA": "dns; relay.test",
        "X-Relay-Queue-ID": "q1",
        "Original-Envelope-Id": "env-1",
        "Arrival-Date": email.utils.formatdate(T0, usegmt=True),
    }
    assert per_rcpt == {
        "Final-Recipient": "rfc822; bob@dest.test",
        "Original-Recipient": "rfc822; Bob@dest.test",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.dest.test",
        "Diagnostic-Code": "smtp; 550 5.1.1 no such user",
        "Last-Attempt-Date": email.utils.formatdate(T0 + 60, usegmt=True),
    }
    assert headers.get_content_type() == "text/rfc822-headers"
    assert headers.get_content().startswith("Received: from x\r\n\tby y; date")
    assert "Body line." not in raw.decode()


def test_ret_full_returns_the_whole_message_on_failure_only() -> None:
    full = parse(notice([FAILED], return_full=True))
    returned = list(full.iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    assert b"Body line." in returned.as_bytes()
    delayed = RecipientReport("bob@dest.test", "delayed", "4.3.0", "451 4.3.0 later", "mx")
    assert b"Body line." not in notice([delayed], return_full=True), "RET is for failures"


def test_utf8_addresses_use_the_global_types() -> None:
    utf8 = RecipientReport("jörg@dest.test", "failed", "5.1.1", "550 5.1.1 unknown", "mx")
    raw = notice([utf8], original="Subject: grüße\r\n\r\nx\r\n".encode())
    message = parse(raw)
    _, status, headers = message.iter_parts()
    assert status.get_content_type() == "message/global-delivery-status"
    assert "Final-Recipient: utf-8; jörg@dest.test" in raw.decode()
    assert headers.get_content_type() == "message/global-headers"


def test_values_from_remote_servers_cannot_inject_lines() -> None:
    evil = RecipientReport(
        "bob@dest.test", "failed", "5.0.0", "550 oops\r\nX-Injected: yes", "mx\r\nX-Evil: 1"
    )
    raw = notice([evil], envid="e\r\nBcc: x")
    assert b"\r\nX-Injected" not in raw and b"\r\nX-Evil" not in raw and b"\r\nBcc" not in raw


def test_subjects_follow_the_main_action() -> None:
    delayed = RecipientReport("a@d", "delayed", "4.3.0", "451 later", "mx")
    relayed = RecipientReport("b@d", "relayed", "2.0.0", "250 ok", "mx")
    assert parse(notice([delayed]))["Subject"] == "Delayed Mail (still being retried)"
    assert parse(notice([relayed]))["Subject"] == "Successful Mail Delivery Report"
    assert parse(notice([relayed, delayed, FAILED]))["Subject"].startswith("Undelivered")
    with pytest.raises(ValueError):
        notice([])


def test_original_headers_stop_at_the_blank_line_and_use_crlf() -> None:
    assert original_headers(b"A: 1\nB: 2\n\nbody\n") == b"A: 1\r\nB: 2\r\n"
    assert original_headers(b"A: 1\r\n") == b"A: 1\r\n"
