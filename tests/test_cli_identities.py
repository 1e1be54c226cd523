"""`relay domain …` and `relay dkim add` as an operator runs them: real processes, a real
Redis, and the in-process DNS server as the configured resolver (so the commands run as
child processes of this loop, which keeps answering DNS meanwhile)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


async def arelay(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "--config", "relay.toml", *args,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


@pytest.fixture
def workdir(tmp_path, redis_server, dns):
    (tmp_path / "relay.toml").write_text(
        'hostname = "relay.test"\n'
        f'[redis]\nurl = "{redis_server.url}"\n'
        f'[dns]\nservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'
        "[sender_auth]\ncreate_key_file = true\n"
    )
    return tmp_path


@pytest.mark.timeout(120)
async def test_domain_add_verify_dkim_and_remove(workdir, redis, dns):
    for login in ("alice", "bob"):
        made = await arelay("account", "add", login, "--password-stdin", cwd=workdir,
                            stdin="a long password\n")  # fmt: skip
        assert made.returncode == 0, made.stderr

    added = await arelay("domain", "add", "alice", "Example.COM", cwd=workdir)
    assert added.returncode == 0, added.stderr
    record = re.search(r'^_relay-verify\.example\.com\. IN TXT "(relay-verify=\w+)"$',
                       added.stdout, re.M)  # fmt: skip
    assert record, added.stdout

    missing = await arelay("domain", "verify", "alice", "example.com", cwd=workdir)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("relay: _relay-verify.example.com has no TXT record")
    assert len(missing.stderr.strip().splitlines()) == 1
    dns.set("_relay-verify.example.com", "TXT", '"relay-verify=wrong"')
    wrong = await arelay("domain", "verify", "alice", "example.com", cwd=workdir)
    assert wrong.returncode == 1 and "has no TXT record" in wrong.stderr

    dns.set("_relay-verify.example.com", "TXT", f'"{record.group(1)}"')
    verified = await arelay("domain", "verify", "alice", "example.com", cwd=workdir)
    assert verified.returncode == 0, verified.stderr
    assert "example.com is verified for alice." in verified.stdout
    assert "include:_spf.relay.test" in verified.stdout
    assert "relay dkim add example.com --selector S" in verified.stdout

    taken = await arelay("domain", "add", "bob", "mail.example.com", cwd=workdir)
    assert taken.returncode == 1
    assert "overlaps example.com, verified for account alice" in taken.stderr

    unowned = await arelay("dkim", "add", "other.example", "--selector", "s1", cwd=workdir)
    assert unowned.returncode == 1
    assert "other.example is not a verified sender domain of any account" in unowned.stderr
    signed = await arelay("dkim", "add", "example.com", "--selector", "s1", "--algorithm",
                          "ed25519", cwd=workdir)  # fmt: skip
    assert signed.returncode == 0 and "sent by alice" in signed.stdout, signed.stderr
    keys = json.loads((await arelay("dkim", "list", "--json", cwd=workdir)).stdout)
    assert [(k["domain"], k["owner"]) for k in keys] == [("example.com", "alice")]

    hosted = await arelay("domain", "add", "bob", "bob@hosted.example", "--verified", cwd=workdir)
    assert hosted.returncode == 0 and "(operator)" in hosted.stdout, hosted.stderr
    listed = json.loads((await arelay("domain", "list", "--json", cwd=workdir)).stdout)
    assert [(i["login"], i["name"], i["verified"], i["method"]) for i in listed] == [
        ("alice", "example.com", True, "dns"),
        ("bob", "bob@hosted.example", True, "operator"),
    ]

    removed = await arelay("domain", "remove", "alice", "example.com", cwd=workdir)
    assert removed.returncode == 0, removed.stderr
    assert "DKIM key of example.com removed" in removed.stdout
    assert json.loads((await arelay("dkim", "list", "--json", cwd=workdir)).stdout) == []
    again = await arelay("domain", "add", "bob", "mail.example.com", cwd=workdir)
    assert again.returncode == 0, "free once the operator removed it"

    audit = json.loads((await arelay("audit", "--account", "alice", "--json", cwd=workdir)).stdout)
    assert [e["action"] for e in audit] == [
        "identity-add",
        "identity-verify",
        "dkim-add",
        "identity-remove",
    ]
    assert all(e["actor"].startswith("operator:") for e in audit)
    assert {e["subject"] for e in audit} == {"example.com"}


async def test_mistakes_are_one_line(workdir, redis):
    made = await arelay("account", "add", "alice", "--password-stdin", cwd=workdir,
                        stdin="a long password\n")  # fmt: skip
    assert made.returncode == 0
    for args, text in [
        (("domain", "add", "nobody", "example.com"), "no account 'nobody'"),
        (("domain", "add", "alice", "not a domain"), "not a domain"),
        (("domain", "add", "alice", "co.uk"), "co.uk is a public suffix"),
        (("domain", "verify", "alice", "example.com"), "alice has no identity example.com"),
        (("domain", "remove", "alice", "example.com"), "alice has no identity example.com"),
    ]:
        result = await arelay(*args, cwd=workdir)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.startswith("relay: ") and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
