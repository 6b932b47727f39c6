"""The package's layering: lower layers never import higher ones, and the simulator's side
loads without torch.

Layers, bottom up: shapes, files and definitions (`plan`, `sched`, `serve`, `metrics`, `io`, `trace`,
`policy`, `costmodel`, `profile.format`, `model.config`); the scenario both interpreters replay
(`scenario`); the two interpreters (`sim` prices plans, `engine` executes them; neither imports
the other, and `sim` never imports `model`); the applications on top (`validate`, `whatif`,
`capacity`, `sweep`, `report`, `figures`), then `cli` and `dashboards`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eesim"
APPS = ("eesim.validate", "eesim.whatif", "eesim.capacity", "eesim.sweep", "eesim.report",
        "eesim.figures", "eesim.cli", "dashboards")
FORBIDDEN = {
    "eesim.plan": ("eesim.sim", "eesim.engine", "eesim.model", "eesim.scenario", "eesim.profile",
                   "eesim.costmodel", *APPS),
    "eesim.scenario": ("eesim.sim", "eesim.engine", "eesim.model", "eesim.profile.bench", *APPS),
    "eesim.sim": ("eesim.engine", "eesim.model", "eesim.profile.bench", *APPS),
    "eesim.engine": ("eesim.sim", *APPS),
    "eesim.costmodel": ("eesim.sim", "eesim.engine", "eesim.scenario", "eesim.profile.bench", *APPS),
    "eesim.sched": ("eesim.sim", "eesim.engine", "eesim.model", "eesim.scenario", *APPS),
    "eesim.serve": ("eesim.sim", "eesim.engine", "eesim.model", "eesim.scenario", *APPS),
    "eesim.metrics": ("eesim.sim", "eesim.engine", "eesim.model", "eesim.scenario", *APPS),
    "eesim.profile.analytic": ("eesim.profile.bench", "eesim.engine", "eesim.sim", *APPS),
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every eesim module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("eesim", "dashboards")}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        for layer, forbidden in FORBIDDEN.items():
            if not _within(module, layer):
                continue
            for name in sorted(imports(path)):
                if any(_within(name, f) for f in forbidden) and not _within(name, layer):
                    bad.append(f"{module} imports {name}")
    return bad


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "eesim" / "sim"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from eesim.engine.measure import measure\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "eesim")
    assert violations() == ["eesim.sim.bad imports eesim.engine.measure",
                            "eesim.sim.bad imports eesim.engine.measure.measure"]


@pytest.mark.parametrize("module", ["eesim.cli", "eesim.sim.run", "eesim.whatif", "eesim.capacity",
                                    "eesim.sweep", "eesim.profile.analytic", "eesim.scenario.request"])
def test_the_simulators_side_loads_without_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_modules_stay_small():
    """A module is one idea (STYLE.md): none in the package is over 400 lines."""
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
