"""The study report: one self-contained HTML page plus every table as CSV beside it.

The page holds the paper's Table 1, Figure 2, Table 2, Figure 3, Table 3 and Supplementary
Table 1, a dose-response plot, the paired tests between arms and the fairness gap. Images are
embedded as base64 PNG data URIs and the style sheet is inline, so the file can be mailed or
archived alone. A run that is not finished still gets a report: what exists is shown, and what
is missing is listed at the top.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dermsynth.data.fst import roman_label
from dermsynth.data.simulate import SIMULATED_NOTE
from dermsynth.io import atomic_write_csv, atomic_write_text
from dermsynth.report import figures, tables
from dermsynth.report.load import StudyRun, load_run
from dermsynth.study.layout import report_dir

REPORT_FILE = "index.html"
CSV_FILES: dict[str, str] = {
    "table1": "table1.csv",
    "table2": "table2.csv",
    "table3": "table3.csv",
    "spillover": "supp_table1.csv",
    "paired": "paired.csv",
    "gaps": "gaps.csv",
}


@dataclass
class Report:
    """A rendered report: the page, its tables (tidy, for CSV) and what was missing."""

    run: StudyRun
    html: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- HTML pieces


def _cell(value: object) -> str:
    """Escaped cell text; a second line (the spread over repeats) is set smaller."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    first, *rest = text.split("\n")
    out = html.escape(first)
    for line in rest:
        if line:
            out += f'<br><span class="sub">{html.escape(line)}</span>'
    return out


def html_table(frame: pd.DataFrame, caption: str | None = None) -> str:
    """A DataFrame as an HTML table; two-level columns get spanning group headings."""
    parts = ['<div class="scroll"><table>']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead>")
    columns = list(frame.columns)
    if isinstance(frame.columns, pd.MultiIndex):
        depth = frame.columns.nlevels
        for level in range(depth):
            parts.append("<tr>")
            i = 0
            while i < len(columns):
                span = 1
                while (
                    i + span < len(columns)
                    and columns[i + span][: level + 1] == columns[i][: level + 1]
                    and level < depth - 1
                ):
                    span += 1
                label = _cell(columns[i][level])
                attr = f' colspan="{span}"' if span > 1 else ""
                cls = ' class="group"' if level < depth - 1 and columns[i][level] else ""
                parts.append(f"<th{attr}{cls}>{label}</th>")
                i += span
            parts.append("</tr>")
    else:
        parts.append("<tr>" + "".join(f"<th>{_cell(c)}</th>" for c in columns) + "</tr>")
    parts.append("</thead><tbody>")
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="{"first" if j == 0 else "val"}">{_cell(v)}</td>' for j, v in enumerate(row)
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _csv_note(name: str) -> str:
    return f'<p class="csv">Also as CSV: <code>{html.escape(CSV_FILES[name])}</code></p>'


_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       margin: 0 auto; max-width: 1180px; padding: 0 24px 40px; }
h1 { font-size: 24px; margin: 18px 0 4px; }
h2 { font-size: 19px; margin: 34px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 4px; }
.banner { background: #fff0f0; border: 2px solid #c00000; color: #900000; font-weight: 600;
          padding: 10px 14px; margin: 14px 0; border-radius: 4px; }
.missing { background: #fff8e5; border: 1px solid #e0b000; padding: 8px 14px; margin: 14px 0;
           border-radius: 4px; }
