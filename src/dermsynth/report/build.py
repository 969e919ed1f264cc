"""The study report: one self-contained HTML page plus every table as CSV beside it.

The page opens with the study's findings (:mod:`dermsynth.study.findings`: every comparison of
the synthetic arm with every other arm, in both directions, favourable or not), then the
paper's Table 1, Figure 2, Table 2, Figure 3, Table 3 and Supplementary Table 1, every arm at
the full dose, the comparisons with their corrected p-values, fairness across the test groups
and the methods. Sections are built here as data and laid out by the Jinja2 template
``templates/report.html.j2``; figures come from :mod:`dermsynth.report.figures`. Images are
embedded as base64 PNG and the style sheet is inline, so the file can be mailed or archived
alone. An unfinished run still gets a report: what exists is shown, what is missing is listed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.arms import ARMS, PAPER_ARMS
from dermsynth.data.fst import roman_label
from dermsynth.data.simulate import SIMULATED_NOTE
from dermsynth.io import atomic_write_csv, atomic_write_text
from dermsynth.report import figures, tables
from dermsynth.report.load import StudyRun, load_run
from dermsynth.study.findings import headline
from dermsynth.study.layout import report_dir

REPORT_FILE = "index.html"
TEMPLATE = "report.html.j2"
STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       margin: 0 auto; max-width: 1180px; padding: 0 24px 40px; }
h1 { font-size: 24px; margin: 18px 0 4px; }
h2 { font-size: 19px; margin: 34px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 4px; }
.banner { background: #fff0f0; border: 2px solid #c00000; color: #900000; font-weight: 600;
          padding: 10px 14px; margin: 14px 0; border-radius: 4px; }
.missing { background: #fff8e5; border: 1px solid #e0b000; padding: 8px 14px; margin: 14px 0;
           border-radius: 4px; }
.lead { font-size: 15px; background: #f4f7fb; border-left: 4px solid #0072B2; padding: 8px 12px; }
.meta { color: #444; } .meta td { padding: 1px 12px 1px 0; vertical-align: top; }
.meta td:first-child { color: #777; white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 9px; }
th { background: #f4f5f7; font-weight: 600; text-align: center; }
th.group { background: #e8ecf2; }
td.val { text-align: center; white-space: nowrap; }
td.first { text-align: left; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafafa; }
.sub { color: #777; font-size: 11px; }
.note { color: #555; font-size: 13px; max-width: 900px; }
.csv { color: #777; font-size: 12px; }
.list li { margin: 2px 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 6px 0; }
nav a { margin-right: 12px; }
footer { margin-top: 40px; color: #777; font-size: 12px; border-top: 1px solid #ddd; }
"""


# --------------------------------------------------------------------------- page pieces


@dataclass
class HeaderCell:
    """A column heading spanning ``span`` columns."""

    text: str
    span: int = 1
    group: bool = False


@dataclass
class TableView:
    """A DataFrame as the template lays it out: heading rows with spans, cells as lines."""

    header: list[list[HeaderCell]]
    rows: list[list[list[str]]]


def table_view(frame: pd.DataFrame) -> TableView:
    """A DataFrame as a :class:`TableView`; two-level columns get spanning group headings."""
    columns = list(frame.columns)
    if isinstance(frame.columns, pd.MultiIndex):
        depth = frame.columns.nlevels
        header = []
        for level in range(depth):
            row: list[HeaderCell] = []
            i = 0
            while i < len(columns):
                span = 1
                while (
                    level < depth - 1
                    and i + span < len(columns)
                    and columns[i + span][: level + 1] == columns[i][: level + 1]
                ):
                    span += 1
                text = str(columns[i][level])
                row.append(HeaderCell(text, span, level < depth - 1 and bool(text)))
                i += span
            header.append(row)
    else:
        header = [[HeaderCell(str(c)) for c in columns]]
    rows = [[_lines(v) for v in record] for record in frame.itertuples(index=False)]
    return TableView(header, rows)


