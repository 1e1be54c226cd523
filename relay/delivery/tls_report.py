"""TLS reporting (RFC 8460): what happened to the sessions under a domain's MTA-STS policy.

Every process counts, in Redis (so a day's report covers the fleet), the sessions it opened
to a domain whose MTA-STS policy is in force: successes, and failures by result type,
sending IP and MX host. `relay tls-report` turns one UTC day of counts into one JSON report
per domain (section 4 format, section 5.3 file name) and names where the domain wants it
(the `rua` of its `_smtp._tls` TXT record): files ready to send.

Under `mode: testing` the relay checks the MX list and the certificate as `enforce` would,
counts what fails, and delivers all the same (RFC 8461 section 5).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Mapping
from typing import Any

import dns.asyncresolver
import dns.exception
import redis.asyncio as aioredis

from relay.delivery.mta_sts import MtaStsPolicy
from relay.redis_client import store_errors, text

__all__ = ["TlsReports", "build_report", "parse_rua", "report_name"]

_KEEP = 8 * 86400
"""A day's counts are kept this long (a report can be made again for a week)."""


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def _key(day: str, domain: str) -> str:
    return f"tlsrpt:{{{day}}}:{domain}"


def _domains(day: str) -> str:
    return f"tlsrpt:{{{day}}}:domains"


class TlsReports:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def record(
        self,
        domain: str,
        policy: MtaStsPolicy,
        now: float,
        *,
        successes: int = 0,
        failures: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        """`failures`: (result type, sending IP, MX host) of each failed session."""
        if not successes and not failures:
            return
        day = day_of(now)
        key = _key(day, domain)
        with store_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(key, "policy", _policy_json(policy))
                if successes:
                    pipe.hincrby(key, "ok", successes)
                for result, ip, mx in failures:
                    pipe.hincrby(key, f"fail|{result}|{ip}|{mx}", 1)
                pipe.expire(key, _KEEP)
                pipe.sadd(_domains(day), domain)
                pipe.expire(_domains(day), _KEEP)
                await pipe.execute()

    async def day(self, day: str) -> dict[str, dict[str, str]]:
        """Each domain's counts of one UTC day ("YYYY-MM-DD")."""
        with store_errors():
            domains = sorted(text(d) for d in await self._redis.smembers(_domains(day)))
            found = {}
            for domain in domains:
                raw = await self._redis.hgetall(_key(day, domain))
                found[domain] = {text(k): text(v) for k, v in raw.items()}
        return found


def _policy_json(policy: MtaStsPolicy) -> str:
    return json.dumps({"mode": policy.mode, "mx": list(policy.mx), "max_age": policy.max_age})


def build_report(
    domain: str,
    counts: Mapping[str, str],
    *,
    day: str,
    organization: str,
    contact: str,
    report_id: str,
) -> dict[str, Any]:
    """The RFC 8460 section 4 JSON of one domain's day."""
    start = f"{day}T00:00:00Z"
    end = f"{day}T23:59:59Z"
    policy = json.loads(counts.get("policy", "{}") or "{}")
    details = []
    failed = 0
    for field, value in sorted(counts.items()):
        if not field.startswith("fail|"):
            continue
        _, result, ip, mx = field.split("|", 3)
        failed += int(value)
        details.append(
            {
                "result-type": result,
                "sending-mta-ip": ip,
                "receiving-mx-hostname": mx,
                "failed-session-count": int(value),
            }
        )
    policy_string = [
        "version: STSv1",
        f"mode: {policy.get('mode', 'enforce')}",
        *(f"mx: {mx}" for mx in policy.get("mx", [])),
        f"max_age: {policy.get('max_age', 0)}",
    ]
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": start, "end-datetime": end},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": policy_string,
                    "policy-domain": domain,
                    "mx-host": list(policy.get("mx", [])),
                },
                "summary": {
                    "total-successful-session-count": int(counts.get("ok", "0")),
                    "total-failure-session-count": failed,
                },
                "failure-details": details,
            }
        ],
    }


def report_name(organization: str, domain: str, day: str) -> str:
    """RFC 8460 section 5.3: `sender!policy-domain!begin!end.json` (UTC seconds)."""
    begin = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    return f"{organization}!{domain}!{begin}!{begin + 86399}.json"


def parse_rua(texts: list[str]) -> list[str]:
    """The `rua` addresses of a `_smtp._tls` TXT record (RFC 8460 section 3)."""
    for record in texts:
        fields = [f.strip() for f in record.split(";") if f.strip()]
        if not fields or fields[0].replace(" ", "") != "v=TLSRPTv1":
            continue
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key.strip() == "rua":
                return [uri.strip() for uri in value.split(",") if uri.strip()]
    return []


async def rua_of(domain: str, resolver: dns.asyncresolver.Resolver) -> list[str]:
    try:
        answer = await resolver.resolve(f"_smtp._tls.{domain}.", "TXT", search=False)
    except dns.exception.DNSException:
        return []
    return parse_rua([b"".join(r.strings).decode("ascii", "replace") for r in answer])
