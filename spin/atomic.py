"""Atomic file writes: a temporary file in the same folder, fsync, rename, fsync the folder.

A crash, a kill or a full disk leaves either the old complete file or the new one, never half
of one, and a full disk is an ``OSError`` (``ENOSPC``), not a crash: HDF5 files are built in
memory (:func:`hdf5_bytes`) and written with Python's file I/O, because the HDF5 library can
crash the process when a write fails half-way.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_hdf5",
    "atomic_write_text",
    "fsync_directory",
    "hdf5_bytes",
    "write_all_or_none",
]

TMP_SUFFIX = ".tmp"
"""Suffix of the temporary file next to the target (``PATH.tmp``)."""


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some platforms (Windows) cannot open folders; nothing to sync there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on ``PATH.tmp``, fsync it, rename it to ``path``, fsync the
    folder; a failure removes the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def hdf5_bytes(fill: Callable[[object], None]) -> bytes:
    """The bytes of an HDF5 file that ``fill(h5py.File)`` writes, built in memory."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    return buffer.getvalue()


def atomic_write_hdf5(path: str | os.PathLike, fill: Callable[[object], None]) -> Path:
    """An HDF5 file written atomically: built in memory by ``fill``, then written as bytes."""
    return atomic_write_bytes(path, hdf5_bytes(fill))


def write_all_or_none(writers: list[Callable[[], Path]]) -> list[Path]:
    """Run writers that each write one file atomically and return its path; if one fails,
    remove the files the earlier ones wrote (a report is complete or absent) and re-raise."""
    written: list[Path] = []
    try:
        for write in writers:
            written.append(write())
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    return written
