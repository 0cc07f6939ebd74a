"""Choose PyOpenGL's offscreen platform (EGL or OSMesa) before pyrender is imported.

PyOpenGL fixes its platform from the ``PYOPENGL_PLATFORM`` environment variable the
first time ``OpenGL`` is imported, and a platform that fails to load cannot be swapped
out within the same process. So each candidate is probed in a short subprocess that
renders an empty 8x8 scene; the first one that works is written to
``PYOPENGL_PLATFORM`` and cached for the rest of the process.

Call :func:`select_backend` before ``import pyrender``; our rendering code imports
pyrender lazily inside functions for that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys

PLATFORM_ENV_VAR = "PYOPENGL_PLATFORM"
# Tried in this order: EGL works with the Mesa libraries of most base images (and with
# GPU drivers); OSMesa is the pure-software fallback.
CANDIDATE_PLATFORMS = ("egl", "osmesa")
# A probe imports pyrender and renders once: ~1 s on a slow CPU.
PROBE_TIMEOUT_S = 60.0

_PROBE_SCRIPT = """
import numpy as np
import pyrender
renderer = pyrender.OffscreenRenderer(8, 8)
scene = pyrender.Scene()
scene.add(pyrender.PerspectiveCamera(yfov=1.0), pose=np.eye(4))
color, depth = renderer.render(scene)
assert color.shape[:2] == (8, 8), color.shape
renderer.delete()
"""

_FIX_HINT = (
    "To fix: install a software OpenGL, e.g. `apt-get install -y libosmesa6` (OSMesa) or "
    "`apt-get install -y libegl1 libgl1-mesa-dri` (EGL with Mesa), or set "
    f"{PLATFORM_ENV_VAR} to a platform that works on this machine (egl, osmesa, or glx "
    "with a display)."
)

_selected: str | None = None


class RenderBackendError(RuntimeError):
    """No offscreen OpenGL platform works in this process."""


def probe_platform(platform: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Try offscreen rendering with one PyOpenGL platform in a subprocess.

    Args:
        platform: a ``PYOPENGL_PLATFORM`` value, e.g. ``"egl"`` or ``"osmesa"``.
        timeout_s: seconds before the probe counts as failed.

    Returns:
        None if rendering worked, else a one-line reason for the failure.
    """
    env = {**os.environ, PLATFORM_ENV_VAR: platform}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def select_backend() -> str:
    """Pick the offscreen OpenGL platform for this process and export it.

    A ``PYOPENGL_PLATFORM`` set by the user is respected as is. Otherwise EGL, then
    OSMesa, are probed in subprocesses and the first that works is written to
    ``os.environ``. The answer is cached, so later calls are free.

    Returns:
        The platform name in use, e.g. ``"egl"``.

    Raises:
        RenderBackendError: no candidate works, or OpenGL was already imported with no
            platform chosen (then PyOpenGL has fixed its platform and it can't be changed).
    """
    global _selected
    if _selected is not None:
        return _selected
    user_choice = os.environ.get(PLATFORM_ENV_VAR)
    if user_choice:
        _selected = user_choice
        return _selected
    if "OpenGL" in sys.modules:
        raise RenderBackendError(
            "OpenGL was imported before spin chose an offscreen platform, so PyOpenGL has "
            f"already fixed its platform. Call spin.render.backend.select_backend() before "
            f"importing pyrender or OpenGL, or set {PLATFORM_ENV_VAR} (e.g. egl or osmesa) "
            "in the environment."
        )
    failures = {}
    for platform in CANDIDATE_PLATFORMS:
        reason = probe_platform(platform)
        if reason is None:
            os.environ[PLATFORM_ENV_VAR] = platform
            _selected = platform
            return _selected
        failures[platform] = reason
    tried = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
    raise RenderBackendError(f"No offscreen OpenGL platform works (tried {tried}). {_FIX_HINT}")


def backend_error_hint(platform: str, error: BaseException) -> RenderBackendError:
    """Wrap a failure of pyrender under ``platform`` into an error that says how to fix it."""
    return RenderBackendError(
        f"Offscreen rendering with {PLATFORM_ENV_VAR}={platform} failed: "
        f"{type(error).__name__}: {error}. If you set {PLATFORM_ENV_VAR} yourself, unset it "
        f"to let spin pick a platform that works. {_FIX_HINT}"
    )
