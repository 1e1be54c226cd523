"""DKIM private keys are encrypted in Redis with a key kept outside it, and can be rotated."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import dkim
import pytest
import redis.asyncio as aioredis

from relay.config import LogSettings, SenderAuthSettings
from relay.embedded_redis import EmbeddedRedis
from relay.logging import configure_logging
from relay.sender_auth import DkimKeyStore, DkimSigner
from relay.sender_auth.key_vault import (
    KeyVault,
    KeyVaultError,
    VaultKey,
    new_key_line,
    open_sealed,
    parse_keys,
    seal,
)
from reputation.dkim import dns_record, generate_key

ROOT = Path(__file__).parents[1]
MESSAGE = (
    b"From: Alice <alice@customer.example>\r\nTo: bob@example.com\r\nSubject: hi\r\n"
    b"Date: Wed, 25 Nov 2026 17:00:00 +0000\r\nMessage-ID: <1@customer.example>\r\n\r\nHello\r\n"
)


def vault_file(path: Path, *lines: str) -> KeyVault:
    path.write_text("".join(f"{line}\n" for line in lines))
    os.chmod(path, 0o600)
    return KeyVault.from_settings(SenderAuthSettings(key_file=path))


def verifies(message: bytes, key) -> bool:
    _, value = dns_record(key)
    return bool(dkim.verify(message, dnsfunc=lambda q, timeout=5: value.encode()))


async def raw_entry(redis: aioredis.Redis, domain: str) -> dict[str, str]:
    raw = await redis.hget("dkim:keys", domain)
    assert raw is not None
    return json.loads(raw)


@pytest.fixture
def captured_logs():
    out = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=out)
    yield out
    configure_logging(LogSettings(level="warning"))


def events(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
async def test_stored_key_is_not_the_clear_pem_and_still_signs(
    redis: aioredis.Redis, tmp_path: Path, algorithm
) -> None:
    vault = vault_file(tmp_path / "dkim.key", new_key_line())
    key = generate_key("customer.example", "relay1", algorithm)
    store = DkimKeyStore(redis, vault)
    await store.put(key)

    entry = await raw_entry(redis, "customer.example")
    assert b"PRIVATE KEY" not in json.dumps(entry).encode()
    assert entry["private_pem"].startswith(f"aesgcm1:{vault.current.key_id}:")
    dump = await redis.dump("dkim:keys")  # what the AOF or a backup holds
    assert dump is not None and b"PRIVATE KEY" not in dump and key.private_pem[40:80] not in dump

    await store.set_owner("customer.example", "alice")
    signed = await DkimSigner(store).sign_whole(MESSAGE, "alice")
    assert signed.startswith(b"DKIM-Signature:")
    assert verifies(signed, key)


async def test_dev_key_file_is_created_private_on_first_use(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "var" / "dkim.key"
    production = KeyVault.from_settings(SenderAuthSettings(key_file=path))
    with pytest.raises(KeyVaultError, match=r"^sender_auth\.key_file: .*dkim\.key: not found"):
        await DkimKeyStore(redis, production).put(generate_key("a.example", "s1", "rsa-sha256"))
    assert not path.exists()
    vault = KeyVault.from_settings(SenderAuthSettings(key_file=path, create_key_file=True))
    await DkimKeyStore(redis, vault).put(generate_key("a.example", "s1", "ed25519-sha256"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(parse_keys(path.read_text(), where="test")) == 1
    again = KeyVault.from_settings(SenderAuthSettings(key_file=path))
    assert (await DkimKeyStore(redis, again).get("a.example")) is not None


async def test_rotation_old_key_decrypts_and_rekey_moves_to_the_new_one(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "dkim.key"
    old, new = new_key_line(), new_key_line()
    before = vault_file(path, old)
    key = generate_key("customer.example", "relay1", "ed25519-sha256")
    await DkimKeyStore(redis, before).put(key)
    old_id = before.current.key_id
    assert (await raw_entry(redis, "customer.example"))["private_pem"].split(":")[1] == old_id

    rotated = vault_file(path, new, old)  # new key first, the old one still decrypts
    store = DkimKeyStore(redis, rotated)
    assert (await store.get("customer.example")) == key
    new_id = rotated.current.key_id
    assert new_id != old_id

    report = await store.rekey()
    assert (report.key_id, report.from_old_keys, report.from_clear) == (new_id, 1, 0)
    entry = await raw_entry(redis, "customer.example")
    assert entry["private_pem"].split(":")[1] == new_id
    assert entry["selector"] == "relay1" and "created_at" in entry, "other fields kept"

    only_new = DkimKeyStore(redis, vault_file(path, new))
    assert (await only_new.get("customer.example")) == key
    assert (await only_new.rekey()).unchanged == 1
    only_old = DkimKeyStore(redis, vault_file(path, old))
    with pytest.raises(KeyVaultError, match=rf"^sender_auth\.key_file: .*no key with id {new_id}"):
        await only_old.get("customer.example")


async def test_a_key_added_to_the_file_is_picked_up_without_restart(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A running relay (its vault already loaded) reads keys sealed by a newer key."""
    path = tmp_path / "dkim.key"
    old, new = new_key_line(), new_key_line()
    running = DkimKeyStore(redis, vault_file(path, old))
    await running.put(generate_key("a.example", "s1", "ed25519-sha256"))
    assert await running.get("a.example") is not None  # vault loaded with the old key only
    operator = DkimKeyStore(redis, vault_file(path, new, old))
    await operator.rekey()
    assert await running.get("a.example") is not None


