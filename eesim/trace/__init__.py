"""Exit traces: record from a model, import from other tools, load and validate."""

from eesim.trace.schema import (
    REFERENCE_TRACE,
    ExitTrace,
    TraceError,
    TraceMeta,
    read_trace,
    write_trace,
)

__all__ = ["REFERENCE_TRACE", "ExitTrace", "TraceError", "TraceMeta", "read_trace", "write_trace"]
