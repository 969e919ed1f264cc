"""The ``dermsynth`` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import errno
import sys

import typer
from pydantic import ValidationError

from dermsynth import __version__
from dermsynth.cli import data as data_cli
from dermsynth.cli import evaluate as evaluate_cli
from dermsynth.cli import generate as generate_cli
from dermsynth.cli import report as report_cli
from dermsynth.cli import select as select_cli
from dermsynth.cli import study as study_cli
from dermsynth.cli import train as train_cli
from dermsynth.config import format_errors
from dermsynth.errors import DermsynthError

app = typer.Typer(
    name="dermsynth",
    help=(
        "Find where a dermatology classifier fails on under-represented skin types, generate "
        "targeted synthetic images, select them, retrain, and measure whether it helped."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_cli.app, name="data")
train_cli.register(app)
evaluate_cli.register(app)
generate_cli.register(app)
select_cli.register(app)
report_cli.register(app)
app.add_typer(study_cli.app, name="study")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dermsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dermsynth: fair dermatology classifiers through targeted synthetic augmentation."""


@app.command()
def demo(
    out: str = typer.Option(
        "dermsynth-demo", "--out", help="Folder for the demo's data, study and report."
    ),
) -> None:
    """Run the whole protocol on simulated data (minutes on a laptop CPU) and write its report."""
    from dermsynth.demo import run_demo

    report = run_demo(out)
    typer.echo(f"report: {report}")


def _os_error(exc: OSError) -> str:
    """One line for a file-system error at a path the user gave (or one a command writes)."""
    if exc.errno == errno.ENOSPC:
        # Every writer is atomic: what was finished is on disk whole, the rest is redone.
        return (
            f"no space left on device ({exc.filename or exc}); free some space and run the same "
            "command again: finished work is kept and the rest resumes"
        )
    where = exc.filename or ""
    what = {
        errno.EEXIST: "exists already",
        errno.ENOTDIR: "a path on the way is a file, not a folder",
        errno.EISDIR: "is a folder; give a file",
        errno.EACCES: "permission denied",
        errno.EROFS: "the file system is read-only",
        errno.ENOENT: "no such file or folder",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{where}: {what}" if where else what


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a user mistake prints one line and exits with code 2."""
    from typer import _click

    try:
        code = app(args=argv, prog_name="dermsynth", standalone_mode=False)
    except DermsynthError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ValidationError as exc:  # settings built inside the library from the user's input
        typer.echo(f"error: {'; '.join(format_errors(exc))}", err=True)
        sys.exit(2)
    except _click.exceptions.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        sys.exit(0)
    except _click.exceptions.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{where}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        typer.echo(f"error: {_os_error(exc)}", err=True)
        sys.exit(1 if exc.errno == errno.ENOSPC else 2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
    # Outside standalone mode, typer.Exit (e.g. from --version) comes back as a return value.
    sys.exit(code if isinstance(code, int) else 0)
