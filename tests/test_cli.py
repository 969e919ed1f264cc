"""The command line as a whole: version, help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from dermsynth import __version__
from dermsynth.cli import app


def _all_command_paths(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    command = typer.main.get_command(group)
    paths: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*path, name))

    walk(command, prefix)
    return paths


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"dermsynth {__version__}"


def test_help_everywhere(run_cli) -> None:
    paths = _all_command_paths(app)
    assert ("data", "summary") in paths and ("data", "plan") in paths and ("demo",) in paths
    for path in paths:
        result = run_cli(*path, "--help")
        assert result.code == 0, (path, result.stderr)
        assert "Usage" in result.stdout, path


def test_unknown_command_and_option_are_one_line_errors(run_cli) -> None:
    for args in (("nonsense",), ("data", "summary", "--bogus")):
        result = run_cli(*args)
        assert result.code == 2
        assert result.stderr.startswith("error: ")
        assert len(result.stderr.strip().splitlines()) == 1


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from dermsynth.cli import main; main()",
            "data",
            "summary",
            "--csv",
            "/nonexistent.csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no such file: /nonexistent.csv"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("generator", "train-demo", "--learning-rate", "nan"), "--learning-rate"),
        (("generator", "finetune", "--learning-rate", "inf"), "--learning-rate"),
        (("data", "simulate", "--scale", "nan"), "--scale"),
        (("data", "fetch", "x.csv", "--timeout", "nan"), "--timeout"),
    ],
)
def test_a_number_that_is_not_finite_is_one_line(
    args: tuple[str, ...], flag: str, tmp_path: Path, run_cli
) -> None:
    result = run_cli(*args, "--out", tmp_path / "out")
    assert result.code == 2
    assert result.stderr.startswith(f"error: Invalid value for '{flag}'")
    assert "finite" in result.stderr  # not "should be less than or equal to 10"
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "11", "-1"])
def test_scale_out_of_range_says_the_range(value: str, tmp_path: Path, run_cli) -> None:
    result = run_cli("data", "simulate", "--scale", value, "--out", tmp_path / "out")
    assert result.code == 2
    assert "--scale" in result.stderr and "from 0.001 to 10" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
