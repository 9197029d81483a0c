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
"""Train/validation/test data lists for bundles from one ``dataset_dir`` setting.

A bundle's ``dataset_dir`` may be any of the layouts radiology teams keep their data in; this module turns each into
the ``{"train": [...], "val": [...], "test": [...]}`` lists a bundle needs, without leakage between them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .datalist import DatalistError, load_datalist
from .splits import group_of, split_datalist

__all__ = ["bundle_datalists", "SPLIT_NAMES", "SplitDatalists"]

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


class SplitDatalists(dict):
    """``{"train": [...], "val": [...], "test"?: [...]}`` plus what was checked on the way.

    Attributes:
        audit: JSON-friendly summary for the run description (``metrics.json``): DICOM patient ids and the
            near-duplicate check (None when nothing was checked).
        duplicates: the full :class:`~monai_transfer.data.duplicates.DuplicateResult` over ``checked_items`` (None
            when the check is off), for :mod:`monai_transfer.audit`.
        checked_items: every item checked, in the order of ``duplicates.paths`` (after ``max_items``);
            ``duplicate_splits[i]`` is the split of ``checked_items[i]``.
    """

    audit: dict[str, Any] | None = None
    duplicates: Any = None
    checked_items: list[dict[str, Any]] | None = None
    duplicate_splits: list[str] | None = None

    def linked(self, split: str) -> list[list[int]]:
        """Near-duplicate clusters within ``split`` as index lists into ``self[split]`` (clusters of one item left
        out), for :func:`~monai_transfer.data.splits.assign_folds`/``split_datalist``'s ``linked``; ``[]`` when
        the check was off."""
        if self.duplicates is None or self.checked_items is None:
            return []
        index = {str(x["image"]): i for i, x in enumerate(self.get(split, []))}
        out = []
        for cluster in self.duplicates.clusters:
            members = sorted({index[p] for p in (str(self.checked_items[i]["image"]) for i in cluster) if p in index})
            if len(members) > 1:
                out.append(members)
        return out


#: keys of ``duplicate_thresholds`` (:func:`bundle_datalists`)
_THRESHOLD_KEYS = ("rank_similarity", "aligned_similarity", "neighbours", "max_residual")


def _thresholds(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``duplicate_thresholds`` option as keyword arguments of ``find_duplicates`` (None values dropped).

    Raises:
        ValueError: an unknown key or a value that is not a number, naming the option.
    """
    out: dict[str, Any] = {}
    for k, v in dict(values or {}).items():
        if k not in _THRESHOLD_KEYS:
            raise ValueError(f"duplicate_thresholds: unknown key {k!r}; expected some of {list(_THRESHOLD_KEYS)}.")
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"duplicate_thresholds: {k} must be a number, got {v!r}.")
        out[k] = int(v) if k == "neighbours" else float(v)
    return out


