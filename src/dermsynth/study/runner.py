"""Run a whole study: seeds, generation, selection, one classifier per run, metrics.

Every step writes its outputs atomically and is skipped when its outputs exist, so a study
killed at any moment continues where it stopped when run again; finished classifier runs are
never redone. Work shared by many runs is done once: the frozen features of an image view are
cached under ``RUN/cache`` and read by every run; each condition's candidates are generated and
selected once per direction. The folder layout is in :mod:`dermsynth.study.layout`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.config import StudyConfig
from dermsynth.data.manifest import load_manifest, resolve_conditions, write_manifest
from dermsynth.data.splits import PLAN_COLUMNS
from dermsynth.data.summary import fst_table
from dermsynth.errors import DermsynthError
from dermsynth.io import (
    LOCK_FILE,
    FolderLock,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    clear_partials,
)
from dermsynth.select.selection import training_selection
from dermsynth.study import layout
from dermsynth.study.grid import RunSpec, directions_of, plan_study, study_grid

Echo = Callable[[str], None]
RUN_META = ("run_id", "direction", "arm", "augmented", "dose", "repeat")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def claim_folder(config: StudyConfig, out: Path, *, force: bool = False) -> None:
    """Make ``out`` this config's run folder; refuse a folder made by another config."""
    marker = out / layout.STUDY_FILE
    fingerprint = config.fingerprint()
    if marker.exists():
        try:
            previous = json.loads(marker.read_text())["fingerprint"]
        except (ValueError, KeyError):
            previous = None
        if previous != fingerprint and not force:
            raise DermsynthError(
                f"{out} holds a study made with another config (fingerprint {previous}, this one "
                f"{fingerprint}); use a new --out folder, or --force to reuse it (finished steps "
                "whose inputs changed are redone)"
            )
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not force:
        raise DermsynthError(
            f"{out} exists and is not a dermsynth study folder; choose an empty or new --out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        marker, {"config": config.model_dump(mode="json"), "fingerprint": fingerprint}
    )


def study_lock(out: Path) -> FolderLock:
    """The lock a study folder's one writer holds while it runs."""
    return FolderLock(out, "a study folder")


def generation_params(config: StudyConfig) -> Any:
    """The config's generator settings as :class:`GenerationParams` (unknown keys refused)."""
    from dermsynth.generate.backends.base import GenerationParams

    fields = {f.name for f in dataclasses.fields(GenerationParams)} - {
        "backend",
        "model",
        "mode",
        "lora",
        "extra",
    }
    unknown = sorted(set(config.generator.params) - fields)
    if unknown:
        raise DermsynthError(
            f"generator.params: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    params = GenerationParams(
        backend=config.generator.backend,
        model=config.generator.model,
        mode=config.generator.mode,
        lora=str(config.generator.lora or ""),
        random_seed=config.random_seed,
        **config.generator.params,
    )
    params.validate()
    return params


def train_config(config: StudyConfig, repeat: int, classes: list[str]) -> Any:
    """The classifier settings of one run (the repeat sets the training seed)."""
    from dermsynth.train.config import TrainConfig

    clf = config.classifier
    return TrainConfig(
        backbone=clf.backbone,
        weights=clf.weights,
        finetune=clf.fine_tune,
        epochs=clf.epochs,
        batch_size=clf.batch_size,
        lr=clf.lr,
        image_size=clf.image_size,
        path="features" if clf.fast_path and not clf.fine_tune else "images",
        views=clf.train_views,
        seed=config.random_seed + repeat,
        classes=tuple(classes),
        progress=False,
    )


def _dose_rows(selected: pd.DataFrame, dose: int) -> pd.DataFrame:
    """The first ``dose`` selected images, taken round-robin over seeds (best rank first)."""
    kept = selected.sort_values(["rank", "parent_id", "image_id"], kind="stable")
    return kept.head(dose)


def run_manifest(plan: pd.DataFrame, spec: RunSpec, selected: pd.DataFrame | None) -> pd.DataFrame:
    """Training and test rows of one run: real training rows, the augmented condition's seeds
    (``real+seed`` arms), its selected synthetic images up to the dose, and the test rows."""
    train = plan[plan["split"] == "train"]
    test = plan[plan["split"] == "test"]
    parts = [train]
    if spec.arm != "real":
        parts.append(plan[(plan["split"] == "seed") & (plan["label"] == spec.augmented)])
    if spec.arm == "real+seed+synthetic":
        if selected is None or len(selected) < spec.dose:
            have = 0 if selected is None else len(selected)
            raise DermsynthError(
                f"{spec.run_id}: {spec.dose} synthetic images asked, {have} selected; generate more "
                "candidates per seed or lower the dose"
            )
        synthetic = _dose_rows(selected, spec.dose).assign(split="train", test_group="")
        parts.append(synthetic)
    parts.append(test)
    return pd.concat(parts, ignore_index=True)


