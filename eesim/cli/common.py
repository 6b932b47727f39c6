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


def fail(message) -> None:
    """Print a user error (no stack trace) and exit with status 2."""
    from pydantic import ValidationError

    if isinstance(message, ValidationError):  # name the option, the problem and the value
        message = "; ".join(
            (f"--{'.'.join(str(x) for x in e['loc']).replace('_', '-')}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            + (f" (got {e['input']!r})" if e["loc"] else "")
            for e in message.errors())
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


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

