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
"""The leakage audit of a data set (``python -m monai_transfer.audit``, see :mod:`monai_transfer.audit`): the report
(:func:`audit_report`), its files (:func:`write_audit`) and the audit of a data set split as training splits it
(:func:`audit_dataset`)."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["audit_report", "contact_sheet", "short_name", "write_audit", "audit_dataset"]

logger = logging.getLogger(__name__)

_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _label(item: Mapping[str, Any]) -> str:
    return str(item.get("class_name", item.get("label", "")))


def _ensure_checked(datalists: Mapping[str, Sequence[Mapping[str, Any]]], **kwargs: Any) -> tuple[Any, list, list]:
    """The duplicate result, items and splits attached by ``bundle_datalists``, or computed here for a plain dict."""
    found = getattr(datalists, "duplicates", None)
    if found is not None:
        return found, list(datalists.checked_items), list(datalists.duplicate_splits)
    from monai_transfer.data.duplicates import find_duplicates

    items = [dict(x) for s in datalists for x in datalists[s]]
    splits = [s for s in datalists for _ in datalists[s]]
    return find_duplicates([x["image"] for x in items], **kwargs), items, splits


def audit_report(
    datalists: Mapping[str, Sequence[Mapping[str, Any]]], max_examples: int = 50, **find_kwargs: Any
) -> dict[str, Any]:
    """The audit as a JSON-friendly dict (see the module docstring for the fields).

    Args:
        datalists: ``{"train": [...], "val": [...], ...}``; a :class:`~monai_transfer.data.bundle_data.SplitDatalists`
            reuses its duplicate check, a plain dict is hashed here.
        max_examples: clusters listed in full per category (all are counted).
        find_kwargs: options of :func:`~monai_transfer.data.duplicates.find_duplicates` for a plain dict.
    """
    return _audit(datalists, max_examples, **find_kwargs)[0]


def _audit(
    datalists: Mapping[str, Sequence[Mapping[str, Any]]], max_examples: int = 50, **find_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(report, context)``: the report and what the files need (items, splits, result, cross-split pairs)."""
    found, items, splits = _ensure_checked(datalists, **find_kwargs)
    links = _links(found)
    cross = [c for c in found.clusters if len({splits[i] for i in c}) > 1]
    conflicts = [c for c in found.clusters if len({_label(items[i]) for i in c}) > 1]
    cross_pairs = _cross_pairs(links, splits)
    summary = found.summary()
    summary.update(
        {
            "n_clusters_across_splits": len(cross),
            "n_files_in_clusters_across_splits": int(sum(len(c) for c in cross)),
            "n_pairs_across_splits": len(cross_pairs),
            "n_label_conflicts": len(conflicts),
        }
    )
    report: dict[str, Any] = {
        "summary": summary,
        "splits": {s: len(v) for s, v in datalists.items()},
        "class_balance": _balance(datalists),
        "clusters_across_splits": [_cluster_entry(c, items, splits, links) for c in cross[:max_examples]],
        "label_conflicts": [_cluster_entry(c, items, splits, links) for c in conflicts[:max_examples]],
        "closest_pairs_across_splits": [
            {"a": items[a]["image"], "a_split": splits[a], "b": items[b]["image"], "b_split": splits[b]}
            | _link_fields(links[min(a, b), max(a, b)])
            for a, b in cross_pairs[:max_examples]
        ],
        "unreadable": [{"image": found.paths[i], "error": m} for i, m in found.hashing.errors.items()],
    }
    dicom = (getattr(datalists, "audit", None) or {}).get("dicom")
    if dicom is None:
        from monai_transfer.data.dicom_meta import summarize_dicom_ids

        dicom = summarize_dicom_ids(items)
    if dicom is not None:
        report["dicom"] = dicom
    context = {"pairs": cross_pairs, "items": items, "splits": splits, "found": found, "links": links}
    return report, context


