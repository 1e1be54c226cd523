"""Blocklist lookup latency and link extraction cost, against a DNS server on loopback.

Baseline in the same run: a plain A lookup of a name on the same server; the DNSBL lookup
adds the TXT query of a listing and the answer checks. Real lists add the network's RTT.

    .venv/bin/python -m bench.reputation [--lookups 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.net import save_results
from relay.config import DnsSettings, HostPort
from relay.delivery.mx import make_resolver
from reputation import DnsblClient, Zone, extract_links
from tests.support.dns_server import DnsServer

MESSAGE = (
    b"From: a@example.org\r\nSubject: offer\r\nContent-Type: text/html\r\n\r\n"
    + b"".join(f'<a href="https://www.shop{n}.example.com/p?{n}">x</a>\r\n'.encode()
               for n in range(50))
)  # fmt: skip


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


async def main(lookups: int) -> dict[str, object]:
    results: dict[str, object] = {}
    async with DnsServer() as dns:
        dns.load(
            '2.0.0.127.bl.test. A 127.0.0.2\n2.0.0.127.bl.test. TXT "listed"\n'
            "plain.test. A 127.0.0.1\n"
        )
        settings = DnsSettings(servers=[HostPort(host="127.0.0.1", port=dns.port)])
        resolver = make_resolver(settings)
        client = DnsblClient(resolver, [Zone("bl.test", "ip")], cache_ttl=0)
        cached = DnsblClient(resolver, [Zone("bl.test", "ip")], cache_ttl=3600)
        for name, call in (
            ("plain A lookup (baseline)", lambda n: resolver.resolve("plain.test", "A")),
            ("DNSBL, not listed (NXDOMAIN)", lambda n: client.check_ip(f"127.1.{n % 250}.9")),
            ("DNSBL, listed (A + TXT)", lambda n: client.check_ip("127.0.0.2")),
            ("DNSBL, cached", lambda n: cached.check_ip("127.0.0.2")),
        ):
            samples = []
            for n in range(lookups):
                started = time.perf_counter()
                await call(n)
                samples.append(time.perf_counter() - started)
            results[name] = ms(samples)
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        extract_links(MESSAGE)
        samples.append(time.perf_counter() - started)
    results["link extraction, 50 links"] = ms(samples)
    return results


def report(results: dict[str, object]) -> None:
    for name, values in results.items():
        assert isinstance(values, dict)
        print(f"{name:<32} p50 {values['p50_ms']:>8.3f} ms   p99 {values['p99_ms']:>8.3f} ms")
    save_results("reputation", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lookups", type=int, default=500)
    report(asyncio.run(main(min(parser.parse_args().lookups, 10_000))))
