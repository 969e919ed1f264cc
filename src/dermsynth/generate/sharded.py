"""Generation into WebDataset shards, for runs too large for one PNG file per image.

``dermsynth generate ... --shard-size N`` writes ``OUT/webdataset/shard-000000.tar`` ... instead of
``images/`` and ``candidates/``: each shard holds the candidates of whole seeds (``N // n``
seeds, at least one), ``<key>.png`` + ``<key>.json`` per image, the JSON being the candidate's
manifest row (seed id, condition, requested skin type, prompt, generator and parameters,
random seed; selection scores join it when the set is exported). A shard is made whole or not
at all (:mod:`dermsynth.generate.shards`); a re-run skips every whole shard holding all its
candidates and makes the others again, so a shard cut short by a crash is detected and
rewritten. The manifest lists every image with ``path`` = ``webdataset/<tar>#<key>.png``.

Small runs, and runs a person reviews, keep the PNG folders (the default).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.data.manifest import write_manifest
from dermsynth.generate.backends.base import Result
from dermsynth.generate.run import (
    FAILURES_FILE,
    MANIFEST_FILE,
    RunPlan,
    RunSummary,
    _chunks,
    _Executor,
    candidate_id,
    candidate_row,
    make_job,
)
from dermsynth.generate.seeds import PreparedSeed
from dermsynth.generate.shards import (
    Sample,
    is_whole,
    read_sidecar,
    remove_shard,
    sample_key,
    shard_path,
    write_shard,
)
from dermsynth.io import atomic_write_csv

SHARDS_DIR = "webdataset"


@dataclass
class _Collector:
    """Finished candidates of the shard being made, in job order."""

    tar: Path
    samples: list[Sample] = field(default_factory=list)

    def save(self, plan: RunPlan, seed: PreparedSeed, result: Result, device: str) -> None:
        """Keep one finished image and its record for the shard."""
        key = sample_key(candidate_id(seed.image_id, result.job.index))
        path = f"{SHARDS_DIR}/{self.tar.name}#{key}.png"
        if result.image is None:  # the executor records failures; it never saves them
            return
        buffer = io.BytesIO()
        result.image.save(buffer, format="PNG")
        record = candidate_row(plan, seed, result, device, path)
        self.samples.append(Sample(key, buffer.getvalue(), "png", record))


def shard_seeds(plan: RunPlan, shard_size: int) -> list[list[PreparedSeed]]:
    """The seeds of each shard: whole seeds, ``shard_size // n`` of them (at least one)."""
    per = max(1, shard_size // plan.n)
    return [plan.seeds[i : i + per] for i in range(0, len(plan.seeds), per)]


def _expected(plan: RunPlan, seeds: list[PreparedSeed]) -> list[str]:
    return [sample_key(candidate_id(s.image_id, i)) for s in seeds for i in range(plan.n)]


def _done(tar: Path, expected: list[str]) -> bool:
    info = read_sidecar(tar)
    return info is not None and info.get("keys") == expected and is_whole(tar)


def execute_sharded(plan: RunPlan, shard_size: int, *, progress: bool = True) -> RunSummary:
    """Make every shard that is missing, damaged or short of candidates (a failed seed is
    retried with its shard); returns what it did."""
    from tqdm.auto import tqdm

    folder = plan.out / SHARDS_DIR
    summary = RunSummary(plan.out, total=len(plan.seeds) * plan.n)
    todo = []
    for index, seeds in enumerate(shard_seeds(plan, shard_size)):
        if _done(shard_path(folder, index), _expected(plan, seeds)):
            summary.already += len(seeds) * plan.n
        else:
            todo.append((index, seeds))
    if not todo:
        return summary
    plan.backend.load()
    with tqdm(
        total=sum(len(s) for _, s in todo) * plan.n,
        desc="generating",
        unit="img",
        disable=not progress,
    ) as bar:
        executor = _Executor(plan, summary, bar, plan.backend.device_name())
        for index, seeds in todo:
            tar = shard_path(folder, index)
            remove_shard(tar)
            collector = _Collector(tar)
            executor.save = collector.save
            jobs = [make_job(plan, seed, i) for seed in seeds for i in range(plan.n)]
            for chunk in _chunks(jobs, max(1, plan.params.batch_size)):
                executor.run(chunk)
            records = [s.record for s in collector.samples]
            write_shard(tar, collector.samples, extra={"records": records})
    for seed in plan.seeds:
        if seed.image_id not in executor.failed:
            (plan.out / "failures" / f"{seed.image_id}.json").unlink(missing_ok=True)
    summary.failures = list(executor.failed.values())
    return summary


def sharded_manifest(plan: RunPlan, shard_size: int) -> pd.DataFrame:
    """The rows of every candidate in a whole shard, in order (from the shards' sidecars)."""
    rows: list[dict[str, Any]] = []
    for index in range(len(shard_seeds(plan, shard_size))):
        tar = shard_path(plan.out / SHARDS_DIR, index)
        info = read_sidecar(tar)
        if info is not None and is_whole(tar):
            rows.extend(info.get("records") or [])
    return pd.DataFrame(rows)


def write_sharded_manifest(plan: RunPlan, summary: RunSummary, shard_size: int) -> RunSummary:
    """Write ``manifest.csv`` of a sharded run."""
    manifest = sharded_manifest(plan, shard_size)
    if manifest.empty:
        manifest = pd.DataFrame(columns=["image_id", "path", "label", "fst", "origin", "parent_id"])
    path = plan.out / MANIFEST_FILE
    write_manifest(manifest, path)
    summary.manifest = path
    failures = plan.out / FAILURES_FILE
    if summary.failures:
        atomic_write_csv(failures, pd.DataFrame(summary.failures))
    else:
        failures.unlink(missing_ok=True)
    return summary
