"""MTA-STS (RFC 8461): a domain's published promise that its MX hosts do TLS with valid
certificates, which a sending MTA then holds it to.

The `_mta-sts.<domain>` TXT record says a policy exists (and its id); the policy itself is
fetched over HTTPS from `mta-sts.<domain>` with a certificate that must validate, and is
kept for its `max_age` (refreshed when the TXT id changes). With `mode: enforce` mail goes
only to an MX host the policy lists, over TLS with a certificate valid for that host, and
waits (4.7.x) otherwise; `mode: testing` delivers anyway and reports what would have failed.

Parsing and the decision are pure; `MtaStsPolicies` is the thin adapter (DNS, HTTPS, cache).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog

from relay.clock import Clock

__all__ = [
    "MtaStsPolicies",
    "MtaStsPolicy",
    "PolicyError",
    "parse_policy",
    "parse_txt",
]

log = structlog.get_logger("relay.delivery")

Mode = Literal["enforce", "testing", "none"]

MAX_POLICY_BYTES = 64 * 1024
"""RFC 8461 section 3.3: a policy larger than this is refused."""
MAX_AGE_LIMIT = 31_557_600
"""RFC 8461 section 3.2: max_age is at most one year."""

RETRY_UNANSWERED = 300.0
"""Seconds before a domain whose `_mta-sts` lookup failed is asked again."""

_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")


class PolicyError(Exception):
    """The record or the policy is missing, invalid or cannot be fetched."""


@dataclass(frozen=True)
class MtaStsPolicy:
    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    id: str = ""


def parse_txt(texts: list[str]) -> str | None:
    """The policy id of the `_mta-sts` TXT records; None when none is an STSv1 record.
    RFC 8461 section 3.1: the record must start with "v=STSv1" and have an id; several
    STSv1 records mean no policy."""
    found = []
    for text in texts:
        fields = [f.strip() for f in text.split(";") if f.strip()]
        if not fields or fields[0].replace(" ", "") != "v=STSv1":
            continue
        values = dict(f.partition("=")[::2] for f in fields[1:])
        policy_id = values.get("id", "").strip()
        if _TXT_ID.fullmatch(policy_id):
            found.append(policy_id)
    return found[0] if len(found) == 1 else None


def parse_policy(text: str, policy_id: str = "") -> MtaStsPolicy:
    """RFC 8461 section 3.2: "key: value" lines (CRLF or LF); version, mode and max_age
    required, mx at least once unless the mode is none."""
    values: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"not a policy line: {line[:80]!r}")
        values.setdefault(key.strip(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise PolicyError("version is not STSv1")
    modes = values.get("mode", [])
    if len(modes) != 1 or modes[0] not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode is not enforce, testing or none: {modes}")
    ages = values.get("max_age", [])
    if len(ages) != 1 or not ages[0].isdigit() or len(ages[0]) > 10:
        raise PolicyError(f"max_age is not a number of seconds: {ages}")
    mode: Mode = modes[0]  # type: ignore[assignment]
    mx = tuple(m.lower().rstrip(".") for m in values.get("mx", []))
    if not mx and mode != "none":
        raise PolicyError("no mx line")
    return MtaStsPolicy(mode, mx, min(int(ages[0]), MAX_AGE_LIMIT), policy_id)


@dataclass
class _Cached:
    policy: MtaStsPolicy
    expires_at: float


class MtaStsPolicies:
    """Policies of destination domains, fetched when needed and cached for their max_age."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        clock: Clock,
        *,
        context: ssl.SSLContext,
        port: int = 443,
        timeout: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        """`context`: verifies the policy host's certificate (the system's CAs, plus a
        private CA in tests); `port`: 443 but in tests."""
        self._resolver = resolver
        self._clock = clock
        self._context = context
        self._port = port
        self._timeout = timeout
        self._max_entries = max_entries
        self._cache: dict[str, _Cached] = {}
        self._unanswered: dict[str, float] = {}
        """Domains whose TXT lookup failed (timeout, SERVFAIL), until when not to ask again:
        a DNS server that never answers must not cost every delivery its timeout."""
        self.fetches = 0
        """Policies fetched over HTTPS (for tests and metrics)."""

    async def policy(self, domain: str) -> MtaStsPolicy | None:
        """The domain's policy in force; None when it has none (or mode none). Never raises:
        a domain whose policy cannot be had is treated as having none, unless a cached one
        is still valid (RFC 8461 section 5.1)."""
        domain = domain.lower().rstrip(".")
        now = self._clock.now()
        cached = self._cache.get(domain)
        valid = cached is not None and cached.expires_at > now
        if self._unanswered.get(domain, 0.0) > now:
            return _in_force(cached.policy) if cached is not None and valid else None
        try:
            policy_id = await self._txt(domain)
        except PolicyError as exc:
            if len(self._unanswered) >= self._max_entries:
                self._unanswered.clear()
            self._unanswered[domain] = now + RETRY_UNANSWERED
            log.info("mta_sts.lookup_failed", domain=domain, error=str(exc))
            return _in_force(cached.policy) if cached is not None and valid else None
        if policy_id is None:
            if cached is not None and cached.expires_at > now:
                return _in_force(cached.policy)  # a record gone missing is not a downgrade
            return None
        if cached is not None and cached.expires_at > now and cached.policy.id == policy_id:
            return _in_force(cached.policy)
        try:
            policy = parse_policy(await self._fetch(domain), policy_id)
        except PolicyError as exc:
            log.warning("mta_sts.fetch_failed", domain=domain, error=str(exc))
            if cached is not None and cached.expires_at > now:
                return _in_force(cached.policy)
            return None
        if len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]
        self._cache[domain] = _Cached(policy, now + policy.max_age)
        log.info("mta_sts.policy", domain=domain, mode=policy.mode, mx=list(policy.mx))
        return _in_force(policy)

    async def _txt(self, domain: str) -> str | None:
        try:
            answer = await self._resolver.resolve(f"_mta-sts.{domain}.", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise PolicyError(f"TXT lookup failed: {exc}") from None
        texts = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
        return parse_txt(texts)

    async def _fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            address = await self._address(host)
            async with asyncio.timeout(self._timeout):
                return await _https_get(address, self._port, host, self._context)
        except (OSError, TimeoutError, ssl.SSLError, UnicodeDecodeError) as exc:
            raise PolicyError(f"https://{host}/.well-known/mta-sts.txt: {exc}") from None
        finally:
            self.fetches += 1

    async def _address(self, host: str) -> str:
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(f"{host}.", rdtype, search=False)
            except dns.exception.DNSException:
                continue
            return str(answer[0])
        raise PolicyError(f"{host}: no address")


def _in_force(policy: MtaStsPolicy) -> MtaStsPolicy | None:
    return None if policy.mode == "none" else policy


async def _https_get(address: str, port: int, host: str, context: ssl.SSLContext) -> str:
    """GET the policy (HTTP/1.1, no redirects: RFC 8461 section 3.3); its text."""
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=host)
    try:
        writer.write(
            f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
            f"Connection: close\r\nAccept: text/plain\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        raw = await reader.read(MAX_POLICY_BYTES + 16 * 1024)
    finally:
        writer.close()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise PolicyError("no HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ")
    if len(status) < 2 or status[1] != "200":
        raise PolicyError(f"HTTP {' '.join(status[1:])}".strip())
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if not headers.get("content-type", "").lower().startswith("text/plain"):
        raise PolicyError("the policy is not text/plain")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _unchunk(body)
    elif (length := headers.get("content-length", "")).isdigit():
        body = body[: int(length)]
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("the policy is larger than 64 KiB")
    return body.decode("utf-8")


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
