"""Spam complaints: ARF reports and forwarded mail, traced back to the account."""

from __future__ import annotations

import json

import pytest

from relay.abuse.complaints import TraceStore, parse_complaint
from relay.embedded_redis import EmbeddedRedis
from relay.errors import InvalidInput
from relay.redis_client import connect
from tests.test_cli import relay

ORIGINAL = (
    b"Received: from laptop ([192.0.2.10])\r\n"
    b"\tby relay.test with ESMTPSA id 1a2b3c4d5e6f7a8b;\r\n"
    b"\tWed, 25 Nov 2026 17:30:20 GMT\r\n"
    b"From: promo@customer.example\r\nTo: victim@isp.example\r\nSubject: Cheap pills\r\n"
    b"Message-ID: <abc@customer.example>\r\n\r\nBuy now\r\n"
)
ARF = (
    b"From: fbl@isp.example\r\nTo: abuse@provider.example\r\nSubject: FW: Cheap pills\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="part"\r\n\r\n'
    b"--part\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
    b"--part\r\nContent-Type: message/feedback-report\r\n\r\n"
    b"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n"
    b"Original-Mail-From: <promo@customer.example>\r\nSource-IP: 127.0.0.3\r\n"
    b"Arrival-Date: Wed, 25 Nov 2026 17:31:00 +0000\r\n\r\n"
    b"--part\r\nContent-Type: message/rfc822\r\n\r\n" + ORIGINAL + b"\r\n--part--\r\n"
)


def test_arf_report_is_parsed():
    complaint = parse_complaint(ARF, hostname="relay.test")
    assert complaint.feedback_type == "abuse" and complaint.reporter == "fbl@isp.example"
    assert complaint.fields["source-ip"] == "127.0.0.3"
    assert complaint.fields["user-agent"] == "ISP-FBL/1.0"
    assert complaint.queue_ids == ("1a2b3c4d5e6f7a8b",)
    assert "Subject: Cheap pills" in complaint.original_headers


def test_forwarded_spam_is_a_complaint_too():
    complaint = parse_complaint(ORIGINAL, hostname="relay.test")
    assert complaint.feedback_type == "abuse" and complaint.queue_ids == ("1a2b3c4d5e6f7a8b",)
    other = parse_complaint(ORIGINAL, hostname="elsewhere.example")
    assert other.queue_ids == (), "only our own Received lines count"
    with pytest.raises(InvalidInput):
        parse_complaint(b"  ", hostname="relay.test")


async def test_complaint_command_finds_the_account_and_suspends(tmp_path):
    (tmp_path / "relay.toml").write_text(
        'hostname = "relay.test"\n[redis]\nembedded_dir = "var/redis"\n'
    )
    server = EmbeddedRedis(tmp_path / "var" / "redis")
    server.start()  # the commands share a running embedded Redis
    try:
        cfg = ["--config", "relay.toml"]
        assert relay(*cfg, "account", "add", "promo", cwd=tmp_path).returncode == 0
        client = connect(server.url, timeout=5)
        await TraceStore(client).remember("1a2b3c4d5e6f7a8b", "promo")
        await client.aclose()
        (tmp_path / "report.eml").write_bytes(ARF)
        result = relay(*cfg, "complaint", "add", "--file", "report.eml", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "complaint recorded against promo" in result.stdout

        listed = json.loads(relay(*cfg, "suspension", "list", "--json", cwd=tmp_path).stdout)
        (s,) = listed
        assert (s["account"], s["kind"], s["offence"]) == ("promo", "abuse", 1)
        assert s["evidence"]["fields"]["source-ip"] == "127.0.0.3"

        (tmp_path / "unknown.eml").write_bytes(ORIGINAL.replace(b"1a2b3c4d5e6f7a8b", b"ffff"))
        unknown = relay(*cfg, "complaint", "add", "--file", "unknown.eml", cwd=tmp_path)
        assert unknown.returncode == 1 and "give the LOGIN" in unknown.stderr

        denied = relay(*cfg, "suspension", "deny", s["id"], "--reason", "x", cwd=tmp_path)
        assert denied.returncode == 1 and "only from offence 3" in denied.stderr
        passwd = relay(*cfg, "account", "passwd", "promo", cwd=tmp_path)
        assert passwd.returncode == 0 and f"suspension {s['id']} lifted" in passwd.stdout
        history = relay(*cfg, "account", "history", "promo", cwd=tmp_path).stdout
        assert "abuse" in history and "lifted" in history and "user:promo" in history
        audit = json.loads(
            relay(*cfg, "audit", "--account", "promo", "--json", cwd=tmp_path).stdout
        )
        assert [e["action"] for e in audit] == ["suspend", "lift"]
    finally:
        server.stop()
