"""A Postfix policy daemon doing the relay's quota work, for the side-by-side benchmark.

Postfix asks it at RCPT (`check_policy_service`, Postfix's policy delegation protocol): it
reserves one unit of every limit with the relay's own Lua script (`QuotaStore.reserve`),
and at END-OF-MESSAGE commits the message's reservations, as the relay does with its 250.
The account is the SASL login when there is one, else the sender's local part (the bench's
Postfix has no AUTH; the load sends as `LOGIN@load.bench`).

    python -m bench.policyd --port P --redis URL
"""

from __future__ import annotations

import argparse
import asyncio
import time

from quota import QuotaStore, Verdict
from relay.redis_client import connect


class Policy:
    def __init__(self, store: QuotaStore) -> None:
        self.store = store

    async def decide(self, request: dict[str, str]) -> str:
        account = request.get("sasl_username") or request.get("sender", "").partition("@")[0]
        tx = request.get("instance", "")
        state = request.get("protocol_state", "")
        if not account:
            return "DUNNO"
        if state == "RCPT":
            decision = await self.store.reserve(
                account, tx, request.get("recipient", ""), time.time()
            )
            if decision.verdict is not Verdict.ALLOWED:
                return f"451 4.7.1 {decision.verdict.name.lower()}"
        elif state == "END-OF-MESSAGE":
            await self.store.commit(account, tx)
        return "DUNNO"


async def serve(port: int, redis_url: str) -> None:
    redis = connect(redis_url, timeout=5, max_connections=200)
    policy = Policy(QuotaStore(redis, default_per_minute=10**9, per_recipient=10**9))

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request: dict[str, str] = {}
        try:
            while line := await reader.readline():
                text = line.decode("utf-8", "replace").rstrip("\n")
                if text:
                    name, _, value = text.partition("=")
                    request[name] = value
                    continue
                try:
                    action = await policy.decide(request)
                except Exception as exc:  # a policy failure defers, as Postfix would
                    action = f"451 4.3.0 policy error {type(exc).__name__}"
                writer.write(f"action={action}\n\n".encode())
                await writer.drain()
                request = {}
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.port, options.redis))