def bundle_datalists(
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "patient_id",
    split_key: str = "split",
    max_items: int | None = None,
    label_cols: Sequence[str] | None = None,
    uncertain: str | None = None,
    duplicates: str = "group",
    duplicate_distance: int | None = None,
    duplicate_similarity: float | None = None,
    duplicate_thresholds: Mapping[str, float] | None = None,
    hash_cache_dir: str | os.PathLike | None = "default",
    progress: bool = False,
) -> SplitDatalists:
    """Data lists for the train, validation and (when present) test splits.

    Layouts accepted for ``dataset_dir``:

    - a folder with ``train/`` and ``val/`` (and optionally ``test/``) sub-folders, each holding one folder per class;
    - a folder of class sub-folders: split into train/val by :func:`~monai_transfer.data.split_datalist`
      (stratified by label, never one patient on both sides);
    - a ``.csv`` or ``.json`` data list: rows with a ``split`` column/key (``train``/``val``/``test``) are used as
      given, otherwise split like a class folder.

    Args:
        dataset_dir: folder or data list file.
        class_names: class order (folder names or CSV label names); default sorted folder names (the union over
            the ``train``/``val``/``test`` folders, so label numbers agree; a split lacking a class is logged at
            WARNING) / integer labels.
        val_fraction: validation share when the data come unsplit; default 0.2.
        seed: split seed; default 0.
        group_key: patient/volume key that must not cross splits; default ``"patient_id"``.
        split_key: key of the split column in CSV/JSON lists; default ``"split"``.
        max_items: keep at most this many items per split (class-balanced head of a seeded shuffle), for smoke runs.
        label_cols: multi-label CSV: the 0/1 finding columns (see ``datalist_from_csv``; a CSV without a ``label``
            column but with one column per class name is multi-label without it).
        uncertain: multi-label: policy for uncertain (-1) values, ``"zeros"``, ``"ones"`` or ``"ignore"`` (training
            split only: a validation/test item with an ignored entry raises; see ``datalist_from_csv``).
        duplicates: near-duplicate images (:func:`~monai_transfer.data.duplicates.find_duplicates`):
            ``"group"`` (default): a cluster of near-duplicates is one group when the data are split here, and a
            given split (``split`` column, ``train/val/test`` folders) with a cluster across splits logs a warning
            naming the files; ``"warn"``: split as if there were none, then warn about clusters across splits;
            ``"fail"``: the same, but raise ``DatalistError`` naming the files; ``"off"``: no check (no hashing).
            Clusters whose images carry different labels are always warned about.
        duplicate_distance: Hamming threshold of the hash; default
            :data:`~monai_transfer.data.duplicates.DEFAULT_MAX_DISTANCE`.
        duplicate_similarity: cosine threshold of the strict check; default
            :data:`~monai_transfer.data.duplicates.DEFAULT_MIN_SIMILARITY`.
        duplicate_thresholds: the second stage's and the final verification's thresholds, any of
            ``rank_similarity``, ``aligned_similarity``, ``neighbours``, ``max_residual`` (keyword arguments of
            :func:`~monai_transfer.data.duplicates.find_duplicates`); default (None or ``{}``) the package defaults.
        hash_cache_dir: hash cache folder; ``"default"`` is ``$MONAI_TRANSFER_CACHE`` or ``~/.cache/monai_transfer``;
            None disables the cache.
        progress: show a progress bar while hashing.

    Returns:
        a :class:`SplitDatalists` (a dict): ``{"train": [...], "val": [...]}`` plus ``"test"`` when the source has a
        test split. DICOM items carry ``patient_id``/``study_uid``/``series_uid`` from their headers.

    Raises:
        DatalistError: a missing source, unknown split names, an empty split, a training split with a single class,
            one patient in two splits, or (``duplicates="fail"``) near-duplicates in two splits.
    """
    from .duplicates import DUPLICATE_MODES

    if duplicates not in DUPLICATE_MODES:
        raise ValueError(f"duplicates must be one of {list(DUPLICATE_MODES)}, got {duplicates!r}.")
    dup_kwargs: dict[str, Any] = {"cache_dir": hash_cache_dir, "progress": progress}
    if duplicate_distance is not None:
        dup_kwargs["max_distance"] = int(duplicate_distance)
    if duplicate_similarity is not None:
        dup_kwargs["min_similarity"] = float(duplicate_similarity)
    dup_kwargs.update(_thresholds(duplicate_thresholds))
    root = Path(dataset_dir)
    kwargs: dict[str, Any] = {} if class_names is None else {"class_names": list(class_names)}
    if label_cols is not None:
        kwargs["label_cols"] = list(label_cols)
    if uncertain is not None:
        kwargs["uncertain"] = uncertain
    split = {"val_fraction": val_fraction, "seed": seed, "group_key": group_key}
    out, items, found = _read_splits(root, class_names is None, kwargs, split_key, split, duplicates, dup_kwargs)
    _check_splits(out, group_key, root)
    result = SplitDatalists()
    audit: dict[str, Any] = {}
    dicom = _dicom_summary([x for s in out for x in out[s]], root)
    if dicom is not None:
        audit["dicom"] = dicom
    if max_items is not None:
        out = {s: _head(v, max_items, seed) for s, v in out.items()}
    _warn_absent_findings(out, label_cols or class_names, root)
    if duplicates != "off":
        audit["duplicates"] = _duplicate_audit(result, out, items, found, duplicates, dup_kwargs, root)
    result.update(out)
    result.audit = audit or None
    logger.info("data from %s: %s", root, {s: len(v) for s, v in out.items()})
    return result


def _read_splits(
    root: Path,
    folder_names: bool,
    kwargs: dict[str, Any],
    split_key: str,
    split: dict[str, Any],
    duplicates: str,
    dup_kwargs: dict[str, Any],
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], Any]:
    """The splits of ``root`` as given (``train/val`` folders, a ``split_key`` column) or split here.

    Returns ``(splits, items, found)``: ``items`` is the unsplit list (empty for split folders) and ``found`` the
    near-duplicate clusters over ``items`` when they were needed to split (``duplicates="group"``), else None.
    """
    if root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir():
        if folder_names:
            return _split_folders(root), [], None
        return {s: load_datalist(root / s, **kwargs) for s in SPLIT_NAMES if (root / s).is_dir()}, [], None
    items = load_datalist(root, **kwargs)
    if items and all(split_key in x for x in items):
        unknown = sorted({str(x[split_key]) for x in items} - set(SPLIT_NAMES))
        if unknown:
            raise DatalistError(f"{root}: unknown {split_key!r} values {unknown}; expected {list(SPLIT_NAMES)}.")
        out = {s: [x for x in items if x[split_key] == s] for s in SPLIT_NAMES}
        return {s: v for s, v in out.items() if v or s != "test"}, items, None
    found = _find_duplicates(items, dup_kwargs) if duplicates == "group" else None
    return _split_items(root, items, split, found.clusters if found is not None else None), items, found


