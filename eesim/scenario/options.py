"""Every option of a scenario, declared once: one pydantic model per concern, each field with its
default, bounds and description. `eesim simulate` and `eesim measure` take their flags and help
from these fields (eesim.cli.common.flag), the what-if question (eesim.whatif.WhatIf) reuses
them, and tests/test_options.py checks that no command declares one again with another default.

The concerns: the load (`LoadOptions`), the scheduler (`eesim.sched.SchedulerConfig`), the
strategy (`eesim.plan.strategies.StrategyConfig`), and serving around them (`ServingOptions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # options load light (the CLI declares its flags from them)
    from eesim.scenario.workload import Workload

DEFAULT_REQUESTS = 1000


class LoadOptions(BaseModel):
    """What arrives: Poisson or gamma arrivals at a rate, a closed loop of users, or a replayed
    Azure log (exactly one of rate, arrivals, concurrency), and the requests' lengths."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float | None = Field(None, gt=0, description="Poisson arrivals per second.")
    burstiness: float | None = Field(None, gt=0, description="Gamma arrivals with this "
                                                             "coefficient of variation.")
    arrivals: Literal["azure-code", "azure-conv"] | None = Field(
        None, description="Replay azure-code | azure-conv.")
    time_scale: float = Field(1.0, gt=0, description="Replay speed-up (2 = twice the load).")
    concurrency: int | None = Field(None, ge=1, description="Closed loop with N users.")
    requests: int | None = Field(None, ge=1, description=f"Requests (default: {DEFAULT_REQUESTS}; "
                                                         f"all of a replayed log).")
    prompt_len: int = Field(64, ge=1, description="Synthetic prompt length.")
    output_len: int = Field(128, ge=1, description="Synthetic output length.")
    max_prompt: int | None = Field(None, ge=1, description="Replay: clip prompts to this length.")
    max_output: int | None = Field(None, ge=1, description="Replay: clip outputs to this length.")
    task_mix: str | None = Field(None, description="e.g. prose=1,code=1,json=2 (default: even).")
    seed: int = Field(0, description="Seed for arrivals and request binding.")

    @model_validator(mode="after")
    def _one_load(self) -> LoadOptions:
        given = [n for n in ("rate", "arrivals", "concurrency") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --rate, --arrivals, --concurrency (got {given})")
        return self

    def mix(self) -> dict[str, float] | None:
        """The task mix as {task: share}, or None (even over the trace's tasks)."""
        if not self.task_mix:
            return None
        try:
            return {k.strip(): float(v) for k, v in (p.split("=") for p in self.task_mix.split(","))}
        except ValueError as exc:
            raise ValueError(f"--task-mix {self.task_mix!r}: expected task=share,... ") from exc

    def workload(self) -> Workload:
        from eesim.scenario.workload import azure, bursty, closed_loop, poisson

        n = self.requests or DEFAULT_REQUESTS
        lengths = {"prompt": (self.prompt_len,) * 2, "output": (self.output_len,) * 2}
        if self.arrivals:
            return azure(self.arrivals, self.requests, self.time_scale, self.max_prompt, self.max_output)
        if self.concurrency:
            return closed_loop(self.concurrency, n, self.seed, **lengths)
        if self.burstiness:
            return bursty(self.rate, n, self.seed, self.burstiness, **lengths)
        return poisson(self.rate, n, self.seed, **lengths)


class ServingOptions(BaseModel):
    """What surrounds the replicas: their KV memory, how many and how requests reach them, and
    the early-exit safety valves (a full-depth shadow stream, a kill switch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_memory_gib: float | None = Field(None, gt=0, description="GiB for KV blocks (default: "
                                                                "device memory less weights, 90%).")
    replicas: int = Field(1, ge=1, description="Replicas behind the router.")
    router: Literal["round-robin", "least-work"] = Field("round-robin",
                                                         description="round-robin | least-work")
    map_depth: bool = Field(False, description="Map a trace of another depth by relative depth.")
    shadow_rate: float = Field(0.0, ge=0, le=1, description="Share of early-exited tokens also run "
                                                            "to full depth (drift watch).")
    kill_at: float | None = Field(None, ge=0, description="Kill switch: exits off from this "
                                                          "simulated second.")


def kv_capacity(cost, gib: float | None) -> int:
    """Bytes for KV blocks: as given, else 90% of the device's memory left by the weights."""
    if gib is not None:
        return int(gib * 2**30)
    mem = cost.meta.memory
    free = 0.9 * (mem["device_memory_bytes"] - mem["weights_bytes"])
    if free <= 0:
        raise ValueError(f"{cost.profile.where}: the weights ({mem['weights_bytes'] / 2**30:.1f} "
                         f"GiB) leave no memory for KV; give --kv-memory")
    return int(free)
