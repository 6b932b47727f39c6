"""What every command shares: the typer apps, the error path and the progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="eesim: evidence for serving language models with early-exit decoding.",
                  no_args_is_help=True, add_completion=False)
model_app = typer.Typer(help="The reference early-exit model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
trace_app = typer.Typer(help="Exit traces: record (default), import, inspect.",
                        invoke_without_command=True)
app.add_typer(trace_app, name="trace")
profile_app = typer.Typer(help="Device profiles: measure (default), analytic roofline, show.",
                          invoke_without_command=True)
app.add_typer(profile_app, name="profile")
console = Console(stderr=True)


def flag(model, field: str, *names: str, **extra):
    """A typer option declared by a pydantic model's field: its default and its description as
    the help (one declaration per option; `names` renames the flag, as --kv-memory)."""
    info = model.model_fields[field]
    default = None if info.is_required() else info.default
    return typer.Option(default, *names, help=info.description, **extra)


def fields_of(model, given: dict, skip: tuple[str, ...] = ()) -> dict:
    """The values of `model`'s fields among the command's arguments (flags named as fields)."""
    return {name: given[name] for name in model.model_fields if name not in skip}


def fail(message) -> None:
    """Print a user error (no stack trace) and exit with status 2."""
    from pydantic import ValidationError

    if isinstance(message, ValidationError):  # name the option, the problem and the value
        message = "; ".join(_one_error(e) for e in message.errors())
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


FLAG_NAMES = {"name": "strategy", "kv_memory_gib": "kv_memory"}  # fields whose flag is named otherwise


def _one_error(e: dict) -> str:
    """A pydantic error as `--flag: problem (got value)`, the field's name as its flag (nested
    concerns, as `load` of `load.rate`, left out); an error about a whole concern (a model-wide
    check, its input the concern's fields) names its flags in its own words."""
    names = [str(x) for x in e["loc"] if not isinstance(x, int)]
    message = e["msg"].removeprefix("Value error, ")
    if not names or isinstance(e.get("input"), dict):
        return message
    flag_name = FLAG_NAMES.get(names[-1], names[-1]).replace("_", "-")
    return f"--{flag_name}: {message} (got {e['input']!r})"


def user_errors():
    """The exceptions that mean bad input rather than a bug: shown as one clear line."""
    from eesim.model import CheckpointError
    from eesim.policy.policy import PolicyError
    from eesim.profile.format import ProfileError
    from eesim.trace import TraceError

    return (CheckpointError, PolicyError, ProfileError, TraceError, ValueError, FileNotFoundError)

DEFAULT_CACHE = Path.home() / ".cache" / "eesim"


def progress() -> Progress:
    """The progress bar every long-running command shows (on stderr)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console)

