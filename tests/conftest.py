"""Shared test fixtures: run the real CLI entry point in-process; find the real F17k table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dermsynth.cli import main

SHARED_F17K = Path(__file__).resolve().parents[2] / "shared" / "data" / "fitzpatrick17k.csv"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Call ``dermsynth ARGS...`` through its console entry point; return code and output."""

    def _run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return _run


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance (2 CPUs) for every test that runs an executor on Ray.

    The executors use a running instance as they find it (and leave it running), so the tests
    share one start-up and its worker processes instead of paying for them each.
    """
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def f17k_csv() -> Path:
    """The real Fitzpatrick 17k table from ../shared/data; skipped where it is absent."""
    if not SHARED_F17K.exists():
        pytest.skip(
            f"the Fitzpatrick 17k table is not at {SHARED_F17K} (shared/ not beside the clone)"
        )
    return SHARED_F17K


F17K_HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum"
)


def write_f17k_csv(path: Path, rows: list[tuple[str, int | str, str]]) -> Path:
    """Write a table in the Fitzpatrick 17k schema from (md5hash, fst, label) triples."""
    lines = [F17K_HEADER]
    for md5, fst, label in rows:
        lines.append(f"{md5},{fst},{fst},{label},inflammatory,non-neoplastic,,http://x/{md5}.jpg,x")
    path.write_text("\n".join(lines) + "\n")
    return path
