"""One file per message under the spool directory, named by its queue id.

Layout: `<dir>/<last two hex digits of the id>/<id>`, 256 folders so that no directory grows
huge; folders 0700, files 0600 (bodies are customers' mail). A body is durable when its file
and its folder are fsync'd: only then does the queue get its metadata, and only then does
the client get its 250. A file without queue metadata is an orphan of a transfer that never
ended in a 250 (`relay spool check` lists them; they are removed after a grace period).

Why files and not one journal with a group commit: measured on the development machine, a
5 KB body costs 0.7 ms (write, fsync of the file and of its folder) against 0.26 ms for an
append + fdatasync to one journal, but the fsync runs on a thread while the event loop serves
other sessions, a finished message is one unlink (a journal needs compaction and a second
index), a 20 MB body is written as it arrives (30 ms to fsync), and nothing of one message
can damage another. README, "The spool".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relay.private_files import make_private_dirs
from relay.spool.errors import SpoolError, SpoolMissing
from reputation.dkim import RelaxedBodyHash

__all__ = ["Incoming", "Spool", "Spooled"]

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_ID = re.compile(r"[0-9a-f]{8,40}(?:\.[a-z]+)?")
FREE_FRESH = 1.0
"""Seconds a reading of the disk's free space is trusted (`Spool.has_room`): at most a second
of this process's writes past `spool.min_free`, which is sized in hundreds of MB."""


@dataclass(frozen=True)
class Spooled:
    """A body written to the spool, and what acceptance needs without reading it again."""

    id: str
    size: int
    head: bytes
    """The header section, up to and including the empty line that ends it (capped)."""
    body_hash: str | None
    """DKIM relaxed body hash (base64 SHA-256), when asked for."""


class _FolderFds:
    """A descriptor per spool folder, opened once and kept, to fsync the folder after each
    new file in it: opening and closing it for every message cost two more system calls
    on the committing thread, each a handoff of the GIL with the event loop."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def fd(self, folder: Path) -> int:
        found = self._fds.get(folder)
        if found is not None:
            return found
        with self._lock:  # two committing threads may meet a new folder at once
            found = self._fds.get(folder)
            if found is None:
                found = self._fds[folder] = os.open(
                    folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                )
            return found


class _Unlinks:
    """Spool files to remove in one hop to a thread, and the outcome of each (in order)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ids: list[str] = []
        self.started = False
        self.done: asyncio.Future[list[bool | SpoolError]] = loop.create_future()


