"""How the relay's process treats its memory: a TLS read's buffer comes from the heap
(glibc), and the garbage collector walks what changes, not what was made at start."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from relay.app import give_back_large_blocks

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's"
)

TLS_READ = 256 * 1024
"""What uvloop's and asyncio's SSL layers ask for on every read (then shrink to what came)."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mapped_blocks() -> int:
    """Blocks this process holds from mmap right now."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)


@glibc_only
def test_a_tls_read_buffer_comes_from_the_heap_not_from_mmap() -> None:
    give_back_large_blocks()
    before = mapped_blocks()
    buffers = [bytearray(TLS_READ) for _ in range(4)]  # the SSL layers' read buffers
    assert mapped_blocks() == before, "each read would cost an mmap, an mremap and a munmap"
    del buffers


def test_the_collector_leaves_what_was_made_before_serving_out_of_its_walks() -> None:
    """In its own interpreter: freezing is for the life of the process."""
    import subprocess
    import sys

    code = (
        "import gc, relay.app\n"
        "relay.app.collect_less()\n"
        "print(gc.get_freeze_count(), gc.get_threshold()[0], gc.get_count()[2])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    frozen, young, old = map(int, out)
    assert frozen > 10_000, "the modules' objects are left out of full collections"
    assert young == 5000 and old == 0
