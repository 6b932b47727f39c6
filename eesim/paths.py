"""Where eesim's committed files are, and where runs write by default.

The committed evidence (traces/, profiles/, dashboards/) sits at the top of the repository,
beside the package, not inside it. Its root is `EESIM_ROOT` when that is set, else the checkout
the package was installed from (an editable install: the first folder above the package holding
pyproject.toml and traces/). A package installed without its checkout and without `EESIM_ROOT`
still imports; its committed paths then start with "$EESIM_ROOT-unset", so the first file it
cannot find names the variable.

Runs never write into the repository unless told to: every command's default output folder is
under `./eesim-out/` in the current directory (`OUT`).
"""

from __future__ import annotations

import os
from pathlib import Path

OUT = Path("eesim-out")


def _find_root() -> Path | None:
    given = os.environ.get("EESIM_ROOT")
    if given:
        return Path(given).expanduser().resolve()
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file() and (folder / "traces").is_dir():
            return folder
    return None


ROOT = _find_root()


def committed(*parts: str) -> Path:
    """A committed file or folder of the repository, e.g. committed("traces", "x.parquet")."""
    return (ROOT or Path("$EESIM_ROOT-unset")).joinpath(*parts)
