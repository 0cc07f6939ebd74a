"""Reading ``.npz`` files without trusting them.

``np.load(path)`` reads an archive member when it is first accessed and allocates what its
header declares: a 1 MB file whose compressed member declares a 3 GB array (a "zip bomb"),
or which holds keys nobody uses, costs that memory. :func:`read_npz` reads only the keys
asked for, checks each member's declared shape and dtype from its header before reading it,
and refuses object arrays (which numpy can only unpickle).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = ["MAX_NPZ_BYTES", "NpzError", "NpzObjectArrayError", "declared_arrays", "read_npz"]

MAX_NPZ_BYTES = 1 << 30
"""Most bytes the arrays read from one ``.npz`` may declare in all (1 GiB)."""


class NpzError(ValueError):
    """An ``.npz`` file is not a readable archive, or declares arrays it may not."""


class NpzObjectArrayError(NpzError):
    """An ``.npz`` member holds Python objects, which numpy can only unpickle."""


def declared_arrays(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of every array in an ``.npz``, from the member headers
    alone (nothing is decompressed beyond the headers)."""
    path = Path(path)
    found = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                found[name[: -len(".npy")]] = (tuple(int(n) for n in shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise NpzError(f"{path}: not a readable .npz archive ({error})") from None
    return found


def read_npz(
    path: str | os.PathLike,
    keys: Iterable[str] | None = None,
    max_bytes: int = MAX_NPZ_BYTES,
    check: Callable[[str, tuple[int, ...], np.dtype], str | None] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (those present; all when None) of an ``.npz``, after checking
    their headers: no object arrays, at most ``max_bytes`` declared in all, and
    ``check(key, shape, dtype)`` returning None (or a message naming what is wrong).

    Raises:
        FileNotFoundError: no such file. NpzError: a check failed, naming the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a regular file)")
    declared = declared_arrays(path)
    wanted = list(declared) if keys is None else [k for k in keys if k in declared]
    total = 0
    for key in wanted:
        shape, dtype = declared[key]
        if dtype.hasobject:
            raise NpzObjectArrayError(
                f"{path}: key {key!r} holds Python objects, which numpy loads only by "
                "unpickling; re-save its strings as fixed-width str (np.asarray(x, dtype=str))"
            )
        problem = check(key, shape, dtype) if check is not None else None
        if problem:
            raise NpzError(f"{path}: key {key!r} {problem}")
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if total > max_bytes:
            raise NpzError(
                f"{path}: key {key!r} declares an array of shape {shape} ({dtype}); the arrays "
                f"read would take {total / 2**30:.1f} GiB, more than the {max_bytes / 2**30:.1f} "
                "GiB allowed for one file"
            )
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in wanted}