def _split_items(
    root: Path, items: list[dict[str, Any]], split: dict[str, Any], linked: Any
) -> dict[str, list[dict[str, Any]]]:
    """Train/val split of unsplit ``items`` (stratified unless multi-label), near-duplicate clusters ``linked``."""
    multilabel = any(isinstance(x.get("label"), list) for x in items)  # label sets: too many strata
    try:
        train, val = split_datalist(items, stratify_key=None if multilabel else "label", linked=linked, **split)
    except ValueError as e:
        if not linked:
            raise
        big = max(len(c) for c in linked)
        raise DatalistError(
            f"{root}: {e} Near-duplicate clusters were kept together (largest: {big} images); pass "
            "duplicates='warn' or a smaller duplicate_distance to split them, and check the clusters with "
            f"'python -m monai_transfer.audit {root}'."
        ) from e
    return {"train": train, "val": val}


def _check_splits(out: dict[str, list[dict[str, Any]]], group_key: str | None, root: Path) -> None:
    """Raise ``DatalistError`` for an empty split, a single-class training split, a patient in two splits or an
    uncertain (-1) label outside the training split."""
    for s, v in out.items():
        if not v:
            raise DatalistError(f"{root}: the {s!r} split is empty.")
    train_labels = sorted({str(x["label"]) for x in out["train"] if "label" in x})
    if len(train_labels) == 1 and all("label" in x for x in out["train"]):
        names = {str(x.get("class_name", x["label"])) for x in out["train"]}
        raise DatalistError(
            f"{root}: the 'train' split holds a single class (label {train_labels[0]}, {sorted(map(str, names))}, "
            f"{len(out['train'])} items); a classifier needs at least two classes."
        )
    _check_disjoint(out, group_key, root)
    for s in ("val", "test"):  # uncertain='ignore' masks the training loss only: metrics need certain labels
        bad = [x for x in out.get(s, []) if isinstance(x.get("label"), list) and -1 in x["label"]]
        if bad:
            raise DatalistError(
                f"{root}: {len(bad)} {s!r} item(s) have uncertain labels (-1, kept by uncertain='ignore'), first "
                f"{bad[0]['image']} {bad[0]['label']}; metrics need certain 0/1 labels: give the {s!r} split certain "
                "labels (e.g. CheXpert's radiologist-labelled valid set) or use uncertain='zeros'/'ones'."
            )


def _dicom_summary(all_items: list[dict[str, Any]], root: Path) -> dict[str, Any] | None:
    """The DICOM id summary of the items (None without DICOM); warns about files without a PatientID."""
    from .dicom_meta import summarize_dicom_ids

    dicom = summarize_dicom_ids(all_items)
    if dicom is not None and dicom["patient_id_fallback_to_file"]:
        logger.warning(
            "%s: %d DICOM file(s) have no PatientID; each is its own group for splitting",
            root,
            dicom["patient_id_fallback_to_file"],
        )
    return dicom


def _duplicate_audit(
    result: SplitDatalists,
    out: dict[str, list[dict[str, Any]]],
    items: list[dict[str, Any]],
    found: Any,
    duplicates: str,
    dup_kwargs: dict[str, Any],
    root: Path,
) -> dict[str, Any]:
    """Check the items actually used for near-duplicates across splits; stores the clusters on ``result``.

    When the clusters were needed to split (``found``), all ``items`` were hashed then and the used ones are kept.
    """
    split_of = {x["image"]: s for s in out for x in out[s]}
    base = [x for x in items if x["image"] in split_of] if found is not None else [x for s in out for x in out[s]]
    if found is None:
        found = _find_duplicates(base, dup_kwargs)
    else:
        found = found.subset([i for i, x in enumerate(items) if x["image"] in split_of])
    base_splits = [split_of[x["image"]] for x in base]
    report = _check_duplicates(found, base, base_splits, duplicates, root)
    result.duplicates, result.checked_items, result.duplicate_splits = found, base, base_splits
    return report


def _warn_absent_findings(out: dict[str, list[dict[str, Any]]], names: Sequence[str] | None, root: Path) -> None:
    """Multi-label data: log a WARNING for each finding without a positive item in a split, every time (a log
    record, not a Python warning that a filter or the once-per-location registry could hide)."""
    for split, items in out.items():
        labels = [x["label"] for x in items if isinstance(x.get("label"), list)]
        if not labels or len(labels) != len(items):
            continue
        k = len(labels[0])
        shown = [str(n) for n in names] if names is not None and len(names) == k else [str(j) for j in range(k)]
        for j in range(k):
            if not any(row[j] == 1 for row in labels):
                effect = "the model cannot learn it" if split == "train" else "its AUC and threshold cannot be measured"
                logger.warning(
                    f"{root}: finding {shown[j]!r} has no positive item in the {split!r} split ({len(items)} items): "
                    f"{effect}"
                )


