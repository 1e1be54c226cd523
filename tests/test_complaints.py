"""Spam complaints: ARF reports and forwarded mail, traced back to the account only by the
topmost Received line of ours and the Message-ID stored with its trace; the rest is reviewed."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest

from relay.abuse.audit import AuditLog
from relay.abuse.complaints import Complaint, Trace, TraceStore, attribute, parse_complaint
from relay.abuse.review import ReviewStore
from relay.abuse.store import SuspensionStore
from relay.clock import SystemClock
from relay.errors import InvalidInput
from relay.submission.message import message_id_of, missing_headers
from tests.conftest import add_sender, redis_toml
from tests.test_cli import relay

QID_A, QID_B = "1a2b3c4d5e6f7a8b", "0c0c0c0c0c0c0c0c"
ORIGINAL = (
    b"Received: from laptop ([192.0.2.10])\r\n"
    b"\tby relay.test with ESMTPSA id 1a2b3c4d5e6f7a8b;\r\n"
    b"\tWed, 25 Nov 2026 17:30:20 GMT\r\n"
    b"From: promo@customer.example\r\nTo: victim@isp.example\r\nSubject: Cheap pills\r\n"
    b"Message-ID: <abc@customer.example>\r\n\r\nBuy now\r\n"
)
ISP_LINE = (
    b"Received: from out1.relay.test (out1.relay.test [127.0.0.2])\r\n"
    b"\tby mx.isp.example with ESMTPS id 77aa; Wed, 25 Nov 2026 17:30:21 GMT\r\n"
)


def arf(original: bytes, reporter: bytes = b"fbl@isp.example") -> bytes:
    return (
        b"From: " + reporter + b"\r\nTo: abuse@provider.example\r\nSubject: FW: Cheap pills\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="part"\r\n\r\n'
        b"--part\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        b"--part\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n"
        b"Original-Mail-From: <promo@customer.example>\r\nSource-IP: 127.0.0.3\r\n"
        b"Arrival-Date: Wed, 25 Nov 2026 17:31:00 +0000\r\n\r\n"
        b"--part\r\nContent-Type: message/rfc822\r\n\r\n" + original + b"\r\n--part--\r\n"
    )


ARF = arf(ORIGINAL)


def test_arf_report_is_parsed():
    complaint = parse_complaint(ARF, hostname="relay.test")
    assert complaint.feedback_type == "abuse" and complaint.reporter == "fbl@isp.example"
    assert complaint.fields["source-ip"] == "127.0.0.3"
    assert complaint.fields["user-agent"] == "ISP-FBL/1.0"
    assert (complaint.queue_id, complaint.message_id) == (QID_A, "<abc@customer.example>")
    assert complaint.problem == ""
    assert "Subject: Cheap pills" in complaint.original_headers


def test_forwarded_spam_is_a_complaint_too():
    complaint = parse_complaint(ISP_LINE + ORIGINAL, hostname="relay.test")
    assert complaint.feedback_type == "abuse" and complaint.queue_id == QID_A
    other = parse_complaint(ORIGINAL, hostname="elsewhere.example")
    assert other.queue_id == "" and "no Received line of elsewhere.example" in other.problem
    with pytest.raises(InvalidInput):
        parse_complaint(b"  ", hostname="relay.test")


def forged_below(qid: str) -> bytes:
    """A line the spammer wrote into the message they submitted: below ours."""
    return f"Received: from x ([10.0.0.1])\r\n\tby relay.test with ESMTPSA id {qid};\r\n".encode()


def test_only_the_topmost_line_of_ours_counts():
    spam = ORIGINAL.replace(b"From: promo", forged_below(QID_B) + b"From: promo", 1)
    complaint = parse_complaint(arf(ISP_LINE + spam), hostname="relay.test")
    assert complaint.queue_id == QID_A and complaint.problem == ""

    not_ours = ORIGINAL.replace(b"by relay.test", b"by relay.test.evil.example")
    lookalike = parse_complaint(
        not_ours.replace(b"From: promo", forged_below(QID_B) + b"From: promo"),
        hostname="relay.test",
    )
    assert lookalike.queue_id == QID_B, "a look-alike host is not ours; the next line is"

    no_id = ORIGINAL.replace(b"with ESMTPSA id 1a2b3c4d5e6f7a8b", b"with SMTP")
    topmost_bad = parse_complaint(
        arf(no_id.replace(b"From: promo", forged_below(QID_B) + b"From: promo")),
        hostname="relay.test",
    )
    assert topmost_bad.queue_id == "", "never a lower line when the topmost of ours has no id"
    assert "carries no queue id" in topmost_bad.problem

    commented = ORIGINAL.replace(
        b"Received: from laptop ([192.0.2.10])",
        b"Received: from laptop (by relay.test with ESMTPSA id 0c0c0c0c0c0c0c0c;)",
    )
    assert parse_complaint(commented, hostname="relay.test").queue_id == QID_A


def test_several_originals_are_not_attributed():
    doubled = ARF.replace(
        b"\r\n--part--\r\n",
        b"\r\n--part\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + forged_below(QID_B)
        + b"\r\n--part--\r\n",
    )
    complaint = parse_complaint(doubled, hostname="relay.test")
    assert complaint.problem == "2 original messages in the report"
    assert attribute(complaint, Trace("promo", "<abc@customer.example>")).account == ""


def test_attribution_needs_the_stored_message_id():
    complaint = parse_complaint(ARF, hostname="relay.test")
    assert attribute(complaint, Trace("promo", "<abc@customer.example>")).account == "promo"
    for trace, problem in (
        (None, "unknown"),
        (Trace("promo", ""), "traced without its Message-ID"),
        (Trace("promo", "<other@customer.example>"), "is not the one submitted"),
    ):
        verdict = attribute(complaint, trace)
        assert verdict.account == "" and problem in verdict.problem
    no_id = Complaint(feedback_type="abuse", reporter="", queue_id=QID_A)
    assert "no Message-ID" in attribute(no_id, Trace("promo", "<a@b>")).problem


def test_the_traced_message_id_is_the_stamped_one():
    body = b"From: a@b.example\r\nMessage-ID:\r\n <folded@b.example>\r\n\r\nhi\r\n"
    assert message_id_of(body) == "<folded@b.example>"
    head = b"Subject: x\r\n\r\n"
    added = missing_headers(head, hostname="relay.test", queue_id="abc", now=0)
    assert message_id_of(added + head) == "<abc@relay.test>"
    assert message_id_of(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") == ""


async def test_legacy_traces_read_as_traces_without_message_id(redis):
    await redis.set(f"trace:{QID_A}", "promo")
    assert await TraceStore(redis).find(QID_A) == Trace("promo", "")
    await TraceStore(redis).remember(QID_B, "promo", " <x@y>\r\n")
    assert await TraceStore(redis).find(QID_B) == Trace("promo", "<x@y>")
    assert await TraceStore(redis).find("ffff") is None


@pytest.fixture
def cfg(tmp_path: Path, redis_server) -> list[str]:
    """Config of the CLI: our hostname, the test Redis (flushed by the `redis` fixture)."""
    (tmp_path / "relay.toml").write_text(
        f'hostname = "relay.test"\n[redis]\n{redis_toml(redis_server)}\n'
    )
    return ["--config", "relay.toml"]


def complain(cfg, tmp_path, report: bytes, *login: str):
    (tmp_path / "report.eml").write_bytes(report)
    return relay(*cfg, "complaint", "add", *login, "--file", "report.eml", cwd=tmp_path)


async def test_complaint_finds_the_account_and_suspends(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    await TraceStore(redis).remember(QID_A, "promo", "<abc@customer.example>")
    result = complain(cfg, tmp_path, arf(ISP_LINE + ORIGINAL))
    assert result.returncode == 0, result.stderr
    assert "complaint recorded against promo" in result.stdout

    listed = json.loads(relay(*cfg, "suspension", "list", "--json", cwd=tmp_path).stdout)
    (s,) = listed
    assert (s["account"], s["kind"], s["offence"]) == ("promo", "abuse", 1)
    assert s["evidence"]["fields"]["source-ip"] == "127.0.0.3"
    assert s["evidence"]["message_id"] == "<abc@customer.example>"

    denied = relay(*cfg, "suspension", "deny", s["id"], "--reason", "x", cwd=tmp_path)
    assert denied.returncode == 1 and "only from offence 3" in denied.stderr
    passwd = relay(*cfg, "account", "passwd", "promo", cwd=tmp_path)
    assert passwd.returncode == 0 and f"suspension {s['id']} lifted" in passwd.stdout
    history = relay(*cfg, "account", "history", "promo", cwd=tmp_path).stdout
    assert "abuse" in history and "lifted" in history and "user:promo" in history
    audit = json.loads(relay(*cfg, "audit", "--account", "promo", "--json", cwd=tmp_path).stdout)
    assert [e["action"] for e in audit] == ["suspend", "lift"]


async def test_forged_report_naming_another_account_suspends_nobody(redis, cfg, tmp_path):
    """B's queue id is in a made-up report, but not B's Message-ID: reviewed, B keeps sending."""
    await add_sender(redis, "bee")
    await TraceStore(redis).remember(QID_B, "bee", "<real@bee.example>")
    forged = ORIGINAL.replace(QID_A.encode(), QID_B.encode())
    result = complain(cfg, tmp_path, arf(forged))
    assert result.returncode == 0, result.stderr
    assert "queued for review" in result.stdout and "is not the one submitted" in result.stdout
    assert await SuspensionStore(redis).of_account("bee") == []

    pending = json.loads(relay(*cfg, "complaint", "list", "--json", cwd=tmp_path).stdout)
    (review,) = pending
    assert review["traced_to"] == "bee" and review["status"] == "open"
    assert review["evidence"]["queue_id"] == QID_B

    dismissed = relay(
        *cfg, "complaint", "dismiss", review["id"], "--reason", "forged", cwd=tmp_path
    )
    assert dismissed.returncode == 0, dismissed.stderr
    again = relay(*cfg, "complaint", "assign", review["id"], "bee", "--reason", "x", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == f"relay: complaint {review['id']} is already dismissed"
    assert await ReviewStore(redis).listing(open_only=True) == []
    audit = await AuditLog(redis, SystemClock()).entries()
    assert [(e.action, e.subject, e.reason) for e in audit] == [
        ("complaint-review", review["id"], review["problem"]),
        ("complaint-dismiss", review["id"], "forged"),
    ]
    assert await SuspensionStore(redis).of_account("bee") == []


async def test_a_fake_received_line_in_the_spam_does_not_shield_the_spammer(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    await add_sender(redis, "bee")
    await TraceStore(redis).remember(QID_A, "promo", "<abc@customer.example>")
    await TraceStore(redis).remember(QID_B, "bee", "<real@bee.example>")
    spam = ORIGINAL.replace(b"From: promo", forged_below(QID_B) + b"From: promo", 1)
    result = complain(cfg, tmp_path, arf(ISP_LINE + spam))
    assert result.returncode == 0, result.stderr
    assert "complaint recorded against promo" in result.stdout
    assert await SuspensionStore(redis).of_account("bee") == []


async def test_unattributed_complaint_is_assigned_by_an_operator(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    await TraceStore(redis).remember(QID_A, "promo", "<other@customer.example>")
    queued = complain(cfg, tmp_path, ARF)
    assert "queued for review" in queued.stdout, queued.stderr
    assert await SuspensionStore(redis).of_account("promo") == []
    (pending,) = await ReviewStore(redis).listing(open_only=True)
    review = pending.as_dict()
    shown = relay(*cfg, "complaint", "show", review["id"], cwd=tmp_path)
    assert "is not the one submitted as 1a2b3c4d5e6f7a8b" in shown.stdout
    assert "traced to:  promo" in shown.stdout and "    Subject: Cheap pills" in shown.stdout

    missing = relay(
        *cfg, "complaint", "assign", review["id"], "nobody", "--reason", "x", cwd=tmp_path
    )
    assert missing.returncode == 1 and "no account 'nobody'" in missing.stderr
    assigned = relay(
        *cfg,
        "complaint",
        "assign",
        review["id"],
        "promo",
        "--reason",
        "same campaign",
        cwd=tmp_path,
    )
    assert assigned.returncode == 0, assigned.stderr
    assert f"complaint {review['id']} assigned to promo: suspension" in assigned.stdout
    (s,) = await SuspensionStore(redis).of_account("promo")
    assert s.evidence["review"] == review["id"]
    assert s.evidence["assigned_because"] == "same campaign"
    everything = await ReviewStore(redis).listing(open_only=False)
    assert [(r.status, r.account, r.suspension) for r in everything] == [
        ("assigned", "promo", s.id)
    ]
    audit = await AuditLog(redis, SystemClock()).entries()
    assert [e.action for e in audit] == ["complaint-review", "suspend", "complaint-assign"]


async def test_complaint_with_a_login_is_that_accounts(redis, cfg, tmp_path):
    await add_sender(redis, "promo")
    result = complain(cfg, tmp_path, arf(ORIGINAL.replace(QID_A.encode(), b"ffff")), "promo")
    assert result.returncode == 0, result.stderr
    assert "complaint recorded against promo" in result.stdout
    (s,) = await SuspensionStore(redis).of_account("promo")
    assert s.evidence["attributed"] == "operator"


async def test_a_delivered_message_is_attributed(
    redis, redis_server, server_cert, ca, dns, sink, cfg, tmp_path
):
    """The whole way: submitted, stamped, traced, delivered; the copy the mailbox provider
    got (its own Received line on top) comes back in an ARF report."""
    from tests.test_end_to_end import relay_settings, run_relay, submit

    received, port = sink
    await add_sender(redis)
    settings = relay_settings(redis_server.url, server_cert, dns, routes={"*": f"127.0.0.1:{port}"})
    task, stop = await run_relay(settings)
    try:
        queue_id = await submit(settings, ca, 0, ["bob@example.com"])
        (delivered,) = await received.wait_for(1, timeout=10)
    finally:
        stop.set()
        await task
    stamped = email.message_from_bytes(delivered.data, policy=email.policy.compat32)
    assert stamped["Message-ID"] == f"<{queue_id}@relay.test>"
    result = complain(cfg, tmp_path, arf(ISP_LINE + delivered.data))
    assert result.returncode == 0, result.stderr
    assert "complaint recorded against alice" in result.stdout
    (s,) = await SuspensionStore(redis).of_account("alice")
    assert (s.evidence["queue_id"], s.evidence["attributed"]) == (queue_id, "trace")


def test_nesting_is_bounded_before_the_parser_recurses():
    def nested(depth: int, part: bytes) -> bytes:
        inner = ORIGINAL
        for _ in range(depth):
            inner = part + inner
        return inner

    rfc822 = b"Content-Type: message/rfc822\r\n\r\n"
    deep = parse_complaint(nested(100, rfc822), hostname="relay.test")  # read, not attributed
    assert "no Received line" in deep.problem, "only the outermost original is unwrapped"
    folded = b"Content-type:\r\n\tmessage/rfc822\r\n\r\n"
    multipart = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    for part in (rfc822, folded, multipart):
        with pytest.raises(InvalidInput, match="more than 100 multipart or message parts"):
            parse_complaint(nested(3000, part), hostname="relay.test")
