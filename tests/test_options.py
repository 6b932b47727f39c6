"""One declaration per option: every field of a scenario's concerns has a flag on `eesim
simulate` (and `eesim measure`) with the field's own default and help, and no other command or
question declares the same option with another default."""

from __future__ import annotations

import click
import pytest
import typer.main
from typer.testing import CliRunner

from eesim.cli import app
from eesim.cli.common import FLAG_NAMES
from eesim.plan.strategies import StrategyConfig
from eesim.scenario.options import LoadOptions, ServingOptions
from eesim.sched import SchedulerConfig
from eesim.whatif import WhatIf

CONCERNS = {StrategyConfig: (), LoadOptions: (), ServingOptions: (),
            SchedulerConfig: ("block_tokens", "kv_capacity_bytes")}  # set by eesim, not flags


def _params(command: str) -> dict[str, click.Parameter]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


@pytest.mark.parametrize("command", ["simulate", "measure"])
def test_every_field_of_every_concern_is_a_flag_with_its_default_and_help(command):
    params = _params(command)
    for model, internal in CONCERNS.items():
        for field, info in model.model_fields.items():
            if field in internal:
                continue
            param = params.get(FLAG_NAMES.get(field, field))
            assert param is not None, f"{model.__name__}.{field} has no flag on {command}"
            default = None if info.is_required() else info.default
            assert param.default == default, f"--{field}: {param.default!r} vs {default!r}"
            assert param.help == info.description and info.description, field


# the one deliberate difference: plan sizes profiles of any depth, so its draft layer follows the
# profile's depth (a quarter of it) unless given
DEPTH_RELATIVE = {"plan": ("draft_layer",)}


@pytest.mark.parametrize("command", ["report", "plan"])
def test_what_if_commands_take_their_defaults_from_the_question(command):
    params = _params(command)
    shared = [f for f in WhatIf.model_fields if f in params and f not in DEPTH_RELATIVE.get(command, ())]
    assert len(shared) >= 4
    for field in shared:
        assert params[field].default == WhatIf.model_fields[field].default, field


def test_the_question_reuses_the_scenario_declarations():
    """A what-if's strategy, batch cap, lengths and serving options are the very fields of
    the concerns (same default, bounds and description)."""
    sources = {**StrategyConfig.model_fields, **LoadOptions.model_fields,
               **ServingOptions.model_fields, "max_batch": SchedulerConfig.model_fields["max_batch"]}
    sources["strategy"] = StrategyConfig.model_fields["name"]
    for field in ("strategy", "kv", "draft_layer", "drafts", "min_layer", "check_every", "horizon",
                  "max_batch", "prompt_len", "output_len", "replicas", "kv_memory_gib",
                  "shadow_rate", "seed"):
        ours, theirs = WhatIf.model_fields[field], sources[field]
        assert (ours.default, ours.description, ours.metadata) == \
            (theirs.default, theirs.description, theirs.metadata), field


def test_the_kv_default_is_decided_once_by_the_strategy():
    assert StrategyConfig(name="selfspec").kv == "shared"
    assert StrategyConfig(name="compact").kv == "propagate"
    assert WhatIf(strategy="selfspec").strategy_config().kv == "shared"
    assert WhatIf(strategy="regroup", kv="defer").strategy_config().kv == "defer"


def test_a_nested_option_error_names_the_flag_and_value():
    out = CliRunner().invoke(app, ["simulate", "--profile", "p", "--trace", "t", "--rate", "5",
                                   "--max-batch", "0"])
    assert out.exit_code == 2
    assert "--max-batch:" in out.output and "(got 0)" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(app, ["simulate", "--profile", "p", "--trace", "t"])
    assert out.exit_code == 2 and "give exactly one of --rate, --arrivals, --concurrency" in out.output