def _find_duplicates(items: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
    from .duplicates import find_duplicates

    return find_duplicates([x["image"] for x in items], **kwargs)


def _check_duplicates(
    found: Any, items: list[dict[str, Any]], splits: list[str], mode: str, root: Path
) -> dict[str, Any]:
    """Warn/raise about clusters across splits and label conflicts; return the summary for the run description."""
    summary = found.summary()
    cross = [c for c in found.clusters if len({splits[i] for i in c}) > 1]
    conflicts = [c for c in found.clusters if len({str(items[i].get("label")) for i in c if "label" in items[i]}) > 1]
    summary["n_clusters_across_splits"] = len(cross)
    summary["n_files_in_clusters_across_splits"] = sum(len(c) for c in cross)
    summary["n_label_conflicts"] = len(conflicts)

    def describe(clusters: list[list[int]], limit: int = 5, per_cluster: int = 6) -> str:
        def one(c: list[int]) -> str:
            names = [f"{items[i]['image']} ({splits[i]}, label {items[i].get('label')})" for i in c[:per_cluster]]
            return "[" + ", ".join(names) + (f", +{len(c) - per_cluster} more" if len(c) > per_cluster else "") + "]"

        text = "; ".join(one(c) for c in clusters[:limit])
        return text + (f"; and {len(clusters) - limit} more cluster(s)" if len(clusters) > limit else "")

    if found.hashing.errors:
        bad = list(found.hashing.errors.values())
        logger.warning("%s: %d file(s) could not be hashed for the duplicate check: %s", root, len(bad), bad[:5])
    if conflicts:
        logger.warning(
            "%s: %d near-duplicate cluster(s) carry different labels: %s", root, len(conflicts), describe(conflicts)
        )
    if cross:
        n_files = summary["n_files_in_clusters_across_splits"]
        msg = (
            f"{root}: {len(cross)} near-duplicate cluster(s) span more than one split ({n_files} files), so "
            f"validation sees copies of training images: {describe(cross)}."
        )
        if mode == "fail":  # nothing else runs: say how to get the report
            raise DatalistError(f"{msg} Run 'python -m monai_transfer.audit {root}' for the full report.")
        # the audit written next (training: <output_dir>/audit; the audit command: --output) names its files
        logger.warning(f"{msg} The data audit lists every cluster (audit.json, cross_split_pairs.png).")
    return summary


def _split_folders(root: Path) -> dict[str, list[dict[str, Any]]]:
    """``root/<split>/<class>/<image>`` without given class names: one numbering over all splits.

    The classes are the sorted union of the class folders of every split, so a class has the same label number in
    train, val and test; a split that lacks a class (e.g. no ``val/b``) is logged at WARNING naming both.
    """
    splits = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    folders = {s: [p.name for p in (root / s).iterdir() if p.is_dir() and not p.name.startswith(".")] for s in splits}
    union = sorted(set().union(*folders.values()))
    out: dict[str, list[dict[str, Any]]] = {}
    for s in splits:
        missing = [c for c in union if c not in folders[s]]
        if missing:
            logger.warning(
                "%s: the %r split has no folder for class(es) %s; label numbers follow the classes of all splits %s",
                root,
                s,
                missing,
                union,
            )
        items = load_datalist(root / s, class_names=[c for c in union if c in folders[s]])
        for x in items:
            x["label"] = union.index(x["class_name"])
        out[s] = items
    return out


def _check_disjoint(splits: dict[str, list[dict[str, Any]]], group_key: str | None, root: Path) -> None:
    seen: dict[str, str] = {}
    for s, items in splits.items():
        for x in items:
            g = group_of(x, group_key)
            if seen.setdefault(g, s) != s:
                raise DatalistError(
                    f"{root}: {group_key or 'image'} {g!r} is in both the {seen[g]!r} and {s!r} splits."
                )


def _head(items: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    import random

    if n >= len(items):
        return items
    by_label: dict[Any, list[dict[str, Any]]] = {}
    for x in items:
        by_label.setdefault(str(x.get("label")), []).append(x)
    rng = random.Random(seed)
    for v in by_label.values():
        rng.shuffle(v)
    picked: list[dict[str, Any]] = []
    while len(picked) < n:
        for v in by_label.values():
            if v and len(picked) < n:
                picked.append(v.pop())
    return picked