class Spool:
    def __init__(self, root: Path, *, head_limit: int = 1 << 20, fsync: bool = True) -> None:
        self.root = Path(root)
        self._head_limit = head_limit
        self._fsync = fsync
        self._ready: set[str] = set()
        self._folder_fds = _FolderFds()
        self._free = 0
        self._free_at = -math.inf
        self._unlinks: _Unlinks | None = None
        """Removals waiting for the thread (`discard`)."""
        self._unlinking: set[asyncio.Task[None]] = set()
        self._last_unlink: asyncio.Future[list[bool | SpoolError]] | None = None

    def path(self, message_id: str) -> Path:
        if not _ID.fullmatch(message_id):
            raise SpoolError(f"not a spool id: {message_id[:60]!r}")
        return self.root / message_id[-2:] / message_id

    def _folder(self, message_id: str) -> Path:
        folder = self.path(message_id).parent
        if folder.name not in self._ready:
            make_private_dirs(folder)  # the spool itself too: bodies are customers' mail
            self._ready.add(folder.name)
        return folder

    def receive(self, message_id: str, *, hash_body: bool = False) -> Incoming:
        """A new body, written as it arrives (the caller commits or aborts it). Its file is
        created when the body outgrows `HELD` bytes, else by `commit` (see `Incoming`)."""
        self._folder(message_id)
        return Incoming(
            message_id,
            self.path(message_id),
            head_limit=self._head_limit,
            fsync=self._fsync,
            hasher=RelaxedBodyHash() if hash_body else None,
            folders=self._folder_fds,
        )

    async def write(self, message_id: str, data: bytes) -> Spooled:
        """A whole body at once (notices, the CLI): durable when this returns."""
        incoming = self.receive(message_id)
        try:
            incoming.write(data)
            return await incoming.commit()
        except BaseException:
            incoming.abort()
            raise

    async def read(self, message_id: str) -> bytes:
        """The body (a large one read on a thread). By descriptor: `Path.read_bytes` made
        a file object, a stat, an isatty ioctl, a seek and a read past the end besides."""
        path = self.path(message_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                if size < 256 * 1024:
                    return _read_all(fd, size)
                return await asyncio.to_thread(_read_all, fd, size)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise SpoolMissing(f"message {message_id}: its body is not in the spool") from None
        except OSError as exc:
            raise SpoolError(f"message {message_id}: cannot read the spool: {exc}") from None

    async def read_prefix(self, message_id: str, limit: int) -> bytes:
        """The first `limit` bytes (what content checks look at). Only as many as the file
        holds are asked for: a buffer of `limit` (4 MB) shrunk to a 5 KB body cost an mmap,
        an mremap and a munmap."""

        def read() -> bytes:
            fd = os.open(self.path(message_id), os.O_RDONLY | os.O_CLOEXEC)
            try:
                return _read_all(fd, min(limit, os.fstat(fd).st_size))
            finally:
                os.close(fd)

        try:
            return await asyncio.to_thread(read)
        except FileNotFoundError:
            raise SpoolMissing(f"message {message_id}: its body is not in the spool") from None
        except OSError as exc:
            raise SpoolError(f"message {message_id}: cannot read the spool: {exc}") from None

    def exists(self, message_id: str) -> bool:
        return self.path(message_id).exists()

    def remove(self, message_id: str) -> bool:
        """Forget a body (its message ended). False when it was not there."""
        try:
            os.unlink(self.path(message_id))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SpoolError(f"message {message_id}: cannot remove it: {exc.strerror}") from None
        return True

    async def discard(self, message_id: str) -> bool:
        """`remove`, on a thread: an unlink waits for the file system's journal, which the
        fsyncs of other messages keep busy (measured: 0.1 ms alone, several under load),
        and the event loop must not wait with it.

        Removals asked for while one thread is at it wait for it and then go together on
        the next one: one hop to a thread for many messages ended at once, none of them
        later than it would be one by one (the hops queued on the same threads anyway)."""
        loop = asyncio.get_running_loop()
        batch = self._unlinks
        if batch is None or batch.loop is not loop or batch.started:
            batch = self._unlinks = _Unlinks(loop)
            task = loop.create_task(self._unlink(batch))
            self._unlinking.add(task)
            task.add_done_callback(self._unlinking.discard)
        at = len(batch.ids)
        batch.ids.append(message_id)
        outcome = (await asyncio.shield(batch.done))[at]
        if isinstance(outcome, SpoolError):
            raise outcome
        return outcome

    async def _unlink(self, batch: _Unlinks) -> None:
        """Remove a batch once the one before it is done (it collects ids meanwhile)."""
        before, self._last_unlink = self._last_unlink, batch.done
        try:
            if before is not None and before.get_loop() is batch.loop:
                await asyncio.wait([before])
            batch.started = True
            outcomes = await asyncio.to_thread(self._remove_all, batch.ids)
        except asyncio.CancelledError:  # the loop is closing: its waiters are cancelled too
            batch.done.cancel()
            raise
        except Exception as exc:  # every waiter gets it
            batch.done.set_exception(exc)
            batch.done.exception()  # retrieved: nobody may be waiting any more
        else:
            batch.done.set_result(outcomes)

    def _remove_all(self, message_ids: list[str]) -> list[bool | SpoolError]:
        outcomes: list[bool | SpoolError] = []
        for message_id in message_ids:
            try:
                outcomes.append(self.remove(message_id))
            except SpoolError as exc:
                outcomes.append(exc)
        return outcomes

    def entries(self) -> Iterator[tuple[str, float, int]]:
        """(id, modification time, size) of every body in the spool."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file() and _ID.fullmatch(entry.name):
                    stat = entry.stat()
                    yield entry.name, stat.st_mtime, stat.st_size

    def free_bytes(self) -> int:
        make_private_dirs(self.root)
        return shutil.disk_usage(self.root).free

    def has_room(self, min_free: int) -> bool:
        """Whether the spool's disk keeps more than `min_free` bytes free. A reading is
        reused for `FREE_FRESH` seconds when it has room (measured: reading it for every
        message, a statvfs and the folder checks, was about 2% of the event loop's time
        under load, waiting on a file system busy with fsyncs); a refusal is always decided
        on a fresh one."""
        now = time.monotonic()
        if now - self._free_at < FREE_FRESH and self._free >= min_free:
            return True
        self._free, self._free_at = self.free_bytes(), now
        return self._free >= min_free


HELD = 128 * 1024
"""Bytes of a body held in memory before its file is created: a usual message is created,
written and made durable in one step on a thread at `commit` (one hop to a thread per
message instead of two: each hop costs thread and GIL handoffs, futex calls and context
switches, measured at several percent of the relay's CPU); a larger one streams to its file
from then on."""


class Incoming:
    """A body being received. Its first `HELD` bytes are held in memory; past them the file
    is created and pieces are written as they come (to the page cache, from the event loop:
    a 64 KB write is tens of microseconds). `commit` makes it durable on a thread (creating
    and writing the file first when it was held whole); `abort` removes it."""

    def __init__(
        self,
        message_id: str,
        path: Path,
        *,
        head_limit: int,
        fsync: bool,
        hasher: RelaxedBodyHash | None,
        folders: _FolderFds,
    ) -> None:
        self.id = message_id
        self.path = path
        self._folders = folders
        self._fd: int | None = None
        self._held: bytearray | None = bytearray()
        """What was received while the file does not exist (None once it does)."""
        self._closed = False
        self._committing: asyncio.Future[None] | None = None
        self._head_limit = head_limit
        self._fsync = fsync
        self._hasher = hasher
        self._head = bytearray()
        self._in_head = True
        self.head_overflow = False
        """The header section is longer than the limit (the message is refused)."""
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._closed:
            raise SpoolError(f"{self.id}: written after it was closed")
        held = self._held
        if held is not None and len(held) + len(data) <= HELD:
            held += data
        else:
            if held is not None:  # past what is held in memory: to the file from now on
                self._fd = _create(self.path)
                self._held = None
                _write_all(self._fd, held)
            assert self._fd is not None
            _write_all(self._fd, data)
        self.size += len(data)
        if self._in_head:
            data = self._take_head(data)
        if data and self._hasher is not None:
            self._hasher.update(data)

    def _take_head(self, data: bytes) -> bytes:
        """Collect the header section; returns what of `data` is body."""
        start = max(0, len(self._head) - 3)  # the end may straddle two pieces
        self._head += data
        match = _HEAD_END.search(self._head, start)
        if match is None:
            if len(self._head) > self._head_limit:  # refused at the end of DATA
                self._in_head = False
                self.head_overflow = True
                del self._head[self._head_limit :]
            return b""
        self._in_head = False
        body = bytes(self._head[match.end() :])
        del self._head[match.end() :]
        return body

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    async def commit(self) -> Spooled:
        if self._closed:
            raise SpoolError(f"{self.id}: committed twice")
        self._closed = True
        fd, held = self._fd, self._held
        self._fd = self._held = None
        job = asyncio.get_running_loop().run_in_executor(
            None, _persist, self.path, fd, held, self._fsync, self._folders
        )
        self._committing = job
        try:
            # Shielded: a cancelled caller aborts, and the file the thread goes on to make
            # is removed when it is done (`abort`).
            await asyncio.shield(job)
        except OSError as exc:  # created but not durable: it goes
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise SpoolError(f"cannot make {self.id} durable: {exc.strerror}") from None
        return Spooled(
            self.id,
            self.size,
            bytes(self._head),
            self._hasher.b64digest() if self._hasher is not None else None,
        )

    def abort(self) -> None:
        """Remove the body: not received whole, or its message was refused."""
        self._closed = True
        fd, self._fd, self._held = self._fd, None, None
        if fd is not None:
            os.close(fd)
        job = self._committing
        if job is not None and not job.done():  # the thread is still at it: remove after
            job.add_done_callback(self._remove_made)
        elif fd is not None or (job is not None and self._made(job)):
            self._remove()

    def _remove_made(self, job: asyncio.Future[None]) -> None:
        if self._made(job):
            self._remove()

    @staticmethod
    def _made(job: asyncio.Future[None]) -> bool:
        """Whether a finished commit left a file: it did unless the file could not be
        created or written (`_persist` removed what it had made then)."""
        return not job.cancelled() and not isinstance(job.exception(), SpoolError)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _create(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(f"cannot create {path.name} in the spool: {exc.strerror}") from None


def _read_all(fd: int, size: int) -> bytes:
    """The file's `size` bytes (a spool file does not change once committed)."""
    first = os.read(fd, size)
    if len(first) == size or not first:
        return first
    pieces = [first]
    got = len(first)
    while got < size:
        piece = os.read(fd, size - got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise SpoolError(f"cannot write to the spool: {exc.strerror}") from None


def _persist(
    path: Path, fd: int | None, held: bytearray | None, fsync: bool, folders: _FolderFds
) -> None:
    """On a thread: the file created and written when it was held whole, then made durable
    (the file, and its folder for its name), then closed. Raises SpoolError when the file
    could not be created or written (nothing of it is left), OSError when it could not be
    made durable (the caller removes it)."""
    if fd is None:
        fd = _create(path)
        try:
            _write_all(fd, held or b"")
        except SpoolError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    try:
        if fsync:
            _sync(fd, folders.fd(path.parent))
    finally:
        os.close(fd)


def _sync(fd: int, folder_fd: int) -> None:
    os.fsync(fd)
    os.fsync(folder_fd)
