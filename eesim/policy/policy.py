"""Exit policies: when a token may leave the network, as versioned model metadata.

A policy names a signal and, per task class, a threshold. A token exits at the first allowed exit
layer (at or after `min_layer`) whose signal passes the threshold and whose top-1 candidate is not
of a forbidden token class; the last layer always passes (the full-depth fallback).

| signal     | exits when                          | threshold means                  |
|------------|-------------------------------------|----------------------------------|
| `max_prob` | max softmax probability >= t        | confidence                       |
| `margin`   | top-1 minus top-2 probability >= t  | confidence gap                   |
| `entropy`  | entropy (nats) <= t                 | uncertainty ceiling              |
| `risk`     | calibrated P(exit != full) <= t     | tolerated risk per token         |
| `static`   | layer >= t                          | the fixed exit layer             |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eesim.io import write_json_atomic
from eesim.trace.tokenclass import TOKEN_CLASSES

Signal = Literal["max_prob", "margin", "entropy", "risk", "static"]
SIGNALS: tuple[str, ...] = ("max_prob", "margin", "entropy", "risk", "static")
HIGHER_PASSES = {"max_prob": True, "margin": True, "entropy": False, "risk": False, "static": True}
DEFAULT_TASK = "*"


class PolicyError(ValueError):
    """A policy that cannot be used here; the message names the file, field and value."""


class RiskModel(BaseModel):
    """Per exit layer, a logistic model of P(exit top-1 != full-depth top-1).

    Features are (max_prob, entropy, margin); `coef[layer]` holds the bias then three weights.
    """

    model_config = ConfigDict(extra="forbid")

    coef: dict[int, list[float]] = Field(description="exit layer -> [bias, w_maxp, w_ent, w_margin]")

    def risk(self, layer: int, max_prob: np.ndarray, entropy: np.ndarray,
             margin: np.ndarray) -> np.ndarray:
        b, w1, w2, w3 = self.coef[layer]
        z = b + w1 * max_prob + w2 * entropy + w3 * margin
        return 1.0 / (1.0 + np.exp(-z))


class ExitPolicy(BaseModel):
    """An exit controller calibrated for one model (by sha256)."""

    model_config = ConfigDict(extra="forbid")

    signal: Signal = Field(description="Confidence signal the thresholds apply to.")
    thresholds: dict[str, float] = Field(
        description="Task class -> threshold; '*' applies to tasks not listed.")
    min_layer: int = Field(1, ge=1, description="No exit before this layer.")
    forbidden_classes: list[str] = Field(
        default_factory=list, description="Token classes never emitted from an early exit.")
    model_sha256: str = Field(description="The model this policy was calibrated for.")
    n_layers: int = Field(ge=1, description="Layers of that model.")
    risk_model: RiskModel | None = Field(None, description="Required for signal 'risk'.")
    calibration: dict = Field(default_factory=dict, description="How the thresholds were chosen.")

    @model_validator(mode="after")
    def _consistent(self) -> ExitPolicy:
        if self.signal == "risk" and self.risk_model is None:
            raise ValueError("signal 'risk' needs field 'risk_model'")
        unknown = sorted(set(self.forbidden_classes) - set(TOKEN_CLASSES))
        if unknown:
            raise ValueError(f"forbidden_classes has unknown token classes {unknown}; "
                             f"known: {list(TOKEN_CLASSES)}")
        if self.min_layer > self.n_layers:
            raise ValueError(f"min_layer={self.min_layer} exceeds n_layers={self.n_layers}")
        return self

    def threshold(self, task: str) -> float:
        """The threshold for a task class; tasks without one (and no '*') never exit early."""
        default = self.thresholds.get(DEFAULT_TASK, np.inf if HIGHER_PASSES[self.signal] else -np.inf)
        return self.thresholds.get(task, default)

    def check_model(self, sha256: str, where: str = "trace") -> None:
        """Refuse to apply this policy to a model other than the one it was calibrated for."""
        if sha256 != self.model_sha256:
            raise PolicyError(
                f"policy was calibrated for model {self.model_sha256[:16]}…, but the {where} comes "
                f"from model {sha256[:16]}…; recalibrate (eesim calibrate) for this model")

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.model_dump(mode="json"))


def never_exit(model_sha256: str, n_layers: int) -> ExitPolicy:
    """The full-depth baseline as a policy: nothing passes before the last layer."""
    return ExitPolicy(signal="static", thresholds={DEFAULT_TASK: n_layers},
                      model_sha256=model_sha256, n_layers=n_layers)


def load_policy(path: Path | str) -> ExitPolicy:
    """Read a policy JSON file; errors name the file and the offending field."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: no such policy file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return ExitPolicy.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(policy)"
        raise PolicyError(f"{path}: field '{field}': {err['msg']} (got {err.get('input')!r:.80})") from exc
