"""Where the relay's memory comes from (glibc): a TLS read's buffer from the heap, a big
message's blocks from mmap (given back when freed)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from relay.app import give_back_large_blocks

pytestmark = pytest.mark.skipif(
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


def test_a_tls_read_buffer_comes_from_the_heap_and_a_big_block_from_mmap() -> None:
    give_back_large_blocks()
    before = mapped_blocks()
    # The SSL layers' read buffers, each TLS_READ bytes when asked for.
    buffers = [bytearray(TLS_READ) for _ in range(4)]
    assert mapped_blocks() == before, "each read would cost an mmap, an mremap and a munmap"
    big = bytearray(2 << 20)  # a piece of a large message: given back when freed
    assert mapped_blocks() == before + 1
    del big, buffers
    assert mapped_blocks() == before
