"""Shaping in the delivery engine: a provider that answers 421 4.7.28 after N messages per
connection from one IP makes that IP pause for the rule while the mail moves on; a rule
holding every IP back postpones the job without counting an attempt; the retry curve."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from structlog.testing import capture_logs

from relay.sink import Sink
from tests.support.engine import engine, sink_on

MIN = 60.0
RATE_LIMITED = "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"


class Provider(Sink):
    """Answers 421 4.7.28 to RCPT once `limit` messages went over one connection from `ip`."""

    def __init__(self, ip: str, limit: int) -> None:
        super().__init__()
        self.ip, self.limit = ip, limit
        self.per_session: Counter[int] = Counter()
        self.refused: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if session.peer[0] == self.ip and self.per_session[id(session)] >= self.limit:
            self.refused.append(address)
            return RATE_LIMITED
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.per_session[id(session)] += 1
        return reply


def rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shaping.toml"
    path.write_text(text)
    return path


REACT = """
[[rule]]
name = "provider"
domains = ["dest.test"]
retry = ["1m", "2m"]
[[rule.reactions]]
code = 421
status = "4.7.28"
action = "{action}"
duration = "1h"
"""


@pytest.mark.parametrize("action", ["move", "suspend"])
async def test_a_rate_limited_ip_pauses_for_the_rule_and_the_mail_goes_on(
    redis, clock, tmp_path, action
) -> None:
    provider = Provider("127.0.0.2", limit=2)
    shaping = rules(tmp_path, REACT.format(action=action))
    with capture_logs() as logs:
        async with (
            sink_on(provider) as route,
            engine(redis, clock, routes={"dest.test": route}, shaping=shaping) as e,
        ):
            for n in range(12):
                await e.submit(f"r{n}@dest.test")
                await e.step()
            if action == "suspend":  # the refused message waits for its retry (1 minute)
                await e.step(MIN)
            assert await e.queue.count() == 0
    assert provider.count == 12 and len(provider.refused) == 1  # nothing bounced
    peers = Counter(message.peer for message in provider.messages)
    assert peers["127.0.0.2"] == 2  # the two before the 421; none after it
    [reaction] = [log for log in logs if log["event"] == "shaping.reaction"]
    assert (reaction["rule"], reaction["egress_ip"], reaction["action"]) == (
        "provider",
        "127.0.0.2",
        action,
    )
    assert not [log for log in logs if log["event"] == "delivery.bounced"]


async def test_a_rule_holding_back_every_ip_postpones_without_an_attempt(
    redis, clock, tmp_path
) -> None:
    dest = Sink()
    shaping = rules(tmp_path, REACT.format(action="suspend"))
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route}, shaping=shaping) as e,
    ):
        rule = e.worker.shaping.current.rule_for("dest.test")
        for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            await e.worker._shaper.react("provider", ip, rule.reactions[0])
        with capture_logs() as logs:
            queue_id = await e.submit("bob@dest.test")
            await e.step()
        [job] = await e.queue.jobs_of(queue_id)
        assert job.attempts == 0 and job.due_at == pytest.approx(clock.now() + 3600)
        assert dest.count == 0
        [postponed] = [log for log in logs if log["event"] == "delivery.postponed"]
        assert postponed["rule"] == "provider" and "suspended" in postponed["reason"]
        await e.step(3600)
        assert await e.queue.count() == 0 and dest.count == 1


async def test_the_rule_s_retry_curve_spaces_the_attempts(redis, clock, tmp_path) -> None:
    tried: list[float] = []

    def busy(peer: str, rcpt: str) -> str | None:
        tried.append(clock.now())
        return "451 4.3.0 try later" if len(tried) <= 4 else None

    dest = Sink(reply_for_rcpt=busy)
    shaping = rules(tmp_path, REACT.format(action="move"))
    async with (
        sink_on(dest) as route,
        engine(redis, clock, routes={"dest.test": route}, shaping=shaping) as e,
    ):
        start = clock.now()
        await e.submit("bob@dest.test")
        await e.step()
        for _ in range(12):
            await e.step(MIN)
        assert await e.queue.count() == 0
    assert [round((t - start) / MIN) for t in tried] == [0, 1, 3, 5, 7]
