"""Lazy access to the compiled OpenVDB core, so that ``import hyprvdb`` never needs it."""

from __future__ import annotations

import functools
from types import ModuleType

from ._errors import MissingExtensionError


@functools.cache
def core() -> ModuleType:
    """Import and return ``hyprvdb._core``; raise a clear error when it was not built."""
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MissingExtensionError(
            "hyprvdb's OpenVDB core (hyprvdb._core) is not available: the write path "
            "(SparseAdapter, TemporalAdapter) needs it. Build it with `bash scripts/setup.sh` "
            "or `pip install .` on a machine with OpenVDB (Debian: libopenvdb-dev). "
            f"Import error: {exc}"
        ) from exc
    return _core
