"""Pick an OpenGL backend for MuJoCo before mujoco is imported.

Rules, in order:
1. ``MUJOCO_GL`` already set to a value MuJoCo takes: respected as is (any other value is ignored with a warning,
   as MuJoCo's import would raise on it).
2. A display exists (``DISPLAY`` or ``WAYLAND_DISPLAY``), or not Linux: left unset (GLFW window).
3. Headless Linux: ``egl`` if an EGL context can really be made, else ``osmesa``.

Creating a context is the only reliable test (EGL libraries can be installed yet have no
usable device), so the probe runs once in a subprocess and its answer is cached per machine
in ``~/.cache/composable-skills/gl-backend.json``. Delete that file to probe again.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

from .files import atomic_write_bytes

_PROBE = (
    "import mujoco\n"
    "ctx = mujoco.GLContext(8, 8)\n"
    "ctx.make_current()\n"
    "ctx.free()\n"
)
_CANDIDATES = ("egl", "osmesa")
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "composable-skills" / "gl-backend.json"

RENDER_INSTALL_HINT = (
    "Headless rendering needs an OpenGL backend. On Debian/Ubuntu install one of:\n"
    "  sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri   # MUJOCO_GL=egl\n"
    "  sudo apt-get install libosmesa6                             # MUJOCO_GL=osmesa"
)


def _context_works(backend: str) -> bool:
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _cache_key() -> str:
    return f"{platform.node()}|{sys.executable}"


def _read_cache() -> dict:
    try:
        return json.loads(_CACHE.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(entries: dict) -> None:
    try:
        atomic_write_bytes(_CACHE, json.dumps(entries).encode("utf-8"))
    except OSError:
        pass


def known_values() -> tuple[str, ...]:
    """The ``MUJOCO_GL`` values MuJoCo's bindings accept on this system (their import raises on any other)."""
    system = platform.system()
    extra = {"Linux": ("glx", "egl", "osmesa"), "Windows": ("wgl",), "Darwin": ("cgl",)}.get(system, ())
    return ("disable", "disabled", "off", "false", "0", "enable", "enabled", "on", "true", "1", "glfw", *extra)


def headless() -> bool:
    """True when no display is available for a GLFW window."""
    if platform.system() != "Linux":
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


UNAVAILABLE_REASON = ""  # why no backend was chosen on a headless machine (for the error message)


def choose_backend() -> str | None:
    """Set ``MUJOCO_GL`` for this process if needed and return the backend in use."""
    global UNAVAILABLE_REASON
    given = os.environ.get("MUJOCO_GL", "").lower().strip()
    if given and given not in known_values():
        # MuJoCo would refuse it at import (a RuntimeError, even where nothing renders): chosen as if unset, and said
        warnings.warn(f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} is not a value MuJoCo takes here ({', '.join(known_values())}); "
                      "ignored, a backend is chosen as if it were unset", stacklevel=2)
        del os.environ["MUJOCO_GL"]
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if not headless():
        return None
    if "mujoco" in sys.modules:
        UNAVAILABLE_REASON = ("mujoco (or dm_control) was imported before envs, too late to choose a backend: "
                              "import envs first, or set MUJOCO_GL=egl (or osmesa) before starting Python")
        return None
    cache = _read_cache()
    backend = cache.get(_cache_key())
    if backend not in _CANDIDATES:
        backend = next((b for b in _CANDIDATES if _context_works(b)), "disabled")
        cache[_cache_key()] = backend
        _write_cache(cache)
    if backend == "disabled":
        # Physics still works; rendering raises RenderingUnavailable with RENDER_INSTALL_HINT.
        UNAVAILABLE_REASON = "no display, and neither EGL nor OSMesa could create a context.\n" + RENDER_INSTALL_HINT
        return None
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend
