"""Top hot spots of a py-spy raw profile (`bench.scenarios --profile` writes one).

Self time: samples whose innermost frame is the function. Inclusive: samples with the
function anywhere on the stack (counted once per sample). Shares are of the event loop's
samples (the thread that runs every session and delivery); the thread pool (argon2 password
checks) is reported on its own line. py-spy counts a pool thread waiting for work as busy,
so all-thread shares would mislead.

    .venv/bin/python -m bench.hotspots [var/bench/profile-relay.txt] [--top 25] [--only relay/]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `file.py-relative:func`, shortened to the package."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match.group('func')}"


LOOP = "asyncio/base_events.py:BaseEventLoop.run_forever"
POOL_WORK = "concurrent/futures/thread.py:_WorkItem.run"


def analyse(path: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """(loop samples, self, inclusive, pool work by innermost-but-one frame)."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    pool: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if POOL_WORK in frames:
            inner = frames[frames.index(POOL_WORK) + 1 :]
            pool[inner[0] if inner else POOL_WORK] += count
            continue
        if LOOP not in frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own, inclusive, pool


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default="var/bench/profile-relay-e2e.txt")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--only", default="", help="inclusive list: only names containing this")
    options = parser.parse_args()
    total, own, inclusive, pool = analyse(Path(options.profile))
    print(f"{total} samples of the event loop thread")
    for name, count in pool.most_common(3):
        share = 100 * count / max(total, 1)
        print(f"thread pool: {name}: {count} samples ({share:.0f}% of the loop's)")
    print("\nself time:")
    for name, count in own.most_common(options.top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive time" + (f" ({options.only}*)" if options.only else "") + ":")
    shown = 0
    for name, count in inclusive.most_common():
        if options.only and options.only not in name:
            continue
        print(f"  {100 * count / total:5.1f}%  {name}")
        shown += 1
        if shown >= options.top:
            break
