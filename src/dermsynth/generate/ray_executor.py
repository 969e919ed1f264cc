"""Generation sharded over Ray workers (one per GPU, or CPU workers), then merged.

The driver validates everything and prepares the seeds first, so a bad input fails before any
worker starts. Seeds are dealt round-robin into shards; each worker runs the same resumable
loop on its shard into the same run folder (candidates have distinct files, so shards never
collide) and writes ``shards/manifest_<i>.csv``. The driver merges those into ``manifest.csv``.
A re-run resumes every shard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.config import GeneratorSettings
from dermsynth.data.manifest import write_manifest
from dermsynth.errors import DermsynthError
from dermsynth.generate.run import FAILURES_FILE, MANIFEST_FILE, RunSummary, plan_run
from dermsynth.io import FolderLock, atomic_write_csv, clear_partials


def _shard(
    seeds_csv: str,
    out: str,
    params: GeneratorSettings,
    n: int,
    seed_ids: list[str],
    manifest_path: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One worker's share: the ordinary loop on a subset of the seeds."""
    from dermsynth.generate.run import generate

    summary = generate(
        seeds_csv,
        out,
        params,
        n,
        seed_ids=seed_ids,
        manifest_path=manifest_path,
        progress=False,
        **options,
    )
    return {"made": summary.made, "already": summary.already, "failures": summary.failures}


def generate_with_ray(
    seeds_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: GeneratorSettings,
    n: int = 8,
    *,
    workers: int | None = None,
    prompts_csv: str | os.PathLike[str] | None = None,
    progress: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
) -> RunSummary:
    """Shard seeds over Ray workers; ``address`` joins a cluster, else a local Ray starts.

    This process holds ``out``'s lock while the shards write (one writer per shard's images).
    """
    with FolderLock(out, "a generation run"):
        clear_partials(out)
        return _sharded(
            seeds_csv, out, params, n, workers, prompts_csv, progress, address, num_cpus
        )


def _sharded(
    seeds_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: GeneratorSettings,
    n: int,
    workers: int | None,
    prompts_csv: str | os.PathLike[str] | None,
    progress: bool,
    address: str | None,
    num_cpus: int | None,
) -> RunSummary:
    try:
        import ray
    except ImportError:
        raise DermsynthError("--executor ray needs Ray: pip install 'dermsynth[ray]'") from None
    plan = plan_run(
        seeds_csv,
        out,
        params,
        n,
        prompts_csv=prompts_csv,
    )
    out = Path(out)
    seed_ids = [s.image_id for s in plan.seeds]
    started_here = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started_here = True
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = gpus > 0 and params.backend != "openai" and params.device in ("auto", "cuda")
        count = workers or (gpus if use_gpu else 2)
        count = max(1, min(count, len(seed_ids)))
        shards = [seed_ids[i::count] for i in range(count)]
        # A GPU worker sees exactly one device (Ray sets CUDA_VISIBLE_DEVICES), hence "cuda".
        shard_params = params.updated(device="cuda") if use_gpu else params
        task = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=1)(_shard)
        options = {"prompts_csv": str(prompts_csv) if prompts_csv else None}
        refs = [
            task.remote(
                str(seeds_csv),
                str(out),
                shard_params,
                n,
                shard,
                str(out / "shards" / f"manifest_{i}.csv"),
                options,
            )
            for i, shard in enumerate(shards)
        ]
        results = _wait(ray, refs, progress)
    finally:
        if started_here:
            ray.shutdown()

    summary = RunSummary(out, total=len(seed_ids) * n)
    for result in results:
        summary.made += result["made"]
        summary.already += result["already"]
        summary.failures.extend(result["failures"])
    frames = [
        pd.read_csv(out / "shards" / f"manifest_{i}.csv", dtype=str, keep_default_na=False)
        for i in range(len(shards))
    ]
    merged = (
        pd.concat([f for f in frames if not f.empty], ignore_index=True)
        if frames
        else pd.DataFrame()
    )
    if not merged.empty:
        order = {sid: k for k, sid in enumerate(seed_ids)}
        merged = merged.sort_values(
            ["parent_id", "image_id"], key=lambda c: c.map(order) if c.name == "parent_id" else c
        ).reset_index(drop=True)
    summary.manifest = write_manifest(merged, out / MANIFEST_FILE)
    if summary.failures:
        atomic_write_csv(out / FAILURES_FILE, pd.DataFrame(summary.failures))
    else:
        (out / FAILURES_FILE).unlink(missing_ok=True)
    return summary


def _wait(ray: Any, refs: list[Any], progress: bool) -> list[dict[str, Any]]:
    """Results in shard order, with a bar over finished shards."""
    from tqdm.auto import tqdm

    pending = list(refs)
    with tqdm(total=len(refs), desc="shards", unit="shard", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    return ray.get(refs)
