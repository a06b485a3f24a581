"""Crash-safe file writing for the whole package: write beside the target, flush to disk, rename over it.

Every file tagseg writes (per-image outputs, run files, exports, database files, caches) goes
through :func:`write_atomically` or :func:`write_bytes_atomically`, so an interrupted run never
leaves a partial file that a resumed run would take for a finished one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: writers are not serialised between processes there.
    fcntl = None  # type: ignore[assignment]


def is_uri(text: str) -> bool:
    """Whether ``text`` names a file by URI (``s3://bucket/key``, ``file:///path``) rather than a local path."""
    scheme, separator, _ = text.partition("://")
    return bool(separator) and scheme.isidentifier()


def is_glob_pattern(text: str) -> bool:
    """Whether an input path is a glob pattern (``photos/*.jpg``, ``shots/**/img?.png``) to expand."""
    return bool(_GLOB_CHARS & set(text))


_GLOB_CHARS = frozenset("*?[")


def temporary_name(target: Path) -> Path:
    """A unique hidden name in ``target``'s folder (a rename within one folder is atomic)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def remove_interrupted_writes(target: Path) -> int:
    """Delete the temporary files that interrupted writes of ``target`` left beside it (a killed
    process cannot clean up after itself); returns how many. Call it only when no other writer of
    ``target`` is running."""
    leftovers = list(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def fsync_directory(directory: Path) -> None:
    """Make renames inside ``directory`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk and rename it to ``target``.

    If ``write`` fails or the process dies, ``target`` keeps its previous content (or stays absent).
    ``target``'s folder is created when missing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    try:
        write(temporary)
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(target.parent)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` atomically."""
    write_atomically(target, lambda path: path.write_bytes(data))


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as ``sha256:<hex>``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``lock_file`` (created if needed) while inside the block.

    With ``wait=False`` the block runs at once and receives False if another holder has the lock.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
        try:
            yield True
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
