"""Every module imports on its own, and the lower packages take part in no import cycle.

A module that loads only because another one happened to be imported first breaks the day
someone imports it first (a CLI command, a test, a new package `__init__`). Each module is
imported in a fresh child: one interpreter that has imported nothing of ours (only the
third-party libraries, to share their import cost) forks once per module, so each of our
imports starts clean without paying an interpreter start per module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "quota", "reputation")

# Packages below the services: they may be imported by anything, so none of them may import
# (even indirectly) a package that imports it back. relay/notices ↔ relay/delivery was one.
LOWER = {
    "quota",
    "reputation",
    "relay.outcomes",
    "relay.notices",
    "relay.queue",
    "relay.spool",
    "relay.accounts",
    "relay.config",
    "relay.clock",
    "relay.errors",
    "relay.redis_client",
}

_FORKER = """
import importlib, os, sys, traceback
for lib in ("asyncio", "email.message", "aiosmtpd.smtp", "aiosmtplib", "redis.asyncio",
            "dns.asyncresolver", "structlog", "pydantic", "pydantic_settings", "argon2",
            "cryptography.x509", "spf", "publicsuffixlist"):
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.split(".")[0] in ("relay", "quota", "reputation")]
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            sys.stderr.write(f"--- {name}\\n{traceback.format_exc()}")
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print(" ".join(failed))
"""


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue  # runs the program when imported
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = modules()
    assert len(names) > 100, "the walk found the packages"
    result = subprocess.run(
        [sys.executable, "-c", _FORKER, *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    failed = result.stdout.split()
    assert failed == [], f"modules that do not import on their own: {failed}\n{result.stderr}"


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "relay" and len(parts) > 1 else parts[0]


def package_cycles() -> list[set[str]]:
    """Groups of packages that import each other, directly or through others (static)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module in modules():
        path = ROOT / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                ours = target.split(".")[0] in PACKAGES and target != "relay"
                if ours and _package(target) != _package(module):
                    edges[_package(module)].add(_package(target))
    reach: dict[str, set[str]] = {}
    for start in list(edges):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    groups = {frozenset({a} | {b for b in reach[a] if a in reach.get(b, set())}) for a in reach}
    return [set(g) for g in groups if len(g) > 1]


def test_lower_packages_are_in_no_import_cycle() -> None:
    for group in package_cycles():
        assert not group & LOWER, f"import cycle through {sorted(group)}"
