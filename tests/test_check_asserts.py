"""scripts/check_asserts.py, the lint gate's check for asserts that cannot fail."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_asserts.py"


def check(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_sample.py"
    test.write_text(source)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(test)], capture_output=True, text=True, timeout=30
    )


SAMPLE = """
from dataclasses import dataclass


@dataclass
class Thing:
    n: int


def make() -> Thing:
    return Thing(1)


def many() -> list[Thing]:
    return [Thing(1)]


def maybe() -> Thing | None:
    return None


async def test_sample():
    {body}
"""


def test_an_assert_on_an_object_that_is_always_true_is_flagged(tmp_path: Path) -> None:
    for body, flagged in (
        ("thing = make()\n    assert thing", "`assert thing` cannot fail"),
        ("[thing] = many()\n    assert thing", "`assert thing` cannot fail"),
        ("assert make()", "`assert make()` cannot fail"),
        ("assert not make()", "`assert not make()` cannot pass"),
    ):
        result = check(tmp_path, SAMPLE.format(body=body))
        assert result.returncode == 1, body
        assert f"{flagged}: it is a Thing, which is always true" in result.stdout, result.stdout


def test_asserts_that_can_fail_pass(tmp_path: Path) -> None:
    for body in (
        "thing = make()\n    assert thing.n",
        "thing = maybe()\n    assert thing",
        "thing = make()\n    thing = 0\n    assert thing",
    ):
        result = check(tmp_path, SAMPLE.format(body=body))
        assert (result.returncode, result.stdout) == (0, ""), body
