"""Exit traces: record from a model, import from other tools, load and validate.

Names are imported on first use (PEP 562), so that light modules of this package (token
classes) load without pandas.
"""

from __future__ import annotations

import importlib

_NAMES = ("REFERENCE_TRACE", "ExitTrace", "TraceError", "TraceMeta", "read_trace", "write_trace")

__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'eesim.trace' has no attribute {name!r}")
    value = getattr(importlib.import_module("eesim.trace.schema"), name)
    globals()[name] = value
    return value
