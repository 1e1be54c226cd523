"""MTA-STS (RFC 8461) and the per-rule TLS modes, against real servers: the test DNS server,
a policy served over HTTPS with a trustme certificate, and a sink that does STARTTLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from structlog.testing import capture_logs

from relay.config import DeliverySettings
from relay.delivery.mta_sts import MtaStsPolicy, PolicyError, parse_policy, parse_txt
from relay.delivery.shaping import parse_shaping
from relay.delivery.tls_policy import mx_matches, tls_requirement
from relay.delivery.tls_report import TlsReports, build_report, day_of, parse_rua, report_name
from relay.errors import NotFound
from relay.sink import Sink
from tests.support.dns_server import DnsServer
from tests.support.engine import engine, sink_on
from tests.support.https_server import PolicyServer
from tests.test_cli import relay

MIN = 60.0
ZONE = """
dest.test. MX 10 mx.dest.test.
mx.dest.test. A 127.0.0.10
_mta-sts.dest.test. TXT "v=STSv1; id=20260101"
mta-sts.dest.test. A 127.0.0.1
"""


def policy(mode: str = "enforce", mx: str = "mx.dest.test", max_age: int = 86400) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


# --- pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "found"),
    [
        (["v=STSv1; id=abc123"], "abc123"),
        (["v=STSv1;id=abc123;"], "abc123"),
        (["v=spf1 -all", "v=STSv1; id=x1"], "x1"),
        (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two records: no policy
        (["v=STSv1"], None),
        (["v=STSv1; id=not-alnum"], None),
        (["v=STSv2; id=a"], None),
        ([], None),
    ],
)
def test_txt_record(texts: list[str], found: str | None) -> None:
    assert parse_txt(texts) == found


def test_policy_parsing() -> None:
    parsed = parse_policy(
        "version: STSv1\nmode: enforce\nmx: MX1.dest.test.\nmx: *.dest.test\nmax_age: 604800\n",
        "id1",
    )
    assert parsed == MtaStsPolicy("enforce", ("mx1.dest.test", "*.dest.test"), 604800, "id1")
    assert parse_policy(policy(max_age=10**9)).max_age == 31_557_600  # at most one year
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 60\n").mx == ()


@pytest.mark.parametrize(
    "text",
    [
        "mode: enforce\nmx: a\nmax_age: 1\n",
        "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
        "version: STSv1\nmode: enforce\nmx: a\nmax_age: 1\ngarbage\n",
    ],
)
def test_bad_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mx.dest.test", "MX.dest.test.", True),
        ("*.dest.test", "mx.dest.test", True),
        ("*.dest.test", "a.mx.dest.test", False),
        ("*.dest.test", "dest.test", False),
        ("mx.dest.test", "mx2.dest.test", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def test_the_stricter_of_rule_and_policy_applies() -> None:
    shaping = parse_shaping(
        '[[rule]]\nname = "g"\ndomains = ["g.test"]\ntls = "required"\n', DeliverySettings()
    )
    rule, default = shaping.rule_for("g.test"), shaping.default
    enforce = MtaStsPolicy("enforce", ("mx.g.test",), 60)
    assert tls_requirement(default, None).policy == "opportunistic"
    assert tls_requirement(rule, None).mode == "required"
    assert tls_requirement(rule, None).policy == "rule g: required"
    strict = tls_requirement(default, enforce)
    assert (strict.mode, strict.mx_patterns, strict.policy) == (
        "verify",
        ("mx.g.test",),
        "mta-sts enforce",
    )
    testing = tls_requirement(default, MtaStsPolicy("testing", ("x",), 60))
    assert (testing.mode, testing.policy) == ("opportunistic", "opportunistic (mta-sts testing)")


# --- real servers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONE) as server:
        yield server


async def deliver(redis, clock, dns, ca, ca_file, *, sink: Sink, text: str, **settings):
    """One message to bob@dest.test through the MX path; (sink, logs, job or None)."""
    async with (
        sink_on(sink, "127.0.0.10") as route,
        PolicyServer(ca.issue_cert("mta-sts.dest.test"), text) as https,
    ):
        port = int(route.split(":")[1])
        with capture_logs() as logs:
            async with engine(
                redis,
                clock,
                dns=dns.settings(),
                mx_port=port,
                tls_ca_file=ca_file,
                mta_sts_port=https.port,
                **settings,
            ) as e:
                queue_id = await e.submit("bob@dest.test")
                await e.step()
                jobs = await jobs_of(e.queue, queue_id)
    return logs, (jobs[0] if jobs else None), https


async def jobs_of(queue, queue_id: str) -> list:
    try:
        return await queue.jobs_of(queue_id)
    except NotFound:  # delivered: the message left the queue
        return []


def outcome(logs: list[dict]) -> dict:
    [line] = [log for log in logs if log["event"].startswith("delivery.") and "reply" in log]
    return line


async def test_enforce_with_a_listed_mx_and_a_valid_certificate_delivers_verified(
    redis, clock, dns, ca, ca_file
) -> None:
    sink = Sink(tls_context=server_context(ca, "mx.dest.test"))
    logs, job, https = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=policy())
    assert job is None and sink.count == 1 and sink.messages[0].tls
    line = outcome(logs)
    assert line["event"] == "delivery.delivered" and line["tls_policy"] == "mta-sts enforce"
    assert https.requests == [("/.well-known/mta-sts.txt", "mta-sts.dest.test")]


async def test_enforce_with_an_unlisted_mx_defers_and_sends_nothing(
    redis, clock, dns, ca, ca_file
) -> None:
    sink = Sink(tls_context=server_context(ca, "mx.dest.test"))
    text = policy(mx="mx.other.test")
    logs, job, _ = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=text)
    assert sink.count == 0 and job is not None and job.attempts == 1
    assert str(job.last_error).startswith("451 4.7.5 mx.dest.test is not an MX host")
    assert outcome(logs)["tls_policy"] == "mta-sts enforce"


async def test_enforce_with_a_certificate_for_another_name_defers(
    redis, clock, dns, ca, ca_file
) -> None:
    sink = Sink(tls_context=server_context(ca, "wrong.test"))
    _, job, _ = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=policy())
    assert sink.count == 0 and job is not None
    assert str(job.last_error).startswith(
        "451 4.7.5 TLS with mx.dest.test failed (mta-sts enforce)"
    )
    assert "certificate" in str(job.last_error)


async def test_enforce_never_falls_back_to_plain_text(redis, clock, dns, ca, ca_file) -> None:
    sink = Sink()  # no STARTTLS
    _, job, _ = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=policy())
    assert sink.count == 0 and job is not None
    assert str(job.last_error).startswith("451 4.7.10 mx.dest.test: STARTTLS not offered")


async def test_testing_mode_delivers_and_reports_what_enforce_would_stop(
    redis, clock, dns, ca, ca_file
) -> None:
    sink = Sink(tls_context=server_context(ca, "wrong.test"))
    text = policy(mode="testing", mx="mx.other.test")
    logs, job, _ = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=text)
    assert job is None and sink.count == 1 and sink.messages[0].tls
    assert outcome(logs)["tls_policy"] == "opportunistic (mta-sts testing)"
    counts = (await TlsReports(redis).day(day_of(clock.now())))["dest.test"]
    assert "ok" not in counts
    assert sorted(k.split("|")[1] for k in counts if k.startswith("fail|")) == [
        "certificate-host-mismatch",
        "validation-failure",
    ]


async def test_testing_mode_with_everything_right_reports_a_success(
    redis, clock, dns, ca, ca_file
) -> None:
    sink = Sink(tls_context=server_context(ca, "mx.dest.test"))
    text = policy(mode="testing")
    _, job, _ = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=text)
    assert job is None and sink.count == 1
    counts = (await TlsReports(redis).day(day_of(clock.now())))["dest.test"]
    assert counts["ok"] == "1" and not [k for k in counts if k.startswith("fail|")]


async def test_no_record_means_opportunistic(redis, clock, dns, ca, ca_file) -> None:
    dns.set("_mta-sts.dest.test.", "TXT")
    sink = Sink()
    logs, job, https = await deliver(redis, clock, dns, ca, ca_file, sink=sink, text=policy())
    assert job is None and sink.count == 1 and https.requests == []
    assert outcome(logs)["tls_policy"] == "opportunistic"


async def test_the_policy_is_cached_until_its_id_changes(redis, clock, dns, ca, ca_file) -> None:
    sink = Sink(tls_context=server_context(ca, "mx.dest.test"))
    async with (
        sink_on(sink, "127.0.0.10") as route,
        PolicyServer(ca.issue_cert("mta-sts.dest.test"), policy()) as https,
        engine(
            redis,
            clock,
            dns=dns.settings(),
            mx_port=int(route.split(":")[1]),
            tls_ca_file=ca_file,
            mta_sts_port=https.port,
        ) as e,
    ):
        for n in range(3):
            await e.submit(f"r{n}@dest.test")
            await e.step()
        assert len(https.requests) == 1
        dns.set("_mta-sts.dest.test.", "TXT", '"v=STSv1; id=20260102"')
        https.text = policy(mx="mx.other.test")
        await e.submit("late@dest.test")
        await e.step()
        assert len(https.requests) == 2 and sink.count == 3  # the new policy: not listed


@pytest.mark.parametrize(
    ("mode", "names", "delivered", "error"),
    [
        ("required", None, False, "451 4.7.10 "),  # no STARTTLS offered
        ("required", ("wrong.test",), True, ""),  # encrypted; certificate not checked
        ("verify", ("wrong.test",), False, "451 4.7.5 "),
        ("verify", ("127.0.0.1",), True, ""),  # a static route's host is its address
    ],
)
async def test_rule_tls_modes(
    redis, clock, ca, ca_file, tmp_path, mode, names, delivered, error
) -> None:
    shaping = tmp_path / "shaping.toml"
    shaping.write_text(f'[[rule]]\nname = "dest"\ndomains = ["dest.test"]\ntls = "{mode}"\n')
    sink = Sink(tls_context=server_context(ca, *names) if names else None)
    async with (
        sink_on(sink) as route,
        engine(
            redis, clock, routes={"dest.test": route}, shaping=shaping, tls_ca_file=ca_file
        ) as e,
    ):
        queue_id = await e.submit("bob@dest.test")
        await e.step()
        jobs = await jobs_of(e.queue, queue_id)
    assert sink.count == (1 if delivered else 0)
    if not delivered:
        [job] = jobs
        assert str(job.last_error).startswith(error) and f"rule dest: {mode}" in str(job.last_error)


# --- TLS reporting (RFC 8460) -------------------------------------------------------------


def test_rua_and_report_name() -> None:
    assert parse_rua(["v=TLSRPTv1; rua=mailto:tls@dest.test,https://r.dest.test/v1"]) == [
        "mailto:tls@dest.test",
        "https://r.dest.test/v1",
    ]
    assert parse_rua(["v=spf1 -all"]) == []
    assert report_name("relay.test", "dest.test", "2027-01-15") == (
        "relay.test!dest.test!1799971200!1800057599.json"
    )


async def test_sessions_under_an_enforced_policy_are_reported_per_day(
    redis, clock, dns, ca, ca_file, tmp_path, redis_server
) -> None:
    dns.load('_smtp._tls.dest.test. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@dest.test"\n')
    good = Sink(tls_context=server_context(ca, "mx.dest.test"))
    await deliver(redis, clock, dns, ca, ca_file, sink=good, text=policy())
    bad = Sink(tls_context=server_context(ca, "wrong.test"))
    await deliver(redis, clock, dns, ca, ca_file, sink=bad, text=policy())
    plain = Sink()
    await deliver(redis, clock, dns, ca, ca_file, sink=plain, text=policy())
    day = day_of(clock.now())
    [(domain, counts)] = (await TlsReports(redis).day(day)).items()
    report = build_report(
        domain, counts, day=day, organization="relay.test", contact="pm@relay.test", report_id="1"
    )
    [entry] = report["policies"]
    assert entry["policy"]["policy-domain"] == "dest.test"
    assert entry["policy"]["mx-host"] == ["mx.dest.test"]
    assert entry["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 2,
    }
    assert sorted(
        (d["result-type"], d["receiving-mx-hostname"]) for d in entry["failure-details"]
    ) == [
        ("certificate-host-mismatch", "mx.dest.test"),
        ("starttls-not-supported", "mx.dest.test"),
    ]
    assert report["date-range"]["start-datetime"] == f"{day}T00:00:00Z"

    # the operator's command writes the files and says where each goes
    (tmp_path / "relay.toml").write_text(
        f'hostname = "relay.test"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[dns]\nservers = ["127.0.0.1:{dns.port}"]\n'
    )
    # (in a thread: the test DNS server answers from this event loop)
    done = await asyncio.to_thread(
        relay, "--config", "relay.toml", "tls-report", "--day", day, "--dir", "out", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    [written] = list((tmp_path / "out").iterdir())
    assert written.name.startswith("relay.test!dest.test!")
    assert json.loads(written.read_text())["policies"][0]["summary"] == entry["summary"]
    assert done.stdout.strip().endswith("\tmailto:tlsrpt@dest.test")


async def test_a_policy_lookup_that_gets_no_answer_is_not_retried_for_every_message(
    redis, clock, dns
) -> None:
    dns.silence("_mta-sts.dest.test.")
    sink = Sink()
    async with (
        sink_on(sink, "127.0.0.10") as route,
        engine(redis, clock, dns=dns.settings(timeout=0.3), mx_port=int(route.split(":")[1])) as e,
    ):
        await e.submit("a@dest.test")
        await e.step()
        asked = dns.queries.count(("_mta-sts.dest.test.", "TXT"))
        await e.submit("b@dest.test")
        await e.step(60)
        assert dns.queries.count(("_mta-sts.dest.test.", "TXT")) == asked >= 1
        await e.step(300)  # then asked again
        await e.submit("c@dest.test")
        await e.step()
        assert dns.queries.count(("_mta-sts.dest.test.", "TXT")) > asked
    assert sink.count == 3  # no policy known: delivered as the rule says
