"""`relay operator ...`: the console's accounts and tokens, made from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.redis_client import connect
from relay.web.auth import OperatorStore


@pytest.fixture
def config(redis_server, tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(f'[redis]\nurl = "{redis_server.url}"\n')

    async def flush() -> None:
        client = connect(redis_server.url, timeout=5.0)
        await client.flushall()
        await client.aclose()

    asyncio.run(flush())
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_operator_lifecycle(config: Path, redis_server, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", _Lines("a long operator password\n"))
    assert run(config, "operator", "add", "ana", "--role", "admin", "--password-stdin") == 0
    assert "created operator ana (admin)" in capsys.readouterr().out
    assert run(config, "operator", "add", "vic") == 0
    out = capsys.readouterr().out
    assert "(viewer)" in out and out.count("password: ") == 1
    assert run(config, "operator", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["role"]) for o in listed] == [("ana", "admin"), ("vic", "viewer")]
    assert run(config, "operator", "token", "ana") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("rlt_")

    async def who(token: str) -> str | None:
        client = connect(redis_server.url, timeout=5.0)
        try:
            found = await OperatorStore(client).by_token(token)
            return found.name if found else None
        finally:
            await client.aclose()

    assert asyncio.run(who(token)) == "ana"
    assert run(config, "operator", "remove", "ana") == 0
    assert asyncio.run(who(token)) is None  # removing an operator revokes their tokens
    assert run(config, "operator", "add", "bad name!") == 1
    assert "invalid operator name" in capsys.readouterr().err


class _Lines:
    def __init__(self, text: str) -> None:
        self._lines = text.splitlines(keepends=True)

    def readline(self) -> str:
        return self._lines.pop(0) if self._lines else ""

    def isatty(self) -> bool:
        return False
