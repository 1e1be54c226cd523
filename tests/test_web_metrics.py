"""/metrics of `relay run --processes 2`, scraped with prometheus_client's own parser after a
small load: one registry over both processes, counts matching what the sink received."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD, add_sender, free_port
from tests.support.relay_process import start_relay, stop_relay, write_config

pytestmark = pytest.mark.timeout(120)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(values: dict, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in values.items() if n == name and labels.items() <= dict(ls).items()
    )


async def test_metrics_and_reports_count_what_the_sink_received(
    redis_server, redis, server_cert, sink, ca, tmp_path: Path
) -> None:
    the_sink, sink_port = sink
    smtp_port, http_port = free_port(), free_port()
    config = tmp_path / "relay.toml"
    write_config(
        config,
        redis_url=redis_server.url,
        server_cert=server_cert,
        submit_port=smtp_port,
        sink_port=sink_port,
        egress=("127.0.0.2", "127.0.0.3"),
        http_port=http_port,
    )
    with config.open("a") as extra:
        extra.write(f'metrics_dir = "{tmp_path / "metrics"}"\n')
    await add_sender(redis, "alice", daily=6)
    token = await _operator_token(redis)
    process = await start_relay(config, smtp_port, processes=2)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        accepted = refused = 0
        for n in range(8):  # separate sessions: the kernel spreads them over both processes
            async with aiosmtplib.SMTP(
                hostname="127.0.0.1", port=smtp_port, use_tls=True, tls_context=context
            ) as smtp:
                await smtp.login("alice", PASSWORD)
                try:
                    await smtp.sendmail(
                        "alice@example.org", [f"r{n}@example.com"], f"Subject: {n}\r\n\r\nhi\r\n"
                    )
                    accepted += 1
                except aiosmtplib.SMTPRecipientsRefused:
                    refused += 1
        assert (accepted, refused) == (6, 2)
        async with asyncio.timeout(30):
            while len(the_sink.messages) < accepted:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            async with asyncio.timeout(20):
                while True:  # the delivery counter is written just after the sink's 250
                    values = samples((await http.get("/metrics")).text)
                    if total(values, "relay_recipients_total", outcome="delivered") >= accepted:
                        break
                    await asyncio.sleep(0.05)
            headers = {"authorization": f"Bearer {token}"}
            async with asyncio.timeout(20):
                while True:  # written by each process once a second
                    report = (await http.get("/api/v1/reports?period=24h", headers=headers)).json()
                    if sum(r["delivered"] for r in report["ips"]) >= accepted:
                        break
                    await asyncio.sleep(0.1)
            csv_text = (await http.get("/api/v1/reports/ips.csv", headers=headers)).text
    finally:
        await stop_relay(process)
    assert total(values, "relay_messages_accepted_total") == len(the_sink.messages) == 6
    assert total(values, "relay_messages_refused_total", reason="RCPT 452 4.7.1") == 2
    by_ip = {
        dict(labels)["egress_ip"]: v
        for (name, labels), v in values.items()
        if name == "relay_recipients_total" and dict(labels)["outcome"] == "delivered"
    }
    assert sum(by_ip.values()) == 6 and set(by_ip) <= {"127.0.0.2", "127.0.0.3"}
    assert total(values, "relay_quota_decision_seconds_count") == 8
    assert total(values, "relay_smtp_sessions_open") == 0
    assert total(values, "relay_queue_depth") == 0
    # the activity reports count the same recipients
    assert report["senders"] == [{"account": "alice", "recipients": 6}]
    assert report["outcomes"] == [{"account": "alice", "delivered": 6, "deferred": 0, "bounced": 0}]
    assert sum(r["delivered"] for r in report["ips"]) == 6
    assert report["accounts"] == [{"account": "alice"}]
    assert csv_text.splitlines()[0] == "ip,delivered,deferred,bounced,refused"


async def _operator_token(redis) -> str:
    from relay.web.auth import OperatorStore, Role

    store = OperatorStore(redis)
    await store.add("ops", "operator password 1", Role.VIEWER, 0.0)
    return await store.new_token("ops")