async def test_keys_stored_in_clear_are_read_with_a_warning_and_rekey_encrypts_them(
    redis: aioredis.Redis, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    key = generate_key("legacy.example", "s1", "ed25519-sha256")
    legacy = {  # as stored before encryption at rest
        "selector": "s1",
        "algorithm": key.algorithm,
        "private_pem": key.private_pem.decode(),
        "created_at": 1.0,
    }
    await redis.hset("dkim:keys", "legacy.example", json.dumps(legacy))
    dev = SenderAuthSettings(key_file=tmp_path / "k", create_key_file=True)
    store = DkimKeyStore(redis, KeyVault.from_settings(dev))
    assert await store.get("legacy.example") == key
    (warning,) = [e for e in events(captured_logs) if e["event"] == "dkim.key_in_clear"]
    assert warning["domain"] == "legacy.example" and warning["level"] == "warning"

    report = await store.rekey()
    assert (report.from_clear, report.from_old_keys, report.unchanged) == (1, 0, 0)
    entry = await raw_entry(redis, "legacy.example")
    assert entry["private_pem"].startswith("aesgcm1:") and entry["created_at"] == 1.0
    assert await store.get("legacy.example") == key


async def test_signing_fails_closed_when_the_key_cannot_be_decrypted(
    redis: aioredis.Redis, tmp_path: Path, captured_logs: io.StringIO
) -> None:
    path = tmp_path / "dkim.key"
    await DkimKeyStore(redis, vault_file(path, new_key_line())).put(
        generate_key("customer.example", "relay1", "ed25519-sha256")
    )
    wrong = DkimSigner(DkimKeyStore(redis, vault_file(path, new_key_line())))
    await redis.hset("dkim:owners", "customer.example", "alice")
    assert await wrong.sign_whole(MESSAGE, "alice") == MESSAGE, "sent unsigned, not refused"
    (error,) = [e for e in events(captured_logs) if e["event"] == "dkim.key_unavailable"]
    assert error["level"] == "error" and error["domain"] == "customer.example"
    assert error["error"].startswith("sender_auth.key_file: ") and "\n" not in error["error"]


async def test_a_value_moved_to_another_domain_does_not_decrypt(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    vault = vault_file(tmp_path / "dkim.key", new_key_line())
    store = DkimKeyStore(redis, vault)
    await store.put(generate_key("victim.example", "s1", "ed25519-sha256"))
    stolen = await redis.hget("dkim:keys", "victim.example")
    await redis.hset("dkim:keys", "attacker.example", stolen)
    with pytest.raises(KeyVaultError, match=r"does not decrypt dkim:attacker\.example"):
        await store.get("attacker.example")


def test_seal_and_open_are_pure_and_bound_to_key_and_context() -> None:
    first = VaultKey.of(b"\x01" * 32)
    second = VaultKey.of(b"\x02" * 32)
    keys = {k.key_id: k for k in (first, second)}
    value = seal(first, b"pem", context="dkim:a.example", nonce=b"\x00" * 12)
    assert value == seal(first, b"pem", context="dkim:a.example", nonce=b"\x00" * 12)
    assert value.startswith(f"aesgcm1:{first.key_id}:")
    assert open_sealed(keys, value, context="dkim:a.example", where="w") == b"pem"
    with pytest.raises(KeyVaultError, match="does not decrypt"):
        open_sealed(keys, value, context="dkim:b.example", where="w")
    with pytest.raises(KeyVaultError, match=f"^w: no key with id {first.key_id}"):
        open_sealed({second.key_id: second}, value, context="dkim:a.example", where="w")
    with pytest.raises(KeyVaultError, match="not an encrypted key"):
        open_sealed(keys, "aesgcm1:abc:!!", context="dkim:a.example", where="w")
    assert "secret" not in repr(first) and "\\x01" not in repr(first)


@pytest.mark.parametrize(
    ("text", "count", "error"),
    [
        ("# dkim keys\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", 1, None),
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 \n", 1, None),  # padding left out
        ("AAECAwQFBgcICQoLDA0ODw==\n", 1, "key 1 is not a key"),  # 16 bytes
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\ntoo-short\n", 2, "key 2 is not a key"),
        (
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            2,
            None,
        ),
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8!", 1, "key 1 is not a key"),
        ("-_-_" * 10 + "-_-=", 1, None),  # urlsafe alphabet
        ("\n# nothing\n", 0, "holds no key"),
    ],
)
def test_parse_keys(text: str, count: int, error: str | None) -> None:
    if error:
        with pytest.raises(KeyVaultError, match=f"^src: {error}") as caught:
            parse_keys(text, where="src")
        assert "AAEC" not in str(caught.value), "a key is never shown"
    else:
        assert len(parse_keys(text, where="src")) == count


def test_urlsafe_and_standard_base64_are_the_same_key() -> None:
    raw = bytes(range(200, 232))
    (a,) = parse_keys(base64.b64encode(raw).decode(), where="s")
    (b,) = parse_keys(base64.urlsafe_b64encode(raw).decode(), where="s")
    assert a == b


def test_key_env_missing_names_the_config_key() -> None:
    vault = KeyVault.from_settings(SenderAuthSettings(key_env="DKIM_KEYS_FOR_TEST"), environ={})
    with pytest.raises(
        KeyVaultError, match=r"^sender_auth\.key_env: \$DKIM_KEYS_FOR_TEST: not set"
    ):
        vault.seal(b"pem", context="dkim:a.example")
    line = new_key_line()
    from_env = KeyVault.from_settings(
        SenderAuthSettings(key_env="DKIM_KEYS_FOR_TEST"), environ={"DKIM_KEYS_FOR_TEST": line}
    )
    value = from_env.seal(b"pem", context="c")
    assert from_env.open(value, context="c") == b"pem"


def relay(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "relay", "--config", "relay.toml", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_cli_wrong_or_missing_key_is_one_line_and_rekey(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text(
        '[redis]\nembedded_dir = "var/redis"\n'
        '[sender_auth]\nkey_file = "var/dkim.key"\ncreate_key_file = true\n'
    )
    server = EmbeddedRedis(
        tmp_path / "var" / "redis"
    )  # shared by the commands, as with `relay run`
    server.start()
    try:
        cli_steps(tmp_path)
    finally:
        server.stop()


def cli_steps(tmp_path: Path) -> None:
    for step in (("account", "add", "alice", "--password-stdin"),):
        assert relay(*step, cwd=tmp_path, stdin="a long enough password\n").returncode == 0
    owned = relay("domain", "add", "alice", "customer.example", "--verified", cwd=tmp_path)
    assert owned.returncode == 0, owned.stderr
    added = relay("dkim", "add", "customer.example", "--selector", "s1", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "dkim.key_file_created" in added.stderr and "Traceback" not in added.stderr
    key_file = tmp_path / "var" / "dkim.key"
    first = key_file.read_text().strip()
    assert relay("dkim", "list", cwd=tmp_path).returncode == 0

    key_file.write_text(new_key_line() + "\n")  # the wrong key
    listed = relay("dkim", "list", cwd=tmp_path)
    assert listed.returncode == 1
    assert listed.stderr.startswith("relay: sender_auth.key_file: var/dkim.key: no key with id ")
    assert len(listed.stderr.splitlines()) == 1 and first not in listed.stderr

    key_file.unlink()
    missing = relay("dkim", "list", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("relay: sender_auth.key_file: var/dkim.key: not found (")
    assert len(missing.stderr.splitlines()) == 1

    key_file.write_text(f"{new_key_line()}\n{first}\n")  # rotation: a new first line
    rekeyed = relay("dkim", "rekey", cwd=tmp_path)
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert "1 DKIM key(s) re-encrypted with key" in rekeyed.stdout
    key_file.write_text(key_file.read_text().splitlines()[0] + "\n")  # drop the old key
    assert relay("dkim", "list", cwd=tmp_path).returncode == 0

    env_only = relay(
        "dkim", "list", cwd=tmp_path, env={"RELAY_SENDER_AUTH__KEY_ENV": "DKIM_KEYS_UNSET"}
    )
    assert env_only.returncode == 1 and env_only.stderr.startswith(
        "relay: sender_auth.key_env: $DKIM_KEYS_UNSET: not set"
    )
