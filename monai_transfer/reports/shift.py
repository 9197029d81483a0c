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
"""The shift-suite report: ``shift.json``, ``shift.md`` (one row per family) and ``shift.png`` (AUC and specificity
at the operating point against severity), from :func:`monai_transfer.metrics.shift.score_shift_suite`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.reports.plots import new_figure, save_figure
from monai_transfer.utils.io import atomic_write_json, atomic_write_text

__all__ = ["SHIFT_CITATION", "shift_table", "plot_shift", "write_shift_report"]

#: where the chest X-ray corruption families and their severity parameters come from
SHIFT_CITATION = (
    "MedMNIST-C families (PneumoniaMNIST severity parameters) reimplemented with torch/MONAI/Pillow: F. Di Salvo, "
    "S. Doerrich, C. Ledig, 'MedMNIST-C: Comprehensive benchmark and improved classifier robustness by simulating "
    "realistic image corruptions', 2024, arXiv:2406.17536 (Apache-2.0 package medmnistc, not a dependency); "
    "resolution, windowing, exposure and prevalence are this project's"
)


def _f(v: Any) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def shift_table(scores: dict[str, Any]) -> str:
    """A Markdown table: clean row, one row per family (AUC at severities 1..5, mean AUC, worst sensitivity,
    specificity and balanced accuracy at the operating point, worst ECE), then the worst case of the suite."""
    t = scores["threshold"]
    head = "| family | AUC s1 | s2 | s3 | s4 | s5 | mean AUC | worst sens | worst spec | worst bal. acc | worst ECE |"
    lines = [f"Operating point: p >= {t:.4g}. Suite AUC (mean over corrupted conditions): {_f(scores['suite_auc'])}.",
             "", head, "|" + " --- |" * 11]  # fmt: skip
    c = scores["clean"]
    lines.append(
        f"| clean | {_f(c['auc'])} | | | | | {_f(c['auc'])} | {_f(c['sensitivity'])} | {_f(c['specificity'])} "
        f"| {_f(c['balanced_accuracy'])} | {_f(c['ece'])} |"
    )
    for fam, f in scores["families"].items():
        aucs = [_f(f["severities"][s]["auc"]) if s in f["severities"] else "-" for s in ("1", "2", "3", "4", "5")]
        lines.append(
            f"| {fam} | {' | '.join(aucs)} | {_f(f['mean_auc'])} | {_f(f['worst_sensitivity'])} "
            f"| {_f(f['worst_specificity'])} | {_f(f['worst_balanced_accuracy'])} | {_f(f['worst_ece'])} |"
        )
    lines.append("")
    for key, w in scores.get("worst", {}).items():
        lines.append(f"- worst {key}: {_f(w['value'])} ({w['family']}, severity {w['severity']})")
    return "\n".join(lines) + "\n"


def plot_shift(scores: dict[str, Any], path: str | os.PathLike) -> Path:
    """AUC and specificity at the operating point against severity, one line per family (clean at severity 0)."""
    fig = new_figure((11.0, 4.6))
    axes = fig.subplots(1, 2)
    clean = scores["clean"]
    for fam, f in scores["families"].items():
        sev = sorted(f["severities"], key=int)
        x = [0] + [int(s) for s in sev]
        for ax, key in zip(axes, ("auc", "specificity")):
            ax.plot(x, [clean[key]] + [f["severities"][s][key] for s in sev], marker="o", ms=3, lw=1, label=fam)
    for ax, title in zip(axes, ("AUC", f"specificity at p >= {scores['threshold']:.3g}")):
        ax.set_xlabel("severity (0 = clean)")
        ax.set_title(title)
        ax.set_xticks(range(6))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2, loc="lower left")
    return save_figure(fig, path, metadata={"Title": "shift suite"})


def write_shift_report(output_dir: str | os.PathLike, scores: dict[str, Any], plots: bool = True) -> dict[str, Path]:
    """Write ``<output_dir>/shift.json`` (``scores`` plus the citation), ``shift.md`` and ``shift.png``.

    Returns:
        ``{"shift_json", "shift_md"[, "shift_png"]}`` paths.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "shift_json": atomic_write_json(out / "shift.json", {**scores, "source": SHIFT_CITATION}),
        "shift_md": atomic_write_text(out / "shift.md", "# Shift suite\n\n" + shift_table(scores)),
    }
    if plots:
        files["shift_png"] = plot_shift(scores, out / "shift.png")
    return files