def _links(found: Any) -> dict[tuple[int, int], tuple[int, float, str]]:
    """``(i, j) -> (Hamming distance, similarity, stage)`` of every linked pair (``i < j``)."""
    stages = found.stages or ["hash"] * len(found.pairs)
    return {
        (int(min(a, b)), int(max(a, b))): (int(d), float(s), str(st))
        for (a, b, d), s, st in zip(found.pairs, found.similarity, stages)
    }


def _link_fields(link: tuple[int, float, str]) -> dict[str, Any]:
    """The JSON fields of one link: which stage matched, its similarity and the Hamming distance of the hashes."""
    return {"stage": link[2], "similarity": round(link[1], 4), "hamming": link[0]}


def _cross_pairs(links: dict[tuple[int, int], tuple[int, float, str]], splits: list[str]) -> list[tuple[int, int]]:
    """Linked pairs across splits, the earlier split (train, val, test) first; the surest first: by stage (identical
    bytes, hash, rank thumbnails), then by similarity, then by Hamming distance."""
    from monai_transfer.data.duplicates import STAGES

    def first(a: int, b: int) -> tuple[int, int]:
        return (b, a) if _SPLIT_ORDER.get(splits[b], 9) < _SPLIT_ORDER.get(splits[a], 9) else (a, b)

    rank = {st: k for k, st in enumerate(STAGES)}
    keyed = sorted(
        (rank.get(st, len(rank)), -s, d, *first(a, b)) for (a, b), (d, s, st) in links.items() if splits[a] != splits[b]
    )
    return [(a, b) for *_, a, b in keyed]


def _balance(datalists: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, int]]:
    """Items per label in each split."""
    balance: dict[str, dict[str, int]] = {}
    for s in datalists:
        counts: dict[str, int] = {}
        for x in datalists[s]:
            counts[_label(x)] = counts.get(_label(x), 0) + 1
        balance[s] = dict(sorted(counts.items()))
    return balance


def _cluster_entry(
    c: list[int], items: list, splits: list[str], links: dict[tuple[int, int], tuple[int, float, str]]
) -> dict[str, Any]:
    """One cluster for the report: its splits, labels, images and the links that joined it (stage, similarity)."""
    inside = set(c)
    return {
        "size": len(c),
        "splits": sorted({splits[i] for i in c}, key=lambda s: _SPLIT_ORDER.get(s, 9)),
        "labels": sorted({_label(items[i]) for i in c}),
        "stages": sorted({v[2] for (a, b), v in links.items() if a in inside and b in inside}),
        "images": [{"image": items[i]["image"], "split": splits[i], "label": _label(items[i])} for i in c],
        "links": [
            {"a": items[a]["image"], "b": items[b]["image"]} | _link_fields(v)
            for (a, b), v in sorted(links.items())
            if a in inside and b in inside
        ],
    }


def _thumb(path: str, size: int) -> Any:
    """A grey ``size`` x ``size`` PIL thumbnail of any image the project reads (min-max scaled)."""
    from PIL import Image

    from monai_transfer.transforms.io.array import LoadMedicalImage

    img = np.asarray(LoadMedicalImage(nan_policy="ignore")(path)).astype(np.float32)
    a = img.mean(axis=0)
    while a.ndim > 2:  # a volume: its middle slice along the last axis
        a = a[..., a.shape[-1] // 2]
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)
    im = Image.fromarray((np.nan_to_num(a) * 255).astype(np.uint8))
    scale = size / max(im.size)  # fit the square, enlarging small images too
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas


def _font(size: int) -> Any:
    """A scalable font for captions (Pillow's bundled one), or the bitmap default without FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text``, shortened in the middle with ``...`` when it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        short = text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2 :]
        if draw.textlength(short, font=font) <= width:
            return short
    return "..."


def short_name(path: str | os.PathLike, parts: int = 2) -> str:
    """The last ``parts`` components of ``path`` (``normal/img_001.png``): short, and telling class folders apart."""
    return "/".join(Path(str(path)).parts[-parts:])


def contact_sheet(pairs: Sequence[Sequence[str]], path: str | os.PathLike, size: int = 128) -> Path | None:
    """PNG with one row per pair: a header line, two thumbnails, and under each its caption; None without pairs.

    Args:
        pairs: ``(path_a, path_b, header)`` or ``(path_a, path_b, header, caption_a, caption_b)``; a caption may hold
            several lines (``\\n``); each line is shortened in the middle to the thumbnail's width. Without captions
            each thumbnail is captioned with its short file name (:func:`short_name`).
        path: output PNG.
        size: thumbnail side in pixels.
    """
    if not pairs:
        return None
    from PIL import Image, ImageDraw

    from monai_transfer.utils.io import atomic_write

    font = _font(11)
    line = 14
    captions = [
        (list(p[3:5]) if len(p) >= 5 else [short_name(p[0]), short_name(p[1])]) for p in pairs
    ]  # per pair: [caption_a, caption_b]
    n_lines = max(max(len(str(c).splitlines()) for c in cap) for cap in captions)
    gap, col = 12, size + 40  # captions get more width than the thumbnail
    row_h = line + size + n_lines * line + gap
    sheet = Image.new("L", (2 * col + gap, len(pairs) * row_h), 255)
    draw = ImageDraw.Draw(sheet)
    for r, (p, cap) in enumerate(zip(pairs, captions)):
        y = r * row_h
        draw.text((2, y), _fit(draw, str(p[2]), font, 2 * col + gap - 4), fill=0, font=font)
        for c, image in enumerate(p[:2]):
            x = c * (col + gap)
            try:
                sheet.paste(_thumb(image, size), (x + (col - size) // 2, y + line))
            except Exception as e:  # an unreadable image still gets its slot, with the reason
                draw.text((x + 2, y + line + size // 2), f"unreadable: {type(e).__name__}", fill=0, font=font)
            for k, text in enumerate(str(cap[c]).splitlines()):
                draw.text((x + 2, y + line + size + 1 + k * line), _fit(draw, text, font, col - 4), fill=0, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_audit(
    datalists: Mapping[str, Sequence[Mapping[str, Any]]],
    output_dir: str | os.PathLike,
    duplicates: str = "group",
    max_sheet_pairs: int = 16,
    **find_kwargs: Any,
) -> dict[str, Any] | None:
    """Write ``audit.json``, ``clusters.csv`` and ``cross_split_pairs.png`` into ``output_dir``.

    Args:
        datalists: split lists (see :func:`audit_report`).
        output_dir: folder, created when missing.
        duplicates: the run's ``duplicates`` option; ``"off"`` writes nothing and returns None.
        max_sheet_pairs: rows of the contact sheet (surest cross-split pairs first).
        find_kwargs: see :func:`audit_report`.

    Returns:
        the report's ``summary`` (None when ``duplicates="off"``).
    """
    if duplicates == "off":
        return None
    from monai_transfer.utils.io import atomic_write_json, atomic_write_text

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, ctx = _audit(datalists, **find_kwargs)
    atomic_write_text(out / "clusters.csv", _clusters_csv(ctx))
    sheet = contact_sheet(_sheet_rows(ctx, max_sheet_pairs), out / "cross_split_pairs.png")
    report["files"] = {
        "clusters_csv": str(out / "clusters.csv"),
        "contact_sheet": None if sheet is None else str(sheet),
    }
    atomic_write_json(out / "audit.json", report)
    _log_audit(out, report["summary"], sheet)
    if hasattr(datalists, "audit"):
        datalists.audit = {**(datalists.audit or {}), "report": str(out / "audit.json")}
    return report["summary"]


def _clusters_csv(ctx: dict[str, Any]) -> str:
    """``clusters.csv``: one row per clustered image (cluster, split, label, image, hash, the cluster's stages)."""
    items, splits, found, links = ctx["items"], ctx["splits"], ctx["found"], ctx["links"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cluster", "split", "label", "image", "hash", "stages"])
    for c, members in enumerate(found.clusters):
        inside = set(members)
        stages = " ".join(sorted({v[2] for (a, b), v in links.items() if a in inside and b in inside}))
        for i in members:
            h = f"{int(found.hashing.hashes[i]):016x}"
            w.writerow([c, splits[i], _label(items[i]), items[i]["image"], h, stages])
    return buf.getvalue()


def _sheet_rows(ctx: dict[str, Any], max_rows: int) -> list[tuple[str, str, str, str, str]]:
    """Contact-sheet rows of the first ``max_rows`` cross-split pairs: header (stage, similarity, Hamming distance)
    and captions (split, label, short name)."""
    items, splits, links = ctx["items"], ctx["splits"], ctx["links"]
    rows = []
    for a, b in ctx["pairs"][:max_rows]:
        d, s, stage = links[min(a, b), max(a, b)]
        header = f"#{len(rows) + 1}  {stage}: similarity {s:.3f}, Hamming distance {d}"
        cap_a, cap_b = (f"{splits[i]}, label {_label(items[i])}\n{short_name(items[i]['image'])}" for i in (a, b))
        rows.append((items[a]["image"], items[b]["image"], header, cap_a, cap_b))
    return rows


def _log_audit(out: Path, s: dict[str, Any], sheet: Path | None) -> None:
    logger.info(
        "data audit (%s): %d images, %d near-duplicate clusters (%d across splits), %d label conflicts, %d unreadable",
        out,
        s["n_files"],
        s["n_clusters"],
        s["n_clusters_across_splits"],
        s["n_label_conflicts"],
        s["n_unreadable"],
    )
    if s["n_clusters_across_splits"]:
        logger.warning(
            "data audit: %d near-duplicate cluster(s) span more than one split: every cluster is listed under "
            "'clusters_across_splits' in %s and in %s; the closest pairs are shown side by side in %s",
            s["n_clusters_across_splits"],
            out / "audit.json",
            out / "clusters.csv",
            sheet,
        )


def audit_dataset(
    dataset: str | os.PathLike,
    output_dir: str | os.PathLike = "audit",
    class_names: Sequence[str] | None = None,
    duplicates: str = "group",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_distance: int | None = None,
    min_similarity: float | None = None,
    cache_dir: str | os.PathLike | None = "default",
    progress: bool = True,
    stage2: dict[str, float | None] | None = None,
    max_residual: float | None = None,
) -> dict[str, Any]:
    """Split ``dataset`` as a bundle would and write the audit; returns the summary.

    ``duplicates="fail"`` is audited like ``"warn"`` (the report is the point), so a leaking split is written out
    instead of stopping at the first error. ``stage2`` (``rank_similarity``, ``aligned_similarity``) and
    ``max_residual`` are the second stage's and the final verification's thresholds (None: the package defaults).
    """
    extra = {k: v for k, v in {**(stage2 or {}), "max_residual": max_residual}.items() if v is not None}
    from monai_transfer.data.bundle_data import bundle_datalists

    dl = bundle_datalists(
        dataset,
        class_names=class_names,
        val_fraction=val_fraction,
        seed=seed,
        duplicates="warn" if duplicates == "fail" else duplicates,
        duplicate_distance=max_distance,
        duplicate_similarity=min_similarity,
        duplicate_thresholds=extra,
        hash_cache_dir=cache_dir,
        progress=progress,
    )
    if duplicates == "off":
        duplicates = "warn"  # the audit always checks
        from monai_transfer.data.duplicates import DEFAULT_MAX_DISTANCE, DEFAULT_MIN_SIMILARITY

        kwargs = {
            "max_distance": DEFAULT_MAX_DISTANCE if max_distance is None else max_distance,
            "min_similarity": DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity,
            **extra,
            "cache_dir": cache_dir,
            "progress": progress,
        }
        return write_audit(dl, output_dir, duplicates, **kwargs) or {}
    return write_audit(dl, output_dir, duplicates) or {}