def _lines(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return [""]
    return str(value).split("\n")


@dataclass
class Block:
    """One piece of a section: a note, a heading, a table, an image or a list."""

    kind: str
    text: str = ""
    caption: str = ""
    view: TableView | None = None
    data: str = ""
    items: list[str] = field(default_factory=list)


def note(text: str) -> Block:
    """A paragraph of explanation."""
    return Block("note", text)


def table_block(frame: pd.DataFrame, caption: str = "") -> Block:
    """A table with its caption."""
    return Block("table", caption=caption, view=table_view(frame))


def image_block(png: bytes, alt: str) -> Block:
    """A figure, embedded."""
    return Block("image", text=alt, data=base64.b64encode(png).decode("ascii"))


@dataclass
class Section:
    """A section of the page and the CSV files of its tables."""

    anchor: str
    nav: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    csv: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A rendered report: the page, its tables (tidy, for CSV) and what was missing."""

    run: StudyRun
    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _absent(what: str, needs: str) -> list[Block]:
    return [note(f"Not available: {what} needs {needs}, which this run does not have yet.")]


# --------------------------------------------------------------------------- sections


class _Builder:
    """Builds the sections of one run's report, collecting its CSV tables and what is missing."""

    def __init__(self, run: StudyRun, max_seeds: int) -> None:
        self.run = run
        self.max_seeds = max_seeds
        self.config = run.config
        self.full_dose = run.full_dose
        self.augmented = list(self.config.augmented)
        self.arms = [a for a in ARMS if a in self.config.arms]
        self.out: dict[str, pd.DataFrame] = {}
        self.missing = list(run.missing)
        summary = run.table("summary")
        self.cells = (
            tables.arm_cells(summary, self.augmented, self.full_dose, self.arms)
            if summary is not None
            else None
        )

    def keep(self, name: str, frame: pd.DataFrame) -> str:
        """Remember a tidy table for its CSV; returns the file name."""
        self.out[name] = frame
        return f"{name}.csv"

    def findings(self) -> Section:
        section = Section("findings", "Findings", "Findings")
        found = self.run.table("findings")
        if found is None or found.empty:
            section.blocks = _absent("the findings", "results/findings.csv (finished runs)")
            return section
        counts = headline(found)
        section.blocks.append(
            Block(
                "lead",
                f"Of {counts['comparisons']} comparisons of the synthetic arm (at the full dose "
                f"of {self.full_dose} images) with another arm, on the augmented condition in "
                f"each test group of each direction: {counts['better']} favour the synthetic "
                f"arm, {counts['worse']} favour the other arm, and {counts['no_difference']} show "
                f"no significant difference after Holm correction. {counts['harms']} spillover "
                f"comparisons show a drop on another condition "
                f"({counts['significant_harms']} significant after correction).",
            )
        )
        section.blocks.append(
            note(
                "Every cell is shown, in both directions, by the rules in Methods: a verdict "
                "needs Holm-adjusted p < 0.05 over the whole family of comparisons; the numbers "
                "are synthetic minus the other arm, with 95% hierarchical-bootstrap intervals."
            )
        )
        for (direction, condition), _ in found[found["kind"] != "harm"].groupby(
            ["direction", "augmented"], sort=False
        ):
            shown = tables.findings_display(found, str(direction), str(condition))
            section.blocks.append(
                table_block(
                    shown, f"{tables.direction_label(str(direction))}, {condition} augmented"
                )
            )
        section.blocks.append(
            image_block(figures.forest_figure(found, self.run.simulated), "Forest plot")
        )
        harms = tables.harms_display(found)
        section.blocks.append(Block("heading", "Largest drops on other conditions (spillover)"))
        section.blocks.append(
            table_block(harms) if not harms.empty else note("No drop on another condition.")
        )
        section.csv = [self.keep("findings", found)]
        return section

    def table1(self) -> Section:
        section = Section("table1", "Table 1", "Table 1: sample sizes")
        table1 = self.run.table("table1")
        if table1 is None:
            section.blocks = _absent("Table 1", "results/table1.csv")
            return section
        section.blocks = [
            table_block(
                tables.table1_display(table1),
                "Sample sizes of the conditions by Fitzpatrick skin type",
            )
        ]
        section.csv = [self.keep("table1", table1)]
        return section

    def figure2(self) -> Section:
        section = Section(
            "figure2", "Figure 2", "Figure 2: seeds and their selected synthetic images"
        )
        fig2 = self.run.table("figure2")
        if fig2 is None:
            section.blocks = _absent("Figure 2", "results/figure2.csv")
            return section
        if fig2.empty:
            section.blocks = [note("No seeds with selected synthetic images yet.")]
            return section
        section.blocks.append(
            note(
                "Each row: a seed image (blue frame) and the synthetic images the study trains "
                "on from its candidates, best-ranked first."
            )
        )
        for block in figures.figure2(fig2, self.run.path, self.max_seeds, self.run.simulated):
            section.blocks.append(
                image_block(block.png, f"Figure 2: {block.condition}, {block.direction}")
            )
            if block.seeds_shown < block.seeds_total:
                section.blocks.append(
                    note(f"{block.seeds_shown} of {block.seeds_total} seeds shown.")
                )
            if block.missing:
                self.missing.append(
                    f"Figure 2 ({block.condition}, {block.direction}): {len(block.missing)} "
                    f"image(s) not found or unreadable, e.g. {block.missing[0]}"
                )
        return section

    def quality(self) -> Section:
        section = Section("quality", "Image quality", "The images each arm adds, measured")
        quality = self.run.table("synthetic_quality")
        if quality is None or quality.empty:
            section.blocks = [
                note("Not measured: this study adds no images, or ran without evaluation.")
            ]
            return section
        section.blocks.append(
            note(
                "Each set an arm adds at the full dose, against real images of the same cell "
                "that no arm trains on and no test contains (the reference, named per row in "
                "the CSV). KID (with its SD over subsets) is near 0 only at large N: read it "
                "beside the extra-real row, real images measured the same way. CAS: recall of a "
                "classifier trained on the set alone, tested on real images, beside the same "
                "classifier trained on as many real images. Copy rate: share of images within "
                "the copy threshold of a seed, a training, reference or test image."
            )
        )
        for direction in dict.fromkeys(quality["direction"]):
            section.blocks.append(
                table_block(
                    tables.quality_display(quality, direction), tables.direction_label(direction)
                )
            )
        section.csv = [self.keep("synthetic_quality", quality)]
        signal = self.run.table("selection_signal")
        if signal is not None and not signal.empty:
            section.blocks.append(
                note(
                    "Selection's pathology score: how well the classifier that scored each "
                    "condition's candidates tells them from the other augmented conditions' "
                    "candidates (one-vs-rest AUROC; 0.5 = no signal). Its classifier has seen "
                    "the seeds, of which the candidates are variations: read it as an upper bound."
                )
            )
            section.blocks.append(table_block(tables.signal_display(signal)))
            section.csv.append(self.keep("selection_signal", signal))
        return section

    def table2(self) -> Section:
        section = Section("table2", "Table 2", "Table 2: accuracy by arm, direction and skin type")
        if self.cells is None or self.cells.empty:
            section.blocks = _absent("Table 2", "rows in results/summary.csv")
            return section
        paper = [a for a in PAPER_ARMS if a in self.arms]
        for condition in dict.fromkeys(self.cells["augmented"]):
            section.blocks.append(
                table_block(
                    tables.table2_display(self.cells, condition, paper),
                    f"{condition}: classification accuracy (95% CI), N",
                )
            )
        section.blocks.append(note(_interval_note(self.cells)))
        from dermsynth.report.external import external_blocks

        external, files = external_blocks(self, paper)
        section.blocks += external
        section.csv = [self.keep("table2", self.cells), *files]
        return section

    def every_arm(self) -> Section:
        section = Section("arms", "Every arm", "Every arm at the full dose")
        controls = [a for a in self.arms if a not in PAPER_ARMS]
        if self.cells is None or self.cells.empty or not controls:
            section.blocks = [note("This study trained only the paper's arms.")]
            return section
        section.blocks.append(
            note(
                "The control arms add as many rows (or as much sampling weight) as the synthetic "
                "arm at the same dose, made without a generator; extra-real adds real images "
                "of the target group: the ceiling."
            )
        )
        for condition in dict.fromkeys(self.cells["augmented"]):
            section.blocks.append(
                table_block(
                    tables.arms_display(self.cells, condition),
                    f"{condition}: accuracy (95% CI) of every arm",
                )
            )
        section.csv = ["table2.csv"]
        return section

    def figure3(self) -> Section:
        section = Section("figure3", "Figure 3", "Figure 3: accuracy by arm")
        if self.cells is None or self.cells.empty:
            section.blocks = _absent("Figure 3", "rows in results/summary.csv")
            return section
        section.blocks = [
            image_block(figures.figure3(self.cells, self.run.simulated), "Figure 3"),
            note("Bars: accuracy of the augmented condition in each test group; whiskers: 95% CI."),
        ]
        return section

    def table3(self) -> Section:
        section = Section("table3", "Table 3", "Table 3: dose-response")
        summary = self.run.table("summary")
        t3 = tables.table3(summary, self.augmented) if summary is not None else None
        if t3 is None or t3.empty or self.cells is None:
            section.blocks = _absent("Table 3", "synthetic-arm rows in results/summary.csv")
            return section
        section.blocks = [
            table_block(
                tables.table3_display(t3),
                "Accuracy of the augmented condition by number of synthetic images added",
            ),
            image_block(
                figures.dose_response_figure(t3, self.cells, self.run.simulated), "Dose-response"
            ),
        ]
        section.csv = [self.keep("table3", t3)]
        return section

    def spillover(self) -> Section:
        section = Section(
            "spillover", "Supp. Table 1", "Supplementary Table 1: spillover to other conditions"
        )
        comparisons = self.run.table("comparisons")
        if comparisons is None:
            section.blocks = _absent("Supplementary Table 1", "results/comparisons.csv")
            return section
        sp = tables.spillover(comparisons, self.full_dose)
        section.blocks.append(
            note(
                "Change in accuracy of every condition (full synthetic arm minus real) when one "
                "condition is augmented, with its 95% interval and Holm p (spillover family)."
            )
        )
        for (direction, condition), _ in sp.groupby(["direction", "augmented"], sort=False):
            section.blocks.append(
                table_block(
                    tables.spillover_display(sp, str(direction), str(condition)),
                    f"{tables.direction_label(str(direction))}, {condition} augmented",
                )
            )
        section.csv = [self.keep("supp_table1", sp)]
        return section

    def comparisons(self) -> Section:
        section = Section("comparisons", "Comparisons", "The synthetic arm against every other arm")
        comparisons = self.run.table("comparisons")
        if comparisons is None:
            section.blocks = _absent("The comparisons", "results/comparisons.csv")
            return section
        section.blocks.append(
            note(
                "Paired on the same test images. The difference is pooled over repeats with a "
                "hierarchical bootstrap over repeats and test images (95% CI and p); McNemar's "
                "exact test per repeat is summarised beside it. Holm and Benjamini-Hochberg "
                "adjust p over the family stated in Methods. Shown: the full dose; every "
                "condition and dose is in the CSV."
            )
        )
        for (direction, condition), _ in comparisons.groupby(
            ["direction", "augmented"], sort=False
        ):
            shown = tables.comparisons_display(
                comparisons, str(direction), str(condition), self.full_dose
            )
            if not shown.empty:
                section.blocks.append(
                    table_block(
                        shown, f"{tables.direction_label(str(direction))}, {condition} augmented"
                    )
                )
        section.csv = [self.keep("comparisons", comparisons)]
        return section

    def fairness(self) -> Section:
        section = Section("fairness", "Fairness", "Fairness across the test groups")
        fairness = self.run.table("fairness")
        if fairness is None or fairness.empty:
            section.blocks = _absent("The fairness table", "results/fairness.csv")
            return section
        section.blocks = [
            note(
                "Per model (means over repeats): the worst test group and its accuracy, the gap "
                "and ratio between the worst and best group, the largest gap in true-positive "
                "rate of one condition across groups (equal opportunity), and one-vs-rest AUROC "
                "and expected calibration error (15 bins) per group."
            ),
            table_block(tables.fairness_display(fairness, self.full_dose)),
            image_block(figures.gap_figure(fairness, self.full_dose, self.run.simulated), "Gap"),
        ]
        section.csv = [self.keep("fairness", fairness)]
        return section

    def methods(self) -> Section:
        return Section("methods", "Methods", "Methods and reading notes", _methods(self.run))


def _interval_note(cells: pd.DataFrame) -> str:
    repeats = int(cells["repeats"].max()) if len(cells) else 1
    if repeats > 1:
        return (
            f"Each cell: the mean accuracy over {repeats} repeats (different training seeds, the "
            "same test images); its 95% interval is a hierarchical bootstrap over repeats and "
            "test images, so it includes training-seed variation (the paper's single-run Wald "
            "intervals do not). Under it: the SD and range over repeats."
        )
    return "Each cell: one run's accuracy with its 95% Wald interval, as the paper reports it."


def _methods(run: StudyRun) -> list[Block]:
    from dermsynth.study import findings

    config = run.config
    rules = [line.strip() for line in (findings.__doc__ or "").split("\n\n")[1].splitlines()]
    arms = [f"{a}: {ARMS[a].summary}" for a in ARMS if a in config.arms]
    return [
        note(
            "Accuracy of a condition in a skin-type group is the share of that group's test "
            "images of the condition that the model predicted as that condition. With one run "
            "its 95% CI is the Wald interval clipped to [0, 1] (the paper's: 0.175 with N = 177 "
            "gives 0.12-0.23); with repeats, a hierarchical bootstrap over repeats and images."
        ),
        Block("heading", "Arms"),
        Block("list", items=arms),
        note(
            f"Seeds are never in any test set, so every arm of a direction is scored on the same "
            f"test images. The full dose is {run.full_dose} images; controls add the same count."
        ),
        Block("heading", "Findings: rules and families"),
        note(" ".join(rules)),
        note(
            "Families for multiplicity: primary = every comparison of the synthetic arm with "
            "another arm on its augmented condition (all test groups, doses, directions); "
            "spillover = the same comparisons on every other condition and on all conditions "
            "together. Holm controls the family-wise error; Benjamini-Hochberg the false "
            "discovery rate."
        ),
        note(
            "A '—' marks a cell with no result: a group not tested in a direction, or a run not finished."
        ),
    ]


# --------------------------------------------------------------------------- page


def _meta(run: StudyRun) -> list[tuple[str, str]]:
    config = run.config
    directions = "; ".join(
        f"train FST {roman_label(d.train)} → test {', '.join(roman_label(t) for t in d.test)}"
        for d in config.directions
    )
    runs = run.table("runs")
    progress = "unknown (results/runs.csv missing)"
    if runs is not None:
        progress = f"{int((runs['status'].str.lower() == 'done').sum())} of {len(runs)} done"
    return [
        ("Run folder", str(run.path)),
        ("Config fingerprint", run.fingerprint or "(none)"),
        ("Conditions", ", ".join(config.conditions)),
        ("Augmented", ", ".join(config.augmented)),
        ("Directions", directions),
        ("Arms", ", ".join(config.arms)),
        (
            "Doses (synthetic images)",
            ", ".join(map(str, config.doses)) + f"; full arm = {run.full_dose}",
        ),
        ("Repeats", str(config.repeats)),
        ("Runs", progress),
    ]


def render_report(run_dir: str | Path, max_seeds: int = 4) -> Report:
    """Load a study run and render its report page (nothing is written)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    run = load_run(run_dir)
    builder = _Builder(run, max_seeds)
    steps: list[Callable[[], Section]] = [
        builder.findings,
        builder.table1,
        builder.figure2,
        builder.quality,
        builder.table2,
        builder.every_arm,
        builder.figure3,
        builder.table3,
        builder.spillover,
        builder.comparisons,
        builder.fairness,
        builder.methods,
    ]
    sections = [step() for step in steps]
    env = Environment(
        loader=PackageLoader("dermsynth.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
    )
    name = run.config.name
    context: dict[str, Any] = {
        "title": f"dermsynth report: {name}" + (" (simulated data)" if run.simulated else ""),
        "style": STYLE,
        "simulated": run.simulated,
        "simulated_note": SIMULATED_NOTE,
        "name": name,
        "meta": _meta(run),
        "missing": builder.missing,
        "sections": sections,
        "footer": f"{SIMULATED_NOTE}." if run.simulated else "Generated by dermsynth report.",
    }
    page = env.get_template(TEMPLATE).render(**context)
    return Report(run=run, html=page, tables=builder.out, missing=builder.missing)


def write_report(report: Report, out: str | Path | None = None) -> Path:
    """Write the page (default ``RUN/report/index.html``) and its tables as CSV beside it."""
    path = Path(out) if out is not None else report_dir(report.run.path) / REPORT_FILE
    for name, frame in report.tables.items():
        atomic_write_csv(path.parent / f"{name}.csv", frame)
    atomic_write_text(path, report.html)
    return path


def build_report(run_dir: str | Path, out: str | Path | None = None, max_seeds: int = 4) -> Path:
    """Render the report of a study run and write it; returns the HTML file's path."""
    return write_report(render_report(run_dir, max_seeds=max_seeds), out)
