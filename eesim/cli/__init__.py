"""The `eesim` command line: a thin layer over the stage modules, one file per command group."""

from eesim.cli import capacity, dashboard, demo, model, profile, simulate, trace, validate  # noqa: F401  (registers commands)
from eesim.cli.common import app


def main(argv: list[str] | None = None) -> None:
    import sys

    from eesim.cli.capacity import LOCAL_RAY

    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):  # `--ray` without an address: a local Ray instance
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args.insert(i + 1, LOCAL_RAY)
            break
    app(args)


__all__ = ["app", "main"]
