"""The resumable generation loop: seeds x n candidates -> PNGs, sidecars and a manifest.

Layout of a run folder::

    run.json                  what decides the images (a re-run must match it)
    seeds/<seed>_crop.png     the prepared crop and mask of each seed, for inspection
    seeds/<seed>_mask.png
    images/<seed>_cNN.png     the candidates
    candidates/<seed>_cNN.json  one manifest row per finished candidate
    failures/<seed>.json      why a seed's images could not be made (removed once they are)
    manifest.csv              origin=synthetic rows assembled from the sidecars
    failures.csv              the failures of the last run, if any

A candidate is finished when its sidecar exists: the PNG is written first (atomically), the
sidecar second, so a run killed at any point leaves no partial file that counts, and a re-run
makes exactly the missing candidates. Each candidate's random seed is derived from the base
seed, the seed image id and the candidate number, so it does not depend on the order, the
batching or the sharding of the work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.config import GeneratorSettings
from dermsynth.data.images import BadImageError
from dermsynth.data.manifest import write_manifest
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import (
    Backend,
    BackendFailure,
    Job,
    Result,
    make_backend,
)
from dermsynth.generate.prompts import read_prompt_table, resolve_prompts
from dermsynth.generate.seeds import PreparedSeed, load_seeds, prepare_seed
from dermsynth.io import FolderLock, atomic_write_bytes, atomic_write_json, clear_partials
from dermsynth.schema import PATH_COLUMNS

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.csv"
FAILURES_FILE = "failures.csv"
# Settings that may change between a run and its resumption without changing any image.
# (batch size is not one: batched arithmetic can shift pixels by a rounding step.)
_RESUMABLE_KEYS = frozenset({"device", "retries", "n"})
_UNSAFE_ID_CHARS = set('/\\:*?"<>|')


@dataclass
class RunPlan:
    """A validated run: its folder, parameters, prepared seeds and (unloaded) backend."""

    out: Path
    params: GeneratorSettings
    n: int
    seeds: list[PreparedSeed]
    backend: Backend
    identity: dict[str, Any]


@dataclass
class RunSummary:
    """What one invocation did."""

    out: Path
    made: int = 0
    already: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    manifest: Path | None = None
    total: int = 0


def candidate_id(seed_id: str, index: int) -> str:
    """The deterministic id of candidate ``index`` of a seed."""
    return f"{seed_id}_c{index:02d}"


def derive_seed(base: int, seed_id: str, index: int) -> int:
    """A 31-bit random seed of one candidate, independent of order, batching and sharding."""
    digest = hashlib.sha256(f"{base}:{seed_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _check_ids(ids: Iterable[str]) -> None:
    for image_id in ids:
        if image_id.startswith(".") or _UNSAFE_ID_CHARS & set(image_id):
            raise DermsynthError(
                f"seed id {image_id!r} cannot name a file (no leading '.', no / \\ : * ? \" < > |)"
            )


def plan_run(
    seeds_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: GeneratorSettings,
    n: int,
    *,
    prompts_csv: str | os.PathLike[str] | None = None,
    seed_ids: Sequence[str] | None = None,
    write_run_file: bool = True,
) -> RunPlan:
    """Validate every input and prepare the seeds; no model is loaded here.

    Bad parameters, an unknown backend, a prompt table missing a seed, a missing or corrupt
    seed image and a mask of the wrong size all stop the run here, with every bad seed named.
    """
    if n < 1:
        raise DermsynthError(f"--n must be >= 1, got {n}")
    template, mask = params.template, params.mask
    seeds = load_seeds(seeds_csv)
    _check_ids(seeds["image_id"])
    table = read_prompt_table(prompts_csv) if prompts_csv is not None else None
    resolved = resolve_prompts(
        seeds, table, template, source=str(prompts_csv) if prompts_csv else "prompt table"
    )
    resolved["path"] = seeds["path"].to_numpy()
    if seed_ids is not None:
        wanted = set(seed_ids)
        resolved = resolved[resolved["image_id"].isin(wanted)]
    backend = make_backend(params)
    resolution = backend.resolution

    out = Path(out)
    identity = {
        **{k: v for k, v in params.record().items() if k not in _RESUMABLE_KEYS},
        "model": backend.model_name,
        "resolution": resolution,
        "template": template,
        "mask": mask.model_dump(),
    }
    # Checked before the seed crops are rewritten, so a mismatched re-run changes nothing.
    _check_or_write_run_file(out, identity, write=False)
    prepared: list[PreparedSeed] = []
    problems: list[str] = []
    for row in resolved.to_dict("records"):
        try:
            prepared.append(prepare_seed(row, resolution, mask, out / "seeds"))
        except (BadImageError, DermsynthError) as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DermsynthError(
            f"{len(problems)} seed(s) cannot be used: " + "; ".join(problems[:5]) + more
        )

    # Written only once every seed is usable, so a failed first attempt pins nothing.
    _check_or_write_run_file(out, identity, write=write_run_file)
    return RunPlan(out, params, n, prepared, backend, identity)


def _check_or_write_run_file(out: Path, identity: dict[str, Any], *, write: bool) -> None:
    path = out / RUN_FILE
    # Round-trip through JSON so tuples, numbers and None compare as they are stored.
    wanted = json.loads(json.dumps(identity, sort_keys=True, default=str))
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DermsynthError(
                f"{path} is unreadable ({exc}); remove it or use a new --out"
            ) from None
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        if changed:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:4])
            raise DermsynthError(
                f"{out} holds a run made with other settings ({shown}); resume it with the same "
                "settings, or write this one to a new --out"
            )
    elif write:
        atomic_write_json(path, wanted)


def _finished(out: Path, image_id: str) -> dict[str, Any] | None:
    sidecar = out / "candidates" / f"{image_id}.json"
    if not sidecar.is_file():
        return None
    try:
        row = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a damaged sidecar is remade, never trusted
    if not isinstance(row, dict):
        return None
    row = _in_folder(row, out)
    return row if _decodes(Path(row.get("path", ""))) else None


def _under_folder(row: dict[str, Any], out: Path) -> dict[str, Any]:
    """A sidecar row with the paths of files under ``out`` stored relative to it."""
    base = out.resolve()
    stored = dict(row)
    for key in PATH_COLUMNS:
        value = stored.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            path = Path(value)
            if base in path.parents:
                stored[key] = path.relative_to(base).as_posix()
    return stored


def _in_folder(row: dict[str, Any], out: Path) -> dict[str, Any]:
    """A sidecar row with its relative paths made absolute against ``out`` (where it now is)."""
    base = out.resolve()
    for key in PATH_COLUMNS:
        value = row.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            row[key] = str(base / value)
    return row


def _decodes(path: Path) -> bool:
    """True for an image file that opens and decodes whole (an empty or cut file is remade)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    return True


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def candidate_row(
    plan: RunPlan, seed: PreparedSeed, result: Result, device: str, path: str
) -> dict[str, Any]:
    """The manifest row (and shard record) of one finished candidate stored at ``path``."""
    record = {k: v for k, v in plan.params.record().items() if k != "random_seed"}
    record["base_random_seed"] = plan.params.random_seed
    record["model"] = plan.backend.model_name
    record["resolution"] = plan.backend.resolution
    record.update(result.details)
    if hasattr(plan.backend, "torch_dtype"):
        record["precision"] = str(plan.backend.torch_dtype()).removeprefix("torch.")
    return {
        **record,
        "image_id": candidate_id(seed.image_id, result.job.index),
        "path": path,
        "label": seed.label,
        "fst": seed.fst,
        "origin": "synthetic",
        "parent_id": seed.image_id,
        "candidate": result.job.index,
        "prompt": result.job.prompt,
        "random_seed": result.job.random_seed if plan.params.backend != "openai" else "",
        "seconds": round(result.seconds, 4),
        "device": device,
        "seed_crop": str(seed.crop_path.resolve()),
        "seed_mask": str(seed.mask_path.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _save(plan: RunPlan, seed: PreparedSeed, result: Result, device: str) -> None:
    image_id = candidate_id(seed.image_id, result.job.index)
    png = (plan.out / "images" / f"{image_id}.png").resolve()
    atomic_write_bytes(png, _png(result.image))
    row = candidate_row(plan, seed, result, device, str(png))
    atomic_write_json(plan.out / "candidates" / f"{image_id}.json", _under_folder(row, plan.out))


def _record_failure(out: Path, seed_id: str, message: str, refused: bool) -> dict[str, Any]:
    failure = {
        "seed_id": seed_id,
        "kind": "refused" if refused else "error",
        "message": message,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(out / "failures" / f"{seed_id}.json", failure)
    return failure


def _jobs(plan: RunPlan, summary: RunSummary) -> list[Job]:
    jobs: list[Job] = []
    for seed in plan.seeds:
        for index in range(plan.n):
            row = _finished(plan.out, candidate_id(seed.image_id, index))
            if row is not None:
                if row.get("prompt") != seed.prompt:
                    raise DermsynthError(
                        f"{plan.out}: candidate {row['image_id']} was made with prompt "
                        f"{row.get('prompt')!r}, the prompt is now {seed.prompt!r}; write this "
                        "run to a new --out"
                    )
                summary.already += 1
                continue
            jobs.append(make_job(plan, seed, index))
    return jobs


def make_job(plan: RunPlan, seed: PreparedSeed, index: int) -> Job:
    """The job of candidate ``index`` of a seed (its random seed derived, never drawn)."""
    use_image = plan.params.mode != "text2img"
    return Job(
        seed_id=seed.image_id,
        index=index,
        prompt=seed.prompt,
        image=seed.crop if use_image else None,
        mask=seed.mask if plan.params.mode == "inpaint" else None,
        random_seed=derive_seed(plan.params.random_seed, seed.image_id, index),
        label=seed.label,
        fst=seed.fst,
    )


def _chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


@dataclass
class _Executor:
    """Runs batches of jobs, saving each image and recording each seed that fails."""

    plan: RunPlan
    summary: RunSummary
    bar: Any
    device: str
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where a finished image goes: PNG + sidecar (default), or a WebDataset shard (shards.py).
    save: Callable[[RunPlan, PreparedSeed, Result, str], None] = _save

    def run(self, chunk: list[Job]) -> None:
        """One batch; a failing batch of several seeds is retried seed by seed."""
        try:
            results = self.plan.backend.generate(chunk)
        except BackendFailure as exc:
            seed_ids = list(dict.fromkeys(j.seed_id for j in chunk))
            if len(seed_ids) > 1:
                # A mixed batch failed: retry seed by seed so only the culprit is marked.
                for seed_id in seed_ids:
                    self.run([j for j in chunk if j.seed_id == seed_id])
                return
            self.fail(seed_ids[0], str(exc), exc.refused)
            self.bar.update(len(chunk))
            return
        by_seed = {s.image_id: s for s in self.plan.seeds}
        for result in results:
            if result.image is None:
                self.fail(result.job.seed_id, result.error or "no image", result.refused)
            else:
                self.save(self.plan, by_seed[result.job.seed_id], result, self.device)
                self.summary.made += 1
            self.bar.update(1)

    def fail(self, seed_id: str, message: str, refused: bool) -> None:
        """Record why a seed's images could not be made."""
        self.failed[seed_id] = _record_failure(self.plan.out, seed_id, message, refused)


def execute(plan: RunPlan, *, progress: bool = True) -> RunSummary:
    """Make the missing candidates of a planned run; one seed's failure does not stop the rest."""
    from tqdm.auto import tqdm

    summary = RunSummary(plan.out)
    summary.total = len(plan.seeds) * plan.n
    jobs = _jobs(plan, summary)
    if not jobs:
        return summary
    plan.backend.load()
    # Batches may span seeds (a full GPU batch even with small n); order stays seed-major.
    with tqdm(total=len(jobs), desc="generating", unit="img", disable=not progress) as bar:
        executor = _Executor(plan, summary, bar, plan.backend.device_name())
        for chunk in _chunks(jobs, max(1, plan.params.batch_size)):
            executor.run(chunk)
    for seed in plan.seeds:
        if seed.image_id not in executor.failed:
            (plan.out / "failures" / f"{seed.image_id}.json").unlink(missing_ok=True)
    summary.failures = list(executor.failed.values())
    return summary


def assemble_manifest(out: str | os.PathLike[str], seed_ids: Iterable[str], n: int) -> pd.DataFrame:
    """Rows of the finished candidates of ``seed_ids`` (candidates 0..n-1), in order."""
    out = Path(out)
    rows = []
    for seed_id in seed_ids:
        for index in range(n):
            row = _finished(out, candidate_id(seed_id, index))
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows)


def write_outputs(
    plan: RunPlan, summary: RunSummary, manifest_path: Path | None = None
) -> RunSummary:
    """Write the manifest (and the failures table) of a run's seeds."""
    manifest = assemble_manifest(plan.out, [s.image_id for s in plan.seeds], plan.n)
    path = manifest_path or plan.out / MANIFEST_FILE
    if manifest.empty:
        manifest = pd.DataFrame(columns=["image_id", "path", "label", "fst", "origin", "parent_id"])
    write_manifest(manifest, path)
    summary.manifest = path
    failures_path = plan.out / FAILURES_FILE
    if summary.failures:
        from dermsynth.io import atomic_write_csv

        atomic_write_csv(failures_path, pd.DataFrame(summary.failures))
    elif manifest_path is None:
        failures_path.unlink(missing_ok=True)
    return summary


def generate(
    seeds_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: GeneratorSettings,
    n: int = 8,
    *,
    prompts_csv: str | os.PathLike[str] | None = None,
    progress: bool = True,
    seed_ids: Sequence[str] | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
    on_planned: Callable[[RunPlan], None] | None = None,
    shard_size: int | None = None,
) -> RunSummary:
    """Generate ``n`` candidates per seed into ``out`` (resumable); returns what it did.

    A whole run holds ``out``'s lock (one writer) and first clears what a killed run left; a
    shard (``seed_ids``, one worker's share) runs under the lock its driver holds.
    ``shard_size``: write WebDataset shards of about that many images instead of PNG files
    (:mod:`dermsynth.generate.sharded`).
    """
    if shard_size is not None and shard_size < 1:
        raise DermsynthError(f"--shard-size must be >= 1, got {shard_size}")
    if shard_size is not None and seed_ids is not None:
        raise DermsynthError(
            "a run into shards is made whole: give no seed subset with --shard-size"
        )

    def run() -> RunSummary:
        plan = plan_run(
            seeds_csv,
            out,
            params,
            n,
            prompts_csv=prompts_csv,
            seed_ids=seed_ids,
            write_run_file=seed_ids is None,
        )
        if on_planned is not None:
            on_planned(plan)
        if shard_size is not None:
            from dermsynth.generate import sharded

            summary = sharded.execute_sharded(plan, shard_size, progress=progress)
            return sharded.write_sharded_manifest(plan, summary, shard_size)
        summary = execute(plan, progress=progress)
        return write_outputs(plan, summary, Path(manifest_path) if manifest_path else None)

    if seed_ids is not None:
        return run()
    with FolderLock(out, "a generation run"):
        clear_partials(out)
        return run()
