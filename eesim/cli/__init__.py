"""The `eesim` command line: a thin layer over the stage modules, one file per command group."""

from eesim.cli import demo, model, profile, simulate, trace, validate  # noqa: F401  (registers commands)
from eesim.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
