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
"""Deterministic, stratified, group-disjoint train/validation splits and k-fold cross-validation folds."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from monai_transfer.data._groups import connected_components

__all__ = ["split_datalist", "group_of", "assign_folds", "kfold_datalist"]


def group_of(item: Mapping[str, Any], group_key: str | None = "patient_id") -> str:
    """The group an item belongs to: ``item[group_key]`` when present and not empty, else its image path."""
    if group_key is not None:
        val = item.get(group_key)
        if val is not None and str(val) != "":
            return f"{group_key}:{val}"
    if "image" not in item:
        raise ValueError(f"data list item has neither {group_key!r} nor 'image': {dict(item)}.")
    return f"image:{item['image']}"


def _merge_linked(groups: dict[str, list[int]], linked: Sequence[Sequence[int]], n: int) -> dict[str, list[int]]:
    """Merge the groups that share a ``linked`` index list; a merged group is named by its smallest group name."""
    bad = [i for members in linked for i in members if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"linked indices {bad} are outside the data list of {n} items.")
    names = list(groups)
    owner = {i: k for k, idx in enumerate(groups.values()) for i in idx}
    merged = connected_components(len(names), ([owner[int(i)] for i in members] for members in linked))
    return {min(names[k] for k in c): sorted(i for k in c for i in groups[names[k]]) for c in merged}


def _groups_and_strata(
    items: Sequence[Mapping[str, Any]],
    group_key: str | None,
    stratify_key: str | None,
    linked: Sequence[Sequence[int]] | None = None,
) -> tuple[dict[str, list[int]], dict[Hashable, list[str]]]:
    """Item indices per group (groups sharing a ``linked`` index list merged), and the sorted groups per stratum (a
    group's most frequent label; ties: smallest)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[group_of(it, group_key)].append(i)
    if linked:
        groups = _merge_linked(groups, linked, len(items))

    def _stratum(idx: list[int]) -> Hashable:
        if stratify_key is None:
            return None
        counts = Counter(str(items[i].get(stratify_key)) for i in idx)
        best = max(counts.values())
        return sorted(k for k, c in counts.items() if c == best)[0]

    strata: dict[Hashable, list[str]] = defaultdict(list)
    for g in sorted(groups):
        strata[_stratum(groups[g])].append(g)
    return groups, strata


def _validation_groups(gs: list[str], groups: Mapping[str, Sequence[int]], val_fraction: float) -> list[str]:
    """The groups of one stratum (shuffled ``gs``) taken for validation: each while it brings the image count closer
    to ``val_fraction`` of the stratum, always one at least and never all."""
    target = val_fraction * sum(len(groups[g]) for g in gs)
    taken = 0
    chosen: list[str] = []
    for g in gs:
        size = len(groups[g])
        if len(chosen) == len(gs) - 1:
            break  # keep at least one group of the stratum for training
        if not chosen or abs(taken + size - target) < abs(taken - target):
            chosen.append(g)
            taken += size
    return chosen


def split_datalist(
    items: Sequence[Mapping[str, Any]],
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "patient_id",
    stratify_key: str | None = "label",
    linked: Sequence[Sequence[int]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a data list into train and validation, never putting one group (patient/volume) on both sides.

    Groups come from ``group_key`` (e.g. ``"patient_id"``, or ``"source_id"`` for slices of one volume); items
    without it are their own group (by image path). Each group is assigned the most frequent ``stratify_key`` value
    of its items (ties: the smallest); within each stratum the groups are shuffled with ``seed`` and taken into the
    validation set while that brings its image count closer to ``val_fraction`` of the stratum. A stratum with at
    least two groups always gives at least one to each side. The result depends only on the items and ``seed``
    (not on their order), and each side keeps the input order.

    Args:
        items: data list.
        val_fraction: share of images for validation, in (0, 1); default 0.2.
        seed: random seed, default 0.
        group_key: key of the group id, default ``"patient_id"``; None groups by image path.
        stratify_key: key to stratify on, default ``"label"``; None for no stratification.
        linked: optional lists of item indices that must stay on one side (e.g. near-duplicate clusters from
            :func:`~monai_transfer.data.duplicates.find_duplicates`); the groups they touch are merged into one.

    Returns:
        ``(train, val)`` lists of item copies.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1), an empty list, or a split where one side would be empty (e.g.
            a single group).
    """
    if not 0 < float(val_fraction) < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    if len(items) == 0:
        raise ValueError("cannot split an empty data list.")
    groups, strata = _groups_and_strata(items, group_key, stratify_key, linked)
    rng = np.random.default_rng(seed)
    val_groups: set[str] = set()
    for s in sorted(strata, key=str):
        gs = list(strata[s])
        order = rng.permutation(len(gs))
        val_groups.update(_validation_groups([gs[j] for j in order], groups, float(val_fraction)))
    train_idx = sorted(i for g in groups if g not in val_groups for i in groups[g])
    val_idx = sorted(i for g in groups if g in val_groups for i in groups[g])
    train = [dict(items[i]) for i in train_idx]
    val = [dict(items[i]) for i in val_idx]
    if not train or not val:
        raise ValueError(
            f"split of {len(items)} items in {len(groups)} group(s) by {group_key!r} leaves one side empty "
            f"(train {len(train)}, val {len(val)}); more groups are needed."
        )
    return train, val


def assign_folds(
    items: Sequence[Mapping[str, Any]],
    n_folds: int = 5,
    seed: int = 0,
    group_key: str | None = "patient_id",
    stratify_key: str | None = "label",
    linked: Sequence[Sequence[int]] | None = None,
) -> list[int]:
    """The cross-validation fold (``0 .. n_folds - 1``) of every item: stratified, group-disjoint and seeded.

    Groups (see :func:`group_of`) are assigned whole, so no patient/volume is in two folds. Within each stratum (the
    most frequent ``stratify_key`` value of a group's items) the groups are shuffled with ``seed``, ordered by size
    (largest first, stable) and each is given to the fold holding the fewest images of that stratum so far (ties: the
    fold with the fewest images overall, then the lowest index). Every fold therefore gets a near-equal share of each
    class, and every item is out-of-fold exactly once. The result depends only on the items and ``seed``.

    Args:
        items: data list.
        n_folds: number of folds, at least 2.
        seed: random seed, default 0.
        group_key: key of the group id, default ``"patient_id"``; None groups by image path.
        stratify_key: key to stratify on, default ``"label"``; None for no stratification.
        linked: optional lists of item indices that must share a fold (e.g. near-duplicate clusters,
            :meth:`~monai_transfer.data.bundle_data.SplitDatalists.linked`); their groups are merged.

    Returns:
        one fold index per item, in input order.

    Raises:
        ValueError: ``n_folds`` < 2, an empty list, or fewer groups than folds (a fold would be empty).
    """
    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}.")
    if len(items) == 0:
        raise ValueError("cannot split an empty data list into folds.")
    groups, strata = _groups_and_strata(items, group_key, stratify_key, linked)
    if len(groups) < n_folds:
        raise ValueError(
            f"{len(items)} items in {len(groups)} group(s) by {group_key!r} cannot fill {n_folds} folds; "
            f"use at most {len(groups)} folds."
        )
    rng = np.random.default_rng(seed)
    fold_total = [0] * n_folds
    fold = [-1] * len(items)
    for s in sorted(strata, key=str):
        gs = [strata[s][j] for j in rng.permutation(len(strata[s]))]
        gs.sort(key=lambda g: -len(groups[g]))  # stable: equal sizes keep the seeded order
        in_stratum = [0] * n_folds
        for g in gs:
            k = min(range(n_folds), key=lambda f: (in_stratum[f], fold_total[f], f))
            in_stratum[k] += len(groups[g])
            fold_total[k] += len(groups[g])
            for i in groups[g]:
                fold[i] = k
    return fold


def kfold_datalist(
    items: Sequence[Mapping[str, Any]],
    n_folds: int = 5,
    seed: int = 0,
    group_key: str | None = "patient_id",
    stratify_key: str | None = "label",
    linked: Sequence[Sequence[int]] | None = None,
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """K-fold cross-validation splits of a data list: ``[(train_k, val_k) for k in range(n_folds)]``.

    ``val_k`` is fold ``k`` of :func:`assign_folds` (stratified, group-disjoint, seeded) and ``train_k`` all other
    items; each side keeps the input order and holds item copies. Every item is in exactly one ``val_k``.

    Args:
        items: data list.
        n_folds: number of folds, at least 2.
        seed: random seed, default 0.
        group_key: key of the group id, default ``"patient_id"``; None groups by image path.
        stratify_key: key to stratify on, default ``"label"``; None for no stratification.
        linked: item index lists that must share a fold, see :func:`assign_folds`.

    Raises:
        ValueError: see :func:`assign_folds`.
    """
    fold = assign_folds(items, n_folds, seed, group_key, stratify_key, linked)
    return [
        (
            [dict(it) for it, f in zip(items, fold) if f != k],
            [dict(it) for it, f in zip(items, fold) if f == k],
        )
        for k in range(int(n_folds))
    ]
