"""`eesim measure`: a scenario executed on the reference model, its outputs on disk (the same
files as `eesim simulate`, plus the realised trace)."""

from __future__ import annotations

from pathlib import Path

import torch

from eesim.engine.measure import measure, realised_trace
from eesim.io import write_json_atomic, write_parquet_atomic
from eesim.metrics import RunResult
from eesim.model import load_checkpoint
from eesim.profile.env import environment
from eesim.scenario.request import SimulationRequest, prepare
from eesim.trace import write_trace


def run_measurement(req: SimulationRequest, out: Path | None = None) -> RunResult:
    """The same request measured on the real model (the profile must be of the reference
    model): the per-request table and summary, plus the environment, in the same files."""
    cost, behaviour, workload, strategy, sched = prepare(req)
    ckpt = load_checkpoint()
    if cost.meta.model_sha256 != ckpt.sha256:
        raise ValueError(f"{req.profile}: eesim measure runs the reference model "
                         f"({ckpt.sha256[:12]}…); this profile is of '{cost.meta.model_name}'")
    realised: dict = {}
    requests, summary = measure(ckpt, behaviour, workload, strategy, sched, task_mix=req.load.mix(),
                                seed=req.load.seed, realised=realised)
    summary.update({"measured": True, "profile": cost.label, "strategy": strategy.model_dump(),
                    "workload": workload.source, "request": req.model_dump(mode="json"),
                    "environment": environment(torch.device("cpu"), torch.float32),
                    "extrapolated": False, "depth_mapped_from": None})
    result = RunResult(requests, summary)
    if out is not None:
        write_parquet_atomic(requests, out / "requests.parquet", "{}")
        write_json_atomic(out / "summary.json", summary)
        write_trace(realised_trace(realised, requests, ckpt.sha256, ckpt.model.cfg.n_layers, strategy),
                    out / "realised.parquet")
    return result
