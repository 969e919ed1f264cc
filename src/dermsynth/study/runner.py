"""Run a whole study: seeds, generation, selection, one classifier per run, metrics.

Every step writes its outputs atomically and is skipped when its outputs exist, so a study
killed at any moment continues where it stopped when run again; finished classifier runs are
never redone. Work shared by many runs is done once: the frozen features of an image view are
cached under ``RUN/cache`` and read by every run; each condition's candidates are generated and
selected once per direction. The folder layout is in :mod:`dermsynth.study.layout`; what each
arm trains on is in :mod:`dermsynth.arms`.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dermsynth.arms import ARMS, REAL, REAL_SEED, ArmInputs
from dermsynth.config import ClassifierConfig, StudyConfig
from dermsynth.data.manifest import load_manifest, relative_paths, write_manifest
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
from dermsynth.schema import PLAN_COLUMNS, SEED, SYNTHETIC, TEST, TRAIN, VIEW_SET, WEIGHT
from dermsynth.study import layout
from dermsynth.study.external import load_external, score_external
from dermsynth.study.grid import (
    SYNTHETIC_POOLS,
    RunSpec,
    directions_of,
    plan_study,
    resolve_study_conditions,
    study_grid,
)

Echo = Callable[[str], None]


def stderr_echo(message: str) -> None:
    """Print a progress line to stderr (the default ``echo`` of a study)."""
    print(message, file=sys.stderr, flush=True)


def claim_folder(config: StudyConfig, out: Path, *, force: bool = False) -> None:
    """Make ``out`` this config's run folder; refuse a folder made by another config."""
    marker = out / layout.STUDY_FILE
    fingerprint = config.fingerprint()
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"--out {out} is a file; give a folder for the study")
    if marker.exists():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))["fingerprint"]
        except (ValueError, KeyError, OSError):
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


def train_settings(config: StudyConfig, repeat: int, classes: list[str]) -> ClassifierConfig:
    """The classifier settings of one run (the repeat sets the training seed)."""
    return config.classifier.updated(
        seed=config.random_seed + repeat, classes=tuple(classes), progress=False
    )


def run_manifest(plan: pd.DataFrame, spec: RunSpec, pool: pd.DataFrame | None) -> pd.DataFrame:
    """Training and test rows of one run: what its arm trains on, then the direction's test
    rows; every row with its sampler weight and view set."""
    arm = ARMS[spec.arm]
    seeds = plan[(plan["split"] == SEED) & (plan["label"] == spec.augmented)]
    inputs = ArmInputs(
        train=plan[plan["split"] == TRAIN],
        seeds=seeds if arm.augmented else seeds.iloc[:0],
        pool=pool if pool is not None else plan.iloc[:0],
        dose=spec.dose,
    )
    try:
        rows = arm.build(inputs)
    except DermsynthError as exc:
        raise DermsynthError(f"{spec.run_id}: {exc}") from None
    rows = pd.concat([rows, plan[plan["split"] == TEST]], ignore_index=True)
    weights = rows[WEIGHT] if WEIGHT in rows.columns else pd.Series(1.0, index=rows.index)
    view_sets = rows[VIEW_SET] if VIEW_SET in rows.columns else pd.Series(0, index=rows.index)
    columns: dict[str, pd.Series] = {
        WEIGHT: weights.fillna(1.0).astype(float),
        VIEW_SET: view_sets.fillna(0).astype(int),
    }
    return rows.assign(**columns)


def manifest_bytes(
    rows: pd.DataFrame, folder: Path | None = None, root: Path | None = None
) -> bytes:
    """A run manifest as the exact CSV bytes written to its ``folder`` (plan columns first;
    paths under the study folder ``root`` relative to ``folder``, as :func:`write_manifest`)."""
    if folder is not None and root is not None:
        rows = relative_paths(rows, folder, root)
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
        train_settings(config, spec.repeat, classes),
        cache_dir=layout.cache_dir(out),
    )
    atomic_write_json(
        folder / layout.DONE_FILE, {"seconds": round(result.seconds, 2), "reused": result.reused}
    )
    return spec.run_id