.missing li { margin: 2px 0; }
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
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 6px 0; }
nav a { margin-right: 12px; }
footer { margin-top: 40px; color: #777; font-size: 12px; border-top: 1px solid #ddd; }
"""


# --------------------------------------------------------------------------- sections


def _section(anchor: str, title: str, body: list[str]) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{"".join(body)}</section>'


def _absent(what: str, needs: str) -> list[str]:
    return [_note(f"Not available: {what} needs {needs}, which this run does not have yet.")]


def _config_list(config: dict[str, object], key: str) -> list[str]:
    value = config.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def _directions(config: dict[str, object]) -> str:
    out = []
    for item in config.get("directions") or []:
        if isinstance(item, dict) and item.get("train"):
            tests = ", ".join(roman_label(t) for t in item.get("test") or [])
            out.append(f"train FST {roman_label(item['train'])} → test {tests}")
    return "; ".join(out)


def _header(run: StudyRun, tables_: dict[str, pd.DataFrame]) -> list[str]:
    config = run.config
    parts = []
    if run.simulated:
        parts.append(
            f'<div class="banner">SIMULATED DATA: {html.escape(SIMULATED_NOTE)}. Every number, '
            "table and figure in this report comes from images the package made itself; none "
            "says anything about real patients or real classifiers.</div>"
        )
    name = str(config.get("name", run.path.name))
    parts.append(f"<h1>Study report: {html.escape(name)}</h1>")
    runs = run.table("runs")
    progress = "unknown (results/runs.csv missing)"
    if runs is not None:
        done = int((runs["status"].str.lower() == "done").sum())
        progress = f"{done} of {len(runs)} done"
    rows = [
        ("Run folder", str(run.path)),
        ("Config fingerprint", run.fingerprint or "(none)"),
        ("Conditions", ", ".join(_config_list(config, "conditions"))),
        ("Augmented", ", ".join(_config_list(config, "augmented"))),
        ("Directions", _directions(config)),
        ("Arms", ", ".join(_config_list(config, "arms"))),
        (
            "Doses (synthetic images)",
            ", ".join(_config_list(config, "doses"))
            + (f"; full arm = {run.full_dose}" if run.full_dose else ""),
        ),
        ("Repeats", str(config.get("repeats", 1))),
        ("Runs", progress),
    ]
    parts.append(
        '<table class="meta">'
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )
    return parts


def _missing_box(missing: list[str]) -> str:
    items = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    return (
        '<div class="missing"><strong>This report is incomplete.</strong> It shows what the run '
        f"has finished; missing:<ul>{items}</ul>Re-run <code>dermsynth study run</code> to "
        "finish it, then <code>dermsynth report</code> again.</div>"
    )


_NAV = [
    ("table1", "Table 1"),
    ("figure2", "Figure 2"),
    ("table2", "Table 2"),
    ("figure3", "Figure 3"),
    ("table3", "Table 3"),
    ("spillover", "Supp. Table 1"),
    ("paired", "Paired tests"),
    ("gaps", "Fairness gap"),
    ("methods", "Methods"),
]


def render_report(run_dir: str | Path, max_seeds: int = 4) -> Report:
    """Load a study run and render its report page (nothing is written)."""
    run = load_run(run_dir)
    missing = list(run.missing)
    config = run.config
    augmented = _config_list(config, "augmented")
    arms = [a for a in tables.ARM_ORDER if a in (_config_list(config, "arms") or tables.ARM_ORDER)]
    simulated = run.simulated
    out: dict[str, pd.DataFrame] = {}
    body: list[str] = []

    # Table 1
    table1 = run.table("table1")
    if table1 is not None:
        out["table1"] = table1
        section = [
            html_table(
                tables.table1_display(table1),
                "Sample sizes of the conditions by Fitzpatrick skin type",
            ),
            _csv_note("table1"),
        ]
    else:
        section = _absent("Table 1", "results/table1.csv")
    body.append(_section("table1", "Table 1: sample sizes", section))

    # Figure 2
    fig2 = run.table("figure2")
    if fig2 is not None and not fig2.empty:
        blocks = figures.figure2(fig2, run.path, max_seeds=max_seeds, simulated=simulated)
        section = [
            _note(
                "Each row: a seed image (blue frame) and the synthetic images selected "
                "from its candidates, best-ranked first."
            )
        ]
        for block in blocks:
            section.append(_image(block.png, f"Figure 2: {block.condition}, {block.direction}"))
            if block.seeds_shown < block.seeds_total:
                section.append(_note(f"{block.seeds_shown} of {block.seeds_total} seeds shown."))
            if block.missing:
                missing.append(
                    f"Figure 2 ({block.condition}, {block.direction}): {len(block.missing)} "
                    f"image(s) not found or unreadable, e.g. {block.missing[0]}"
                )
    elif fig2 is not None:
        section = [
            _note("No seeds with selected synthetic images yet (results/figure2.csv is empty).")
        ]
    else:
        section = _absent("Figure 2", "results/figure2.csv")
    body.append(_section("figure2", "Figure 2: seeds and their selected synthetic images", section))

    accuracy = run.table("accuracy")
    t2 = t3 = None
    full_dose = (
        tables.full_dose_of(accuracy, run.full_dose) if accuracy is not None else run.full_dose
    )
    if accuracy is not None:
        t2 = tables.table2(accuracy, augmented, full_dose)
        t3 = tables.table3(accuracy, augmented)
        out["table2"], out["table3"] = t2, t3

    # Table 2 and Figure 3
    if t2 is not None and not t2.empty:
        section = []
        for condition in dict.fromkeys(t2["augmented"]):
            section.append(
                html_table(
                    tables.table2_display(t2, condition, arms, full_dose),
                    f"{condition}: classification accuracy (95% CI), N",
                )
            )
        section.append(_csv_note("table2"))
        figure3 = [
            _image(figures.figure3(t2, simulated), "Figure 3"),
            _note(
                "Bars: accuracy of the augmented condition in each test group; whiskers: 95% CI."
            ),
        ]
    else:
        section = _absent("Table 2", "rows in results/accuracy.csv")
        figure3 = _absent("Figure 3", "rows in results/accuracy.csv")
    body.append(_section("table2", "Table 2: accuracy by arm, direction and skin type", section))
    body.append(_section("figure3", "Figure 3: accuracy by arm", figure3))

    # Table 3 and the dose-response plot
    if t3 is not None and not t3.empty and t2 is not None:
        section = [
            html_table(
                tables.table3_display(t3),
                "Accuracy of the augmented condition by number of synthetic images added",
            ),
            _csv_note("table3"),
            _image(figures.dose_response_figure(t3, t2, simulated), "Dose-response"),
        ]
    else:
        section = _absent("Table 3", "synthetic-arm rows in results/accuracy.csv")
    body.append(_section("table3", "Table 3: dose-response", section))

    # Supplementary Table 1
    if accuracy is not None:
        sp = tables.spillover(accuracy, augmented, full_dose)
        out["spillover"] = sp
        section = [
            _note(
                "Change in accuracy of every condition (full synthetic arm minus real) "
                "when one condition is augmented."
            )
        ]
        for (direction, condition), _ in sp.groupby(["direction", "augmented"], sort=False):
            section.append(
                html_table(
                    tables.spillover_display(sp, direction, condition),
                    f"{tables.direction_label(direction)}, {condition} augmented",
                )
            )
        section.append(_csv_note("spillover"))
    else:
        section = _absent("Supplementary Table 1", "results/accuracy.csv")
    body.append(
        _section("spillover", "Supplementary Table 1: spillover to other conditions", section)
    )

    # Paired tests
    paired = run.table("paired")
    if paired is not None:
        ps = tables.paired_summary(paired)
        out["paired"] = ps
        section = [
            _note(
                "Arm B against arm A on the same test images: McNemar's exact test on the "
                "discordant images, and a bootstrap 95% CI of the accuracy difference. Shown: "
                "the augmented condition and all conditions together at the full dose; every "
                "condition and dose is in the CSV."
            ),
        ]
        for (direction, condition), _ in ps.groupby(["direction", "augmented"], sort=False):
            shown = tables.paired_display(ps, direction, condition, full_dose)
            if not shown.empty:
                section.append(
                    html_table(shown, f"{tables.direction_label(direction)}, {condition} augmented")
                )
        if ps.empty:
            section.append(_note("No paired comparisons yet."))
        section.append(_csv_note("paired"))
    else:
        section = _absent("The paired tests", "results/paired.csv")
    body.append(_section("paired", "Paired tests between arms", section))

    # Fairness gap
    groups = run.table("groups")
    if groups is not None:
        gp = tables.gaps(groups)
        out["gaps"] = gp
        shown = tables.gaps_display(gp, full_dose)
        section = [
            _note(
                "Best minus worst test-group accuracy (all conditions together) of each "
                "model: smaller is fairer. Balanced accuracy gaps are in the CSV."
            )
        ]
        if not shown.empty:
            section += [
                html_table(shown, "Gap between the best and worst test group"),
                _image(figures.gap_figure(gp, full_dose, simulated), "Fairness gap"),
            ]
            if bool((gp["repeats"] > 1).any()):
                section.append(_note("± and whiskers: SD of the gap over repeats."))
        section.append(_csv_note("gaps"))
    else:
        section = _absent("The fairness gap", "results/groups.csv")
    body.append(_section("gaps", "Fairness gap", section))

    body.append(_section("methods", "Methods and reading notes", _methods(config, full_dose)))

    title = f"dermsynth report: {config.get('name', run.path.name)}"
    if simulated:
        title += " (simulated data)"
    nav = "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in _NAV) + "</nav>"
    footer = (
        f"<footer><p>{html.escape(SIMULATED_NOTE)}.</p></footer>"
        if simulated
        else "<footer><p>Generated by dermsynth report.</p></footer>"
    )
    page = "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            *_header(run, out),
            _missing_box(missing) if missing else "",
            nav,
            *body,
            footer,
            "</body></html>\n",
        ]
    )
    return Report(run=run, html=page, tables=out, missing=missing)


def _methods(config: dict[str, object], full_dose: int | None) -> list[str]:
    repeats = config.get("repeats", 1)
    notes = [
        "Accuracy of a condition in a skin-type group is the share of that group's test images "
        "of the condition that the model predicted as that condition. Its 95% CI is the normal "
        "approximation (Wald) clipped to [0, 1], as in Sagers et al. (0.175 with N = 177 gives "
        "0.12-0.23); Wilson intervals are in results/accuracy.csv.",
        "Arms: real (training group only), real+seed (plus the seed images), "
        f"real+seed+synthetic (plus seeds and the full {full_dose or 'largest'} synthetic "
        "images). Seeds are never in any test set, so every arm of a direction is scored on "
        "the same test images.",
        f"Repeats ({repeats} in this study): with more than one, a cell is the mean accuracy "
        "over repeats and its 95% CI is the Wald interval at that mean with the cell's N test "
        "images (the test images are the same in every repeat, so pooling them would overstate "
        "the precision); the spread across repeats (SD, min-max) is given under it. With one "
        "repeat the cell is the run's own accuracy and CI.",
        "Paired tests with repeats: mean difference and its SD over repeats, the median McNemar "
        "p, how many repeats reached p < 0.05, and as CI the envelope of the repeats' bootstrap "
        "intervals (lowest lower bound to highest upper bound), which is conservative.",
        "A '—' marks a cell with no result: a group not tested in that direction, or a run not "
        "finished.",
    ]
    return [_note(n) for n in notes]


def write_report(report: Report, out: str | Path | None = None) -> Path:
    """Write the page (default ``RUN/report/index.html``) and its tables as CSV beside it."""
    path = Path(out) if out is not None else report_dir(report.run.path) / REPORT_FILE
    for name, frame in report.tables.items():
        atomic_write_csv(path.parent / CSV_FILES[name], frame)
    atomic_write_text(path, report.html)
    return path


def build_report(run_dir: str | Path, out: str | Path | None = None, max_seeds: int = 4) -> Path:
    """Render the report of a study run and write it; returns the HTML file's path."""
    return write_report(render_report(run_dir, max_seeds=max_seeds), out)
