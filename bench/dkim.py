"""DKIM signing cost per message: dkimpy against our signer on `cryptography`, same keys.

.venv/bin/python -m bench.dkim [--messages 200]
"""

from __future__ import annotations

import argparse
import functools
import time

import dkim

from bench.net import save_results
from reputation.dkim import generate_key, sign

MESSAGE = (
    b"From: Alice <alice@customer.example>\r\nTo: bob@example.com\r\nSubject: bench\r\n"
    b"Date: Wed, 25 Nov 2026 17:00:00 +0000\r\nMessage-ID: <1@customer.example>\r\n\r\n"
    + (b"x" * 76 + b"\r\n")
    * 200
)


def per_message(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1000


def main(n: int) -> dict[str, float]:
    results = {}
    now = int(time.time())
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        key = generate_key("customer.example", "bench", algorithm)
        signer = b"ed25519-sha256" if algorithm.startswith("ed") else b"rsa-sha256"
        if algorithm.startswith("ed"):
            from cryptography.hazmat.primitives import serialization

            raw = serialization.load_pem_private_key(key.private_pem, None).private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            import base64

            dkimpy_key = base64.b64encode(raw)
        else:
            dkimpy_key = key.private_pem
        results[f"dkimpy {algorithm} ms/msg"] = per_message(
            functools.partial(
                dkim.sign,
                MESSAGE,
                b"bench",
                b"customer.example",
                dkimpy_key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=signer,
            ),
            n,
        )
        results[f"ours {algorithm} ms/msg"] = per_message(
            functools.partial(sign, MESSAGE, key, now=now), n
        )
    return results


def report(results: dict[str, float]) -> None:
    for name, value in results.items():
        print(f"{name:<34} {value:>8.3f}")
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        ratio = results[f"dkimpy {algorithm} ms/msg"] / results[f"ours {algorithm} ms/msg"]
        print(f"{'speed-up ' + algorithm:<34} {ratio:>8.1f}x")
    save_results("dkim", results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    report(main(min(parser.parse_args().messages, 5000)))