class StudyRunner:
    """Carries one study through its steps; each step is a method that can be called alone."""

    def __init__(
        self,
        config: StudyConfig,
        out: str | Path,
        *,
        force: bool = False,
        echo: Echo = stderr_echo,
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
        self.runs = study_grid(config, self.plan.splits)
        self.conditions, self.augmented = resolve_study_conditions(config, self.manifest)
        self.directions = {d.name: d for d in directions_of(config)}
        # External test sets are checked now, before hours of training.
        self.external = load_external(config, self.conditions)

    @property
    def generates(self) -> bool:
        """True when an arm of the study trains on generated images."""
        return any(ARMS[a].pool in SYNTHETIC_POOLS for a in self.config.arms)

    # -- steps ---------------------------------------------------------------------------------

    def write_inputs(self) -> None:
        """The dataset as loaded, each direction's plan, and Table 1."""
        write_manifest(self.manifest, self.out / layout.MANIFEST_FILE)
        for name, plan in self.plan.splits.items():
            write_manifest(plan, layout.splits_path(self.out, name), first=PLAN_COLUMNS)
        table = fst_table(self.manifest, self.conditions).reset_index()
        atomic_write_csv(layout.results_dir(self.out) / "table1.csv", table)

    def generate(self) -> None:
        """Candidates for every augmented condition and direction (resumable per image)."""
        if not self.generates:
            return
        from dermsynth.generate.run import generate

        params = self.config.generator_settings()
        for name, plan in self.plan.splits.items():
            for condition in self.augmented:
                folder = layout.generation_dir(self.out, name, condition)
                if (folder / layout.DONE_FILE).exists():
                    continue
                seeds = plan[(plan["split"] == SEED) & (plan["label"] == condition)]
                seeds_csv = folder / "seeds.csv"
                write_manifest(seeds, seeds_csv, first=PLAN_COLUMNS)
                self.echo(
                    f"generating {len(seeds)} x {self.config.candidates_per_seed} candidates: "
                    f"{name}, {condition}"
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
        if not self.generates:
            return
        from dermsynth.select.selection import select_candidates

        for name in self.plan.splits:
            for condition in self.augmented:
                out = layout.selection_path(self.out, name, condition)
                if (out.parent / layout.DONE_FILE).exists():
                    continue
                options = self.config.selection_settings().updated(
                    classifier=self._selection_classifier(name, condition)
                )
                self.echo(
                    f"selecting {self.config.synthetic_per_seed} per seed: {name}, {condition}"
                )
                result = select_candidates(
                    layout.generation_dir(self.out, name, condition) / "manifest.csv",
                    out,
                    options=options,
                    test_csv=layout.splits_path(self.out, name),
                    root=self.out,
                )
                atomic_write_json(out.parent / layout.DONE_FILE, {"notes": result.notes})

    def _selection_classifier(self, direction: str, condition: str) -> str | None:
        # The direction's real+seed model of the condition scores pathology: it has seen the
        # condition on the target skin type (its seeds) and no test image. Without it (a study
        # without that arm), the real-arm model.
        for spec in (RunSpec(direction, REAL_SEED, condition), RunSpec(direction, REAL)):
            folder = layout.run_dir(self.out, spec.run_id)
            if (folder / "model.pt").exists():
                return str(folder)
        return None

    def pathology_signal(self) -> None:
        """The one-vs-rest AUROC of each selection's pathology scorer on the direction's
        candidates (``results/selection_signal.csv``)."""
        from dermsynth.study import quality
        from dermsynth.train.datasets import resolve_paths

        frames = []
        for name in self.plan.splits:
            classifiers, parts = {}, []
            for condition in self.augmented:
                run = self._selection_classifier(name, condition)
                manifest = layout.generation_dir(self.out, name, condition) / "manifest.csv"
                if run is None or not manifest.exists():
                    continue
                classifiers[condition] = run
                rows = load_manifest(manifest)
                rows = rows[rows["origin"] == SYNTHETIC]
                parts.append(rows.assign(path=resolve_paths(rows["path"], manifest.parent)))
            if classifiers:
                candidates = pd.concat(parts, ignore_index=True)
                frames.append(quality.pathology_signal(name, candidates, classifiers))
        if frames:
            out = layout.results_dir(self.out) / quality.SIGNAL_FILE
            atomic_write_csv(out, pd.concat(frames, ignore_index=True))

    def train(self, specs: list[RunSpec]) -> None:
        """Train the classifier of each run; a finished run is reused unless its training
        images changed (e.g. a reviewer overrode the selection), then it is trained again."""
        todo = []
        for spec in specs:
            folder = layout.run_dir(self.out, spec.run_id)
            rows = self._run_rows(spec)
            content = manifest_bytes(rows, folder, self.out)
            if run_is_current(folder, content):
                continue
            if run_is_current(folder, manifest_bytes(rows)):
                # Finished by an earlier version on the same images, named by absolute path.
                atomic_write_bytes(folder / "manifest.csv", content)
                continue
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

    def _run_rows(self, spec: RunSpec) -> pd.DataFrame:
        """The rows a run trains and is tested on, as they would be written now."""
        pool = None
        kind = ARMS[spec.arm].pool
        if kind is not None:
            pool = self.pool(spec.direction, spec.augmented, kind)
        return run_manifest(self._plan(spec.direction), spec, pool)

    @functools.cache  # noqa: B019 - one runner, a handful of directions
    def _plan(self, direction: str) -> pd.DataFrame:
        # Read back as written, so a run's manifest is the same bytes in every session.
        return load_manifest(layout.splits_path(self.out, direction))

    def pool(self, direction: str, condition: str, kind: str) -> pd.DataFrame:
        """The images an arm draws from, best first (:mod:`dermsynth.study.pools`); selections
        are read fresh each time (a reviewer may change them), made images once."""
        from dermsynth.study.pools import PoolRequest, pool

        request = PoolRequest(
            out=self.out,
            direction=direction,
            condition=condition,
            plan=self._plan(direction),
            seed_group=self.directions[direction].seed_group,
            per_seed=self.config.synthetic_per_seed,
            size=self.config.full_dose,
            random_seed=self.config.random_seed,
            reserve=self._reserve(),
        )
        return pool(request, kind)

    @functools.cache  # noqa: B019 - one runner, one reserve table
    def _reserve(self) -> pd.DataFrame | None:
        dataset = self.config.dataset
        if dataset.reserve is None:
            return None
        from dermsynth.data.manifest import known_fst

        return known_fst(dataset.updated(csv=dataset.reserve).load())

    def make_pools(self) -> None:
        """Make the image pools of the control arms (once; a finished pool is read back)."""
        kinds = {ARMS[a].pool for a in self.config.arms} - {None, *SYNTHETIC_POOLS}
        for kind in sorted(k for k in kinds if k is not None):
            for name in self.plan.splits:
                for condition in self.augmented:
                    self.echo(f"making the {kind} pool: {name}, {condition}")
                    self.pool(name, condition, kind)

    def measure_pools(self) -> None:
        """The synthetic-set metrics of every pool an arm adds, per direction (redone only when a
        pool's images change, e.g. after a review)."""
        from dermsynth.study import quality

        pools = quality.measured_pools(self.config.arms)
        if not pools or not self.config.evaluation.synthetic_quality:
            return
        out = layout.results_dir(self.out) / quality.QUALITY_FILE
        sets = {
            name: quality.full_dose_pools(
                functools.partial(self.pool, name),
                list(pools),
                self.augmented,
                self.config.full_dose,
            )
            for name in self.plan.splits
        }
        key = quality.pools_key(sets, self.config.evaluation.features)
        marker = out.with_suffix(".done.json")
        if out.exists() and marker.exists() and json.loads(marker.read_text())["key"] == key:
            return
        from dermsynth.evaluate.synthetic import image_measurements

        bank = image_measurements(self.config.evaluation.features)
        tables, notes = [], []
        for name, frames in sets.items():
            self.echo(f"measuring the images each arm adds: {name}")
            images = quality.DirectionImages(
                direction=name,
                seed_group=self.directions[name].seed_group,
                plan=self._plan(name),
                reserve=self._reserve(),
                augmented=tuple(self.augmented),
            )
            table, said = quality.measure_direction(
                images, frames, pools, features=bank, random_seed=self.config.random_seed
            )
            tables.append(table)
            notes.extend(said)
        atomic_write_csv(out, pd.concat(tables, ignore_index=True))
        atomic_write_json(out.parent / quality.QUALITY_NOTES_FILE, {"notes": notes})
        atomic_write_json(marker, {"key": key})

    def collect(self) -> None:
        """Metrics of every finished run, paired comparisons between arms, Figure 2's images."""
        from dermsynth.study.collect import collect_results

        collect_results(self)

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
        # First: the real and real+seed models score pathology during selection.
        self.train([s for s in self.runs if s.arm in (REAL, REAL_SEED)])
        self.generate()
        self.select()
        self.pathology_signal()
        self.make_pools()
        self.train([s for s in self.runs if s.arm not in (REAL, REAL_SEED)])
        score_external(self, self.external)
        self.measure_pools()
        self.collect()
        self.echo(f"study finished in {time.perf_counter() - started:.0f} s: {self.out}")
        return self.out


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    force: bool = False,
    echo: Echo = stderr_echo,
    progress: bool = True,
) -> Path:
    """Run (or resume) a whole study into ``out``."""
    return StudyRunner(config, out, force=force, echo=echo, progress=progress).run()
