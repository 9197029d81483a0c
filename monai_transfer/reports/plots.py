# Copyright (c) monai-transfer contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Report figures: ROC curve(s), confusion matrix and reliability diagram, readable on their own.

Figures are drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global backend switch, safe in
worker threads and headless servers) and written atomically as PNG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.metrics.functional import (
    DEFAULT_ECE_BINS,
    compute_calibration_bins,
    compute_ece,
    compute_roc_curve,
    confidence_correct,
    default_class_names,
    prepare_inputs,
)
from monai_transfer.utils.io import atomic_write
from monai_transfer.utils.task import Task, apply_threshold, as_task

__all__ = ["new_figure", "save_figure", "plot_roc", "plot_confusion_matrix", "plot_reliability"]

_DPI = 120


def new_figure(figsize: tuple[float, float] = (6.4, 5.6)) -> Any:
    """A matplotlib ``Figure`` bound to an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Render ``fig`` to PNG and write it atomically to ``path`` (``metadata``: PNG text fields, e.g. ``Title``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata=metadata)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _fmt_ci(ci: dict[str, Any] | None, k: int | None = None) -> str:
    if not ci:
        return ""
    if k is None:
        lo, hi = ci.get("lower"), ci.get("upper")
    else:
        pc = ci.get("per_class") or {}
        lo, hi = (pc.get("lower") or [None] * (k + 1))[k], (pc.get("upper") or [None] * (k + 1))[k]
    if lo is None or hi is None or not np.isfinite(lo) or not np.isfinite(hi):
        return ""
    level = int(round(100 * (1 - float(ci.get("alpha", 0.05)))))
    return f" ({level}% CI {lo:.3f}-{hi:.3f})"


def _auc_of(fpr: np.ndarray, tpr: np.ndarray) -> float:
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _mark_thresholds(
    ax: Any, p: np.ndarray, y: np.ndarray, task: Task, c: int, thresholds: dict[str, Any], colour: str
) -> None:
    """Mark each operating point of column ``c`` on its ROC curve (one legend entry per threshold)."""
    markers = ["o", "s", "^", "D", "v"]
    for j, (tname, tval) in enumerate(thresholds.items()):
        t = float(np.asarray(tval, dtype=float).reshape(-1)[c if np.size(tval) > 1 else 0])
        pred = apply_threshold(p, task, tval)[:, c] == 1
        sens = float(pred[y[:, c] == 1].mean())
        spec = float((~pred[y[:, c] == 0]).mean())
        ax.plot(1 - spec, sens, marker=markers[j % len(markers)], ms=9, mec="black", color=colour, ls="")
        if c == 0:  # one legend entry per threshold (a binary task has the one column)
            ax.plot(
                [],
                [],
                marker=markers[j % len(markers)],
                ms=9,
                mec="black",
                color="white",
                ls="",
                label=f"{tname} threshold {t:.3g}: sens {sens:.2f}, spec {spec:.2f}"
                if task.is_binary
                else f"{tname} threshold",
            )


def plot_roc(
    path: str | os.PathLike,
    y_prob: Any,
    y_true: Any,
    mode: str = "binary",
    class_names: Sequence[str] | None = None,
    auc_ci: dict[str, Any] | None = None,
    thresholds: dict[str, float | Sequence[float]] | None = None,
    title: str | None = None,
) -> Path:
    """ROC curve(s) with AUC (and its CI) in the legend, the chance diagonal and the operating point(s).

    Args:
        path: output PNG.
        y_prob: probabilities.
        y_true: labels.
        mode: task mode; multi-class/multi-label draw one one-vs-rest curve per class (10 colours, then dashed,
            dotted...); a class without positives (or negatives) is listed as "AUC undefined".
        class_names: names in the legend.
        auc_ci: a ``bootstrap_ci(..., metric="auc")`` result (its ``per_class`` entry for multi-class tasks).
        thresholds: operating points to mark, ``{"label": threshold}`` (e.g. ``{"operating": 0.43, "default": 0.5}``);
            binary and multi-label only.
        title: figure title; default names the task and the sample counts.
    """
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    k = p.shape[1]  # binary: the one positive-class column
    names = list(class_names) if class_names is not None else default_class_names(task, k)
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC 0.5)")
    colours = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    for c in range(k):
        fpr, tpr, thr = compute_roc_curve(p[:, c], y[:, c])
        if np.isnan(fpr).any() or np.isnan(tpr).any():  # class absent: no curve, but say so in the legend
            ax.plot([], [], color=colours[c % 10], ls="", label=f"{names[1 if task.is_binary else c]}: AUC undefined")
            continue
        auc = _auc_of(fpr, tpr)
        if task.is_binary:
            label = f"{names[1]} vs {names[0]}: AUC {auc:.3f}{_fmt_ci(auc_ci)}"
        else:
            label = f"{names[c]}: AUC {auc:.3f}{_fmt_ci(auc_ci, c)}"
        ax.plot(fpr, tpr, color=colours[c % 10], ls=styles[(c // 10) % len(styles)], lw=2, label=label)
        if task.uses_threshold and thresholds:
            _mark_thresholds(ax, p, y, task, c, thresholds, colours[c % 10])
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("Sensitivity (true-positive rate)")
    if title is None and task.is_binary:
        title = f"ROC curve (n={len(p)}: {int(y.sum())} {names[1]}, {int(len(p) - y.sum())} {names[0]})"
    ax.set_title(title or f"ROC curves, one-vs-rest ({task.mode}, n={len(p)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8 if k <= 8 else 6)
    return save_figure(fig, path)


def _draw_cm(ax: Any, cm: np.ndarray, names: Sequence[str], title: str) -> Any:
    cm = np.asarray(cm, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = cm / cm.sum(1, keepdims=True)
    im = ax.imshow(np.nan_to_num(rows), cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            pct = "" if np.isnan(rows[i, j]) else f"\n{100 * rows[i, j]:.1f}%"
            colour = "white" if np.nan_to_num(rows[i, j]) > 0.5 else "black"
            ax.text(j, i, f"{cm[i, j]}{pct}", ha="center", va="center", color=colour, fontsize=10)
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if max(len(n) for n in names) > 8 else 0, ha="right")
    ax.set_yticklabels(names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title, fontsize=10)
    return im


def plot_confusion_matrix(
    path: str | os.PathLike,
    cm: Any,
    class_names: Sequence[str],
    title: str | None = None,
) -> Path:
    """Confusion matrix with counts and row percentages (the share of each true class), class names on the axes.

    Args:
        path: output PNG.
        cm: ``(K, K)`` matrix (rows true, columns predicted) or ``(K, 2, 2)`` per-label matrices (multi-label).
        class_names: class (or label) names.
        title: figure title.
    """
    cm = np.asarray(cm)
    if cm.ndim == 3:  # multi-label: one 2x2 matrix per label
        k = cm.shape[0]
        cols = min(k, 3)
        rows = int(np.ceil(k / cols))
        fig = new_figure((4.8 * cols, 4.0 * rows))
        for i in range(k):
            ax = fig.add_subplot(rows, cols, i + 1)
            _draw_cm(ax, cm[i], [f"no {class_names[i]}", str(class_names[i])], f"{class_names[i]}")
        fig.suptitle(title or "Confusion matrices per label (counts, % of true row)")
        fig.tight_layout()
        return save_figure(fig, path)
    fig = new_figure((max(5.5, 1.1 * cm.shape[0] + 3), max(4.8, 1.0 * cm.shape[0] + 2.5)))
    ax = fig.add_subplot(1, 1, 1)
    im = _draw_cm(ax, cm, class_names, title or f"Confusion matrix (n={int(cm.sum())}; counts and % of true class)")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("fraction of the true class (row)")
    return save_figure(fig, path)


def _draw_reliability_bars(ax: Any, bins: dict[str, np.ndarray], centres: np.ndarray, width: float) -> None:
    """Accuracy bars with the gap to the mean confidence of each non-empty bin (hatched box, red tick)."""
    acc = np.nan_to_num(bins["accuracy"])
    conf_bin = np.nan_to_num(bins["confidence"])
    ok = bins["count"] > 0
    # accuracy: solid bars whose top is the accuracy; the gap to the bin's mean confidence is an outlined, hatched
    # box (narrower, drawn over or above the bar) ending at a red tick at the mean confidence, so the bar is never
    # read as ending at the confidence
    ax.bar(centres[ok], acc[ok], width=width, edgecolor="black", color="C0", label="accuracy (fraction correct)")
    gap_lo = np.minimum(acc, conf_bin)
    ax.bar(
        centres[ok],
        np.abs(acc - conf_bin)[ok],
        bottom=gap_lo[ok],
        width=0.6 * width,
        fill=False,
        hatch="///",
        edgecolor="C3",
        linewidth=1.0,
        label="gap between accuracy and mean confidence",
    )
    ax.hlines(
        conf_bin[ok],
        centres[ok] - 0.4 * width,
        centres[ok] + 0.4 * width,
        colors="C3",
        linewidth=2.5,
        label="mean confidence in bin",
    )
    for c, a in zip(centres[ok], acc[ok]):  # the accuracy, written at the foot of its bar (clear of the gap box)
        tall = a >= 0.08
        ax.text(c, 0.012 if tall else a + 0.01, f"{a:.2f}", ha="center", va="bottom", fontsize=7,
                color="white" if tall else "C0")  # fmt: skip


def plot_reliability(
    path: str | os.PathLike,
    y_prob: Any,
    y_true: Any,
    mode: str = "binary",
    n_bins: int = DEFAULT_ECE_BINS,
    title: str | None = None,
) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, plus a histogram of confidences.

    The confidence is the probability of the predicted class (top-label, as in :func:`compute_ece`); multi-label
    tasks pool every label's binary decisions in one diagram and give the mean per-label ECE in the title.

    Args:
        path: output PNG.
        y_prob: probabilities.
        y_true: labels.
        mode: task mode.
        n_bins: equal-width bins on [0, 1].
        title: figure title; default gives the ECE and the number of bins.
    """
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    pairs = confidence_correct(p, y, task)
    conf = np.concatenate([c for c, _ in pairs])
    corr = np.concatenate([r for _, r in pairs])
    bins = compute_calibration_bins(conf, corr, n_bins)
    ece = compute_ece(p, y, task, n_bins)
    edges, width = bins["edges"], 1.0 / n_bins
    centres = edges[:-1] + width / 2
    fig = new_figure((6.0, 6.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    _draw_reliability_bars(ax, bins, centres, width)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy in bin (fraction correct)")
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    what = "mean per-label ECE" if task.is_multilabel else "ECE"
    ax.set_title(title or f"Reliability diagram: {what} = {ece:.3f} ({n_bins} equal-width bins, n={len(p)})")
    hx = fig.add_subplot(gs[1], sharex=ax)
    hx.bar(centres, bins["count"], width=width, color="C7", edgecolor="black")
    hx.set_xlabel("Confidence (probability of the predicted class)")
    hx.set_ylabel("Cases")
    hx.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()  # below the figure: never over a bar
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.035), ncol=2, fontsize=8, frameon=False)
    return save_figure(fig, path)