class StudyRunner:
    """Carries one study through its steps; each step is a method that can be called alone."""

    def __init__(
        self,
        config: StudyConfig,
        out: str | Path,
        *,
        force: bool = False,
        echo: Echo = _stderr,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out = Path(out)
        self.echo = echo
        self.progress = progress
        self.force = force
        with study_lock(self.out):
            claim_folder(config, self.out, force=force)
        self.manifest = config.dataset.load()
        self.plan = plan_study(config, self.manifest)
        self.runs = study_grid(config)
        labels = self.manifest["label"].unique()
        self.conditions = resolve_conditions(config.conditions, labels)
        self.augmented = resolve_conditions(config.augmented, labels)
        self.directions = {d.name: d for d in directions_of(config)}

    # -- steps ---------------------------------------------------------------------------------

    def write_inputs(self) -> None:
        """The dataset as loaded, each direction's plan, and Table 1."""
        write_manifest(self.manifest, self.out / layout.MANIFEST_FILE)
        for name, plan in self.plan.splits.items():
            write_manifest(plan, layout.splits_path(self.out, name), first=PLAN_COLUMNS)
        results = layout.results_dir(self.out)
        table = fst_table(self.manifest, self.conditions).reset_index()
        atomic_write_csv(results / "table1.csv", table)

    def generate(self) -> None:
        """Candidates for every augmented condition and direction (resumable per image)."""
        if "real+seed+synthetic" not in self.config.arms:
            return
        from dermsynth.generate.run import generate

        params = generation_params(self.config)
        for name, plan in self.plan.splits.items():
            for condition in self.augmented:
                folder = layout.generation_dir(self.out, name, condition)
                if (folder / layout.DONE_FILE).exists():
                    continue
                seeds = plan[(plan["split"] == "seed") & (plan["label"] == condition)]
                seeds_csv = folder / "seeds.csv"
                write_manifest(seeds, seeds_csv, first=PLAN_COLUMNS)
                self.echo(
                    f"generating {len(seeds)} x {self.config.candidates_per_seed} candidates: {name}, {condition}"
                )
                summary = generate(
                    seeds_csv,
                    folder,
                    params,
                    self.config.candidates_per_seed,
                    progress=self.progress,
                )
                if summary.failures:
                    raise DermsynthError(
                        f"generation for {name}, {condition}: {len(summary.failures)} seed(s) failed "
                        f"(see {folder / 'failures.csv'}); run the study again to retry them"
                    )
                atomic_write_json(
                    folder / layout.DONE_FILE, {"made": summary.made, "already": summary.already}
                )

    def select(self) -> None:
        """Keep the best ``synthetic_per_seed`` candidates of each seed (leakage-guarded)."""
        if "real+seed+synthetic" not in self.config.arms:
            return
        from dermsynth.select.selection import SelectOptions, select_candidates

        for name in self.plan.splits:
            for condition in self.augmented:
                out = layout.selection_path(self.out, name, condition)
                if (out.parent / layout.DONE_FILE).exists():
                    continue
                classifier = self._selection_classifier(name)
                options = SelectOptions(
                    k=self.config.synthetic_per_seed,
                    weights=dict(self.config.selection.weights),
                    leakage_threshold=self.config.selection.leakage_threshold,
                    classifier=classifier,
                )
                if classifier is None:
                    options.weights.pop("pathology", None)
                self.echo(
                    f"selecting {self.config.synthetic_per_seed} per seed: {name}, {condition}"
                )
                result = select_candidates(
                    layout.generation_dir(self.out, name, condition) / "manifest.csv",
                    out,
                    options=options,
                    test_csv=layout.splits_path(self.out, name),
                )
                atomic_write_json(out.parent / layout.DONE_FILE, {"notes": result.notes})

    def _selection_classifier(self, direction: str) -> str | None:
        # The direction's own real-arm model scores pathology: it saw only this direction's
        # training rows, so selection cannot lean on any test image.
        spec = RunSpec(direction, "real")
        folder = layout.run_dir(self.out, spec.run_id)
        return str(folder) if (folder / "model.pt").exists() else None

    def train(self, specs: list[RunSpec]) -> None:
        """Train the classifier of each run; a finished run is reused unless its training
        images changed (e.g. a reviewer overrode the selection), then it is trained again."""
        todo = []
        for spec in specs:
            content = self._run_manifest(spec)
            if not run_is_current(layout.run_dir(self.out, spec.run_id), content):
                todo.append((spec, content))
        if not todo:
            return
        if self.config.executor.kind == "ray":
            self._train_on_ray(todo)
            return
        for i, (spec, content) in enumerate(todo, 1):
            self.echo(f"training [{i}/{len(todo)}] {spec.run_id}")
            train_one(self.out, self.config, spec, self.conditions, content)

    def _train_on_ray(self, todo: list[tuple[RunSpec, bytes]]) -> None:
        try:
            import ray
        except ImportError:
            raise DermsynthError(
                "executor.kind is 'ray' but Ray is not installed: pip install 'dermsynth[ray]'"
            ) from None
        if not ray.is_initialized():
            ray.init(
                address=self.config.executor.address,
                num_cpus=None if self.config.executor.address else self.config.executor.workers,
                include_dashboard=False,
                log_to_driver=False,
            )
        remote = ray.remote(train_one)
        self.echo(f"training {len(todo)} runs on Ray")
        ray.get(
            [
                remote.remote(self.out, self.config, spec, self.conditions, content)
                for spec, content in todo
            ]
        )

    def _run_manifest(self, spec: RunSpec) -> bytes:
        """The CSV a run trains and is tested on, as it would be written now."""
        selected = None
        if spec.arm == "real+seed+synthetic":
            selected = self._selection(spec.direction, spec.augmented)
        return manifest_bytes(run_manifest(self._plan(spec.direction), spec, selected))

    @functools.cache  # noqa: B019 - one runner, a handful of directions
    def _plan(self, direction: str) -> pd.DataFrame:
        # Read back as written, so a run's manifest is the same bytes in every session.
        return load_manifest(layout.splits_path(self.out, direction))

    def _selection(self, direction: str, condition: str) -> pd.DataFrame:
        """The synthetic images a study trains on, read fresh (a reviewer may have changed them)."""
        frame = load_manifest(layout.selection_path(self.out, direction, condition))
        return training_selection(frame, self.config.synthetic_per_seed)

    def collect(self) -> None:
        """Metrics of every finished run, paired comparisons between arms, Figure 2's images."""
        from dermsynth.evaluate.metrics import evaluate_predictions, load_predictions

        accuracy, groups, status = [], [], []
        predictions: dict[str, pd.DataFrame] = {}
        for spec in self.runs:
            folder = layout.run_dir(self.out, spec.run_id)
            meta = {"run_id": spec.run_id, **dataclasses.asdict(spec)}
            done = (folder / layout.DONE_FILE).exists()
            status.append({**meta, "status": "done" if done else "missing"})
            if not done:
                continue
            preds = load_predictions(folder / "predictions.csv")
            predictions[spec.run_id] = preds
            evaluation = evaluate_predictions(preds, list(self.directions[spec.direction].tests))
            accuracy.append(evaluation.table.assign(**meta))
            groups.append(evaluation.summary.assign(**meta))
        results = layout.results_dir(self.out)
        atomic_write_csv(results / "runs.csv", pd.DataFrame(status))
        if accuracy:
            atomic_write_csv(
                results / "accuracy.csv", _meta_first(pd.concat(accuracy, ignore_index=True))
            )
            atomic_write_csv(
                results / "groups.csv", _meta_first(pd.concat(groups, ignore_index=True))
            )
        atomic_write_csv(results / "paired.csv", self._paired(predictions))
        atomic_write_csv(results / "figure2.csv", self._figure2())

    def _paired(self, predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
        from dermsynth.evaluate.paired import compare_predictions

        rows = []
        for spec in self.runs:
            if spec.arm == "real" or spec.run_id not in predictions:
                continue
            baselines = [RunSpec(spec.direction, "real", repeat=spec.repeat)]
            if spec.arm == "real+seed+synthetic":
                baselines.append(
                    RunSpec(spec.direction, "real+seed", spec.augmented, repeat=spec.repeat)
                )
            for base in baselines:
                if base.run_id not in predictions:
                    continue
                table = compare_predictions(
                    predictions[base.run_id],
                    predictions[spec.run_id],
                    list(self.directions[spec.direction].tests),
                    random_seed=self.config.random_seed,
                )
                rows.append(
                    table.assign(
                        direction=spec.direction,
                        augmented=spec.augmented,
                        repeat=spec.repeat,
                        arm_a=base.arm,
                        arm_b=spec.arm,
                        dose_b=spec.dose,
                    )
                )
        if not rows:
            return pd.DataFrame(
                columns=["direction", "augmented", "repeat", "arm_a", "arm_b", "dose_b"]
            )
        frame = pd.concat(rows, ignore_index=True)
        first = ["direction", "augmented", "repeat", "arm_a", "arm_b", "dose_b"]
        return frame[first + [c for c in frame.columns if c not in first]]

    def _figure2(self) -> pd.DataFrame:
        rows = []
        if "real+seed+synthetic" in self.config.arms:
            for name, plan in self.plan.splits.items():
                seeds = plan[plan["split"] == "seed"].set_index("image_id")
                for condition in self.augmented:
                    if not layout.selection_path(self.out, name, condition).exists():
                        continue
                    kept = self._selection(name, condition)
                    for row in kept.sort_values(["parent_id", "rank"]).itertuples():
                        rows.append(
                            {
                                "direction": name,
                                "condition": condition,
                                "seed_id": row.parent_id,
                                "seed_path": seeds.loc[row.parent_id, "path"]
                                if row.parent_id in seeds.index
                                else "",
                                "synthetic_path": row.path,
                                "rank": row.rank,
                            }
                        )
        return pd.DataFrame(
            rows,
            columns=["direction", "condition", "seed_id", "seed_path", "synthetic_path", "rank"],
        )

    def run(self) -> Path:
        """Every step in order, holding the folder's lock; returns the run folder."""
        with study_lock(self.out):
            # Under the lock no other writer is mid-write here: what a killed run left is junk.
            claim_folder(self.config, self.out, force=self.force)
            clear_partials(self.out)
            return self._run_steps()

    def _run_steps(self) -> Path:
        started = time.perf_counter()
        self.write_inputs()
        real = [s for s in self.runs if s.arm == "real"]
        self.train(real)  # first: the real-arm models also score pathology during selection
        self.generate()
        self.select()
        self.train([s for s in self.runs if s.arm != "real"])
        self.collect()
        self.echo(f"study finished in {time.perf_counter() - started:.0f} s: {self.out}")
        return self.out


def _meta_first(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in RUN_META if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def manifest_bytes(rows: pd.DataFrame) -> bytes:
    """A run manifest as the exact CSV bytes written to its folder (plan columns first)."""
    first = [c for c in PLAN_COLUMNS if c in rows.columns]
    ordered = rows[first + [c for c in rows.columns if c not in first]]
    return ordered.to_csv(index=False, lineterminator="\n").encode()


def run_is_current(folder: Path, content: bytes) -> bool:
    """True when the run in ``folder`` finished on exactly the manifest ``content``."""
    manifest = folder / "manifest.csv"
    return (
        (folder / layout.DONE_FILE).exists()
        and manifest.is_file()
        and manifest.read_bytes() == content
    )


def train_one(
    out: Path, config: StudyConfig, spec: RunSpec, classes: list[str], content: bytes
) -> str:
    """Train and evaluate one run on the manifest ``content`` into ``RUN/runs/<run_id>``
    (a no-op when it finished on that manifest)."""
    from dermsynth.train.run import train_run

    folder = layout.run_dir(out, spec.run_id)
    if run_is_current(folder, content):
        return spec.run_id
    manifest_path = folder / "manifest.csv"
    if folder.exists():
        same = manifest_path.is_file() and manifest_path.read_bytes() == content
        if (folder / layout.DONE_FILE).exists() or not same:
            # Trained on other images: start again. An unfinished run on the same images is
            # left alone, and training resumes from its last epoch.
            shutil.rmtree(folder)
    atomic_write_bytes(manifest_path, content)
    result = train_run(
        manifest_path,
        folder,
        train_config(config, spec.repeat, classes),
        cache_dir=layout.cache_dir(out),
    )
    atomic_write_json(
        folder / layout.DONE_FILE, {"seconds": round(result.seconds, 2), "reused": result.reused}
    )
    return spec.run_id


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    force: bool = False,
    echo: Echo = _stderr,
    progress: bool = True,
) -> Path:
    """Run (or resume) a whole study into ``out``."""
    return StudyRunner(config, out, force=force, echo=echo, progress=progress).run()
