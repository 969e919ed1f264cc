"""The report's figures as PNG bytes (matplotlib, no display needed).

Figures are built on ``matplotlib.figure.Figure`` directly rather than through pyplot, so no
global state or GUI backend is involved and building a report is safe inside a notebook or a
worker process. Functions take the tidy tables of :mod:`dermsynth.report.tables`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dermsynth.arms import REAL, REAL_SEED, SYNTHETIC
from dermsynth.data.simulate import SIMULATED_NOTE
from dermsynth.errors import DermsynthError
from dermsynth.report.load import resolve_image
from dermsynth.report.tables import (
    ARM_ORDER,
    direction_label,
    fst_label,
    group_sort_key,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
ARM_COLORS = {
    REAL: "#8c8c8c",
    REAL_SEED: "#E69F00",
    SYNTHETIC: "#0072B2",
    "real+seed+oversample": "#CC79A7",
    "real+seed+reweight": "#F0E442",
    "real+seed+classical": "#009E73",
    "real+seed+tone-shift": "#D55E00",
    "real+seed+extra-real": "#000000",
    "real+seed+synthetic-random": "#56B4E9",
}
GROUP_COLORS = ("#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
THUMBNAIL = 160


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DermsynthError(
            "the report's figures need matplotlib: `pip install matplotlib` (or reinstall "
            "dermsynth, which depends on it)"
        ) from None

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _title(figure: Figure, title: str, simulated: bool) -> None:
    # A figure copied out of the page must still say the data are simulated.
    text = f"{title}\n[{SIMULATED_NOTE}]" if simulated else title
    figure.suptitle(text, fontsize=11, color="#a00000" if simulated else "black")


def to_png(figure: Figure) -> bytes:
    """A figure as PNG bytes, without a software stamp (so equal figures give equal bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _grid(rows: int, cols: int, cell_w: float, cell_h: float) -> tuple[Figure, np.ndarray]:
    figure = _figure(max(cols * cell_w, 4.0), rows * cell_h + 0.8)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _blocks(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    conditions = list(dict.fromkeys(table["augmented"]))
    directions = list(dict.fromkeys(table["direction"]))
    return conditions, directions


def _yerr(rows: pd.DataFrame) -> np.ndarray:
    low = (rows["accuracy"] - rows["ci_low"]).clip(lower=0).fillna(0)
    high = (rows["ci_high"] - rows["accuracy"]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def _style(ax: Axes) -> None:
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def figure3(t2: pd.DataFrame, simulated: bool = False) -> bytes:
    """Bars of accuracy per test group by arm, with 95% CI whiskers (the paper's Figure 3).

    One panel per augmented condition (rows) and direction (columns); ``t2`` is the tidy
    Table 2.
    """
    conditions, directions = _blocks(t2)
    figure, axes = _grid(len(conditions), len(directions), 4.2, 3.0)
    arms = [a for a in ARM_ORDER if a in set(t2["arm"])]
    width = 0.8 / max(len(arms), 1)
    for r, condition in enumerate(conditions):
        for c, direction in enumerate(directions):
            ax = axes[r, c]
            rows = t2[(t2["augmented"] == condition) & (t2["direction"] == direction)]
            groups = sorted(set(rows["fst_group"]), key=group_sort_key)
            x = np.arange(len(groups))
            for i, arm in enumerate(arms):
                of_arm = rows[rows["arm"] == arm].set_index("fst_group").reindex(groups)
                dose = (
                    int(rows.loc[rows["arm"] == arm, "dose"].max())
                    if (rows["arm"] == arm).any()
                    else 0
                )
                label = f"{arm} (+{dose})" if arm == SYNTHETIC and dose else arm
                ax.bar(
                    x + (i - (len(arms) - 1) / 2) * width,
                    of_arm["accuracy"].fillna(0).to_numpy(float),
                    width,
                    yerr=_yerr(of_arm),
                    capsize=3,
                    color=ARM_COLORS.get(arm, "#444444"),
                    label=label,
                    error_kw={"elinewidth": 0.9, "ecolor": "#333333"},
                )
            ax.set_xticks(x, [f"FST {fst_label(g)}" for g in groups])
            ax.set_title(f"{condition}\n{direction_label(direction)}", fontsize=9)
            _style(ax)
            if c == 0:
                ax.set_ylabel("accuracy (95% CI)")
            if r == 0 and c == len(directions) - 1:
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _title(figure, "Accuracy by arm and test group", simulated)
    return to_png(figure)


def dose_response_figure(t3: pd.DataFrame, t2: pd.DataFrame, simulated: bool = False) -> bytes:
    """Accuracy against synthetic images added, a line per test group with CI whiskers.

    Dose 0 is the seed-only arm; the dotted line of each group's colour is the ``real`` arm.
    """
    conditions, directions = _blocks(t3)
    figure, axes = _grid(len(conditions), len(directions), 4.2, 3.0)
    for r, condition in enumerate(conditions):
        for c, direction in enumerate(directions):
            ax = axes[r, c]
            rows = t3[
                (t3["augmented"] == condition)
                & (t3["direction"] == direction)
                & t3["arm"].isin([REAL_SEED, SYNTHETIC])
            ]
            groups = sorted(set(rows["fst_group"]), key=group_sort_key)
            for i, group in enumerate(groups):
                color = GROUP_COLORS[i % len(GROUP_COLORS)]
                line = rows[rows["fst_group"] == group].sort_values("dose")
                ax.errorbar(
                    line["dose"],
                    line["accuracy"],
                    yerr=_yerr(line),
                    marker="o",
                    markersize=4,
                    capsize=3,
                    color=color,
                    label=f"FST {fst_label(group)}",
                    linewidth=1.4,
                )
                real = t2[
                    (t2["augmented"] == condition)
                    & (t2["direction"] == direction)
                    & (t2["arm"] == REAL)
                    & (t2["fst_group"] == group)
                ]
                if len(real) and pd.notna(real.iloc[0]["accuracy"]):
                    ax.axhline(real.iloc[0]["accuracy"], color=color, linestyle=":", linewidth=1)
            doses = sorted(set(rows["dose"]))
            if doses:
                ax.set_xticks(doses, [str(d) for d in doses])
            ax.set_xlabel("synthetic images added (0 = seeds only; dotted = real)", fontsize=8)
            ax.set_title(f"{condition}\n{direction_label(direction)}", fontsize=9)
            _style(ax)
            if c == 0:
                ax.set_ylabel("accuracy (95% CI)")
            ax.legend(fontsize=7, loc="lower right", frameon=False)
    _title(figure, "Dose-response", simulated)
    return to_png(figure)


def gap_figure(fairness: pd.DataFrame, full_dose: int, simulated: bool = False) -> bytes:
    """Best-minus-worst test-group accuracy per arm at the full dose: one panel per direction,
    bars grouped by augmented condition (``real``, shared by all, repeated in each group)."""
    rows = fairness[(fairness["dose"] == 0) | (fairness["dose"] == full_dose)]
    directions = list(dict.fromkeys(rows["direction"]))
    conditions = [c for c in dict.fromkeys(rows["augmented"]) if c]
    figure, axes = _grid(1, len(directions), max(1.9 * len(conditions) + 1.5, 4.2), 3.4)
    arms = [a for a in ARM_ORDER if a in set(rows["arm"])]
    width = 0.8 / max(len(arms), 1)
    x = np.arange(max(len(conditions), 1))
    for c, direction in enumerate(directions):
        ax = axes[0, c]
        block = rows[rows["direction"] == direction]
        for i, arm in enumerate(arms):
            heights, errors = [], []
            for condition in conditions or [""]:
                match = block[(block["arm"] == arm) & (block["augmented"].isin([condition, ""]))]
                if arm != REAL:
                    match = match[match["augmented"] == condition]
                heights.append(float(match.iloc[0]["gap"]) if len(match) else np.nan)
                errors.append(float(match.iloc[0]["gap_sd"]) if len(match) else np.nan)
            errors_arr = np.nan_to_num(np.array(errors, dtype=float))
            ax.bar(
                x + (i - (len(arms) - 1) / 2) * width,
                np.nan_to_num(heights),
                width,
                yerr=errors_arr if errors_arr.any() else None,
                capsize=2,
                color=ARM_COLORS.get(arm, "#444444"),
                label=arm,
            )
        ax.set_ylim(bottom=0)
        ax.set_xticks(x, conditions or ["(none)"], fontsize=8)
        ax.set_title(direction_label(direction), fontsize=9)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if c == 0:
            ax.set_ylabel("best − worst group accuracy")
        if c == len(directions) - 1:
            ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(figure, "Fairness gap between test groups (whiskers: SD over repeats)", simulated)
    return to_png(figure)


def forest_figure(findings: pd.DataFrame, simulated: bool = False) -> bytes:
    """Synthetic minus each other arm on the augmented condition, per test group, with 95% CIs:
    one panel per augmented condition and direction; filled markers are significant after Holm
    correction."""
    rows = findings[findings["kind"] == "comparison"]
    blocks = list(dict.fromkeys(zip(rows["augmented"], rows["direction"], strict=True)))
    cols = len({d for _, d in blocks}) or 1
    conditions = list(dict.fromkeys(rows["augmented"]))
    figure, axes = _grid(max(len(conditions), 1), cols, 5.2, 3.0)
    directions = list(dict.fromkeys(rows["direction"]))
    for r, condition in enumerate(conditions):
        for c, direction in enumerate(directions):
            ax = axes[r, c]
            block = rows[(rows["augmented"] == condition) & (rows["direction"] == direction)]
            arms = [a for a in ARM_ORDER if a in set(block["arm_other"])]
            groups = sorted(set(block["fst_group"]), key=group_sort_key)
            for i, group in enumerate(groups):
                color = GROUP_COLORS[i % len(GROUP_COLORS)]
                cells = block[block["fst_group"] == group].set_index("arm_other").reindex(arms)
                y = np.arange(len(arms)) + (i - (len(groups) - 1) / 2) * 0.25
                err = np.vstack(
                    [
                        (cells["difference"] - cells["ci_low"]).clip(lower=0).fillna(0),
                        (cells["ci_high"] - cells["difference"]).clip(lower=0).fillna(0),
                    ]
                )
                ax.errorbar(
                    cells["difference"],
                    y,
                    xerr=err,
                    fmt="none",
                    ecolor=color,
                    elinewidth=1,
                    capsize=2,
                )
                significant = (cells["p_holm"] < 0.05).to_numpy()
                ax.scatter(
                    cells["difference"][significant],
                    y[significant],
                    color=color,
                    s=22,
                    label=f"FST {fst_label(group)}",
                )
                ax.scatter(cells["difference"][~significant], y[~significant], facecolors="white",
                           edgecolors=color, s=22)  # fmt: skip
            ax.axvline(0, color="#555555", linewidth=0.8)
            ax.set_yticks(np.arange(len(arms)), arms, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("synthetic − other arm (accuracy)", fontsize=8)
            ax.set_title(f"{condition}\n{direction_label(direction)}", fontsize=9)
            ax.legend(fontsize=7, frameon=False, loc="lower right")
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
    _title(
        figure, "Synthetic arm against every other arm (filled: significant after Holm)", simulated
    )
    return to_png(figure)


@dataclass
class Figure2:
    """One block of Figure 2: seeds of one condition and direction beside their selections."""

    direction: str
    condition: str
    png: bytes
    seeds_shown: int
    seeds_total: int
    missing: list[str] = field(default_factory=list)


def _thumbnail(path: Path | None) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            rgb.thumbnail((THUMBNAIL, THUMBNAIL))
            return np.asarray(rgb)
    except (OSError, UnidentifiedImageError):
        return None


def figure2(
    fig2: pd.DataFrame, run: Path, max_seeds: int = 4, simulated: bool = False
) -> list[Figure2]:
    """Seeds beside their selected synthetic images (the paper's Figure 2), one block per
    direction x condition, ``max_seeds`` seeds each. Images that cannot be read are drawn as
    grey tiles and named in ``missing``.
    """
    blocks = []
    for (direction, condition), block in fig2.groupby(["direction", "condition"], sort=False):
        seeds = list(dict.fromkeys(block["seed_id"]))
        shown = seeds[:max_seeds]
        per_seed = max(int(block.groupby("seed_id").size().max()), 1)
        figure, axes = _grid(len(shown), per_seed + 1, 1.45, 1.5)
        missing: list[str] = []

        def draw(ax: Axes, value: str, title: str, missing: list[str] = missing) -> None:
            pixels = _thumbnail(resolve_image(run, value))
            if pixels is None:
                ax.imshow(np.full((8, 8, 3), 225, dtype=np.uint8))
                ax.text(3.5, 3.5, "missing", ha="center", va="center", fontsize=8, color="#a00000")
                missing.append(value or "(no path)")
            else:
                ax.imshow(pixels)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])

        for r, seed in enumerate(shown):
            rows = block[block["seed_id"] == seed].sort_values("rank")
            draw(axes[r, 0], str(rows.iloc[0]["seed_path"]), f"seed {str(seed)[:10]}")
            for spine in axes[r, 0].spines.values():
                spine.set_edgecolor("#0072B2")
                spine.set_linewidth(2)
            for k in range(per_seed):
                ax = axes[r, k + 1]
                if k < len(rows):
                    draw(
                        ax,
                        str(rows.iloc[k]["synthetic_path"]),
                        f"synthetic #{int(rows.iloc[k]['rank'])}",
                    )
                else:
                    ax.axis("off")
        _title(figure, f"{condition}: {direction_label(str(direction))}", simulated)
        blocks.append(
            Figure2(
                str(direction),
                str(condition),
                to_png(figure),
                len(shown),
                len(seeds),
                sorted(set(missing)),
            )
        )
    return blocks
