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
"""Volume classification with a 2D network: slice data sets from volume data lists and per-volume aggregation.

A volume data list (``[{"image": "ct_001.nii.gz", "label": 1, "patient_id": ...}, ...]``, split by patient with
:func:`~monai_transfer.data.bundle_datalists`) becomes 2D/2.5D slices through a volume transform (load, intensity)
and :class:`~monai_transfer.transforms.ExtractSlicesd`; every slice carries its volume's ``source_id``. The 2D
network's slice probabilities are pooled back into one probability per volume by :func:`aggregate_volume_probs`
(``"mean"``, ``"max"`` or ``"topk_mean"``), grouped by ``source_id`` in :func:`aggregate_by_volume`.

Splitting is done on the VOLUME list, never on slices: :func:`check_disjoint_sources` asserts that no volume (or
patient) gives slices to two splits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AGGREGATION_METHODS",
    "aggregate_volume_probs",
    "aggregate_by_volume",
    "volume_slices",
    "slice_datalist",
    "check_disjoint_sources",
]

#: slice-to-volume pooling methods of :func:`aggregate_volume_probs`.
AGGREGATION_METHODS = ("mean", "max", "topk_mean")


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        x = x.float().numpy()
    return np.asarray(x, dtype=np.float64)


def aggregate_volume_probs(probs: Any, method: str = "mean", k: int = 3, positive_index: int = 1) -> np.ndarray | float:
    """Pool the probabilities of one volume's slices into one volume probability.

    - ``"mean"``: mean over slices (of every column).
    - ``"max"``: the most positive slice, i.e. ``"topk_mean"`` with ``k=1``.
    - ``"topk_mean"``: mean of the ``k`` most positive slices (all slices when there are fewer than ``k``).

    "Most positive" depends on the shape of ``probs``:

    - ``(S,)``: one score per slice (e.g. the positive-class probability); returns a float.
    - ``(S, 2)``: a 2-class softmax; slices are ranked by column ``positive_index`` and their whole rows averaged,
      so the result still sums to one (``max`` of ``[[.9, .1], [.2, .8]]`` is ``[.2, .8]``).
    - ``(S, K)`` with ``K != 2``: each column is pooled on its own (top-k of each column); when every row sums to one
      (softmax) the result is renormalised to sum to one, otherwise (sigmoid, multi-label) it is returned as is.

    Args:
        probs: slice probabilities, array-like or tensor, ``(S,)`` or ``(S, K)``.
        method: one of :data:`AGGREGATION_METHODS`; default ``"mean"``.
        k: slices averaged by ``"topk_mean"``, >= 1; default 3.
        positive_index: positive column of a 2-class output; default 1.

    Returns:
        a float for ``(S,)`` input, else a ``(K,)`` float64 array.

    Raises:
        ValueError: unknown ``method``, ``k < 1``, no slice, more than 2 dimensions, or a bad ``positive_index``.

    Example::

        aggregate_volume_probs([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], "topk_mean", k=2)  # array([0.4, 0.6])
    """
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"aggregation method must be one of {AGGREGATION_METHODS}, got {method!r}.")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    p = _as_numpy(probs)
    if p.ndim not in (1, 2):
        raise ValueError(f"slice probabilities must have shape (S,) or (S, K), got {p.shape}.")
    if p.shape[0] == 0:
        raise ValueError("cannot aggregate a volume with no slice probabilities.")
    if method == "mean":
        out = p.mean(0)
        return float(out) if p.ndim == 1 else out
    take = 1 if method == "max" else min(int(k), p.shape[0])
    if p.ndim == 1:
        return float(np.sort(p)[::-1][:take].mean())
    if p.shape[1] == 2:
        if positive_index not in (0, 1):
            raise ValueError(f"positive_index must be 0 or 1 for a 2-class output, got {positive_index}.")
        order = np.argsort(-p[:, positive_index], kind="mergesort")
        return p[order[:take]].mean(0)
    out = -np.sort(-p, axis=0)[:take].mean(0)
    if np.allclose(p.sum(1), 1.0, atol=1e-4):
        out = out / out.sum()
    return out


def aggregate_by_volume(
    ids: Sequence[Any],
    probs: Any,
    labels: Any = None,
    method: str = "mean",
    k: int = 3,
    positive_index: int = 1,
) -> dict[str, Any]:
    """Group slice probabilities by volume id and pool each group with :func:`aggregate_volume_probs`.

    Args:
        ids: one volume id (``source_id``) per slice.
        probs: slice probabilities ``(S,)`` or ``(S, K)``.
        labels: optional slice labels, ``(S,)`` or ``(S, L)`` (one-hot / multi-label); all slices of a volume must
            carry the same label.
        method, k, positive_index: see :func:`aggregate_volume_probs`.

    Returns:
        ``{"ids": [V volume ids in order of first appearance], "probs": (V,) or (V, K) array,
        "labels": (V,) / (V, L) array or None, "n_slices": [V ints]}``.

    Raises:
        ValueError: ``ids``/``probs``/``labels`` of different lengths, or a volume whose slices disagree on the label
            (the message names the volume).
    """
    p = _as_numpy(probs)
    n = p.shape[0] if p.ndim else 0
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"ids must have one entry per slice ({n}), got {len(ids)}.")
    y = None
    if labels is not None:
        y = _as_numpy(labels)
        if y.shape[0] != n:
            raise ValueError(f"labels must have one entry per slice ({n}), got {y.shape[0]}.")
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        groups.setdefault(v, []).append(i)
    vol_probs, vol_labels = [], []
    for v, idx in groups.items():
        vol_probs.append(aggregate_volume_probs(p[idx], method=method, k=k, positive_index=positive_index))
        if y is not None:
            first = y[idx[0]]
            if not np.all(y[idx] == first):
                found = sorted({str(r.tolist()) for r in y[idx]})
                raise ValueError(f"slices of volume {v!r} have different labels {found}; labels are per volume.")
            vol_labels.append(first)
    return {
        "ids": list(groups),
        "probs": np.asarray(vol_probs, dtype=np.float64),
        "labels": None if y is None else _labels_array(vol_labels),
        "n_slices": [len(idx) for idx in groups.values()],
    }


def _labels_array(labels: list[np.ndarray]) -> np.ndarray:
    arr = np.asarray(labels)
    return arr.astype(np.int64) if np.all(np.mod(arr, 1) == 0) else arr


def volume_slices(
    data: Iterable[Mapping[str, Any]],
    volume_transform: Callable[[Any], Any] | None,
    slicing: Callable[[Any], Any],
    slice_transform: Callable[[Any], Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream the slices of a volume data list, one volume in memory at a time.

    Each item goes through ``volume_transform`` (e.g. ``Compose([LoadMedicalImaged, ScaleIntensityd])``) and
    ``slicing`` (e.g. ``ExtractSlicesd(..., offsets=(-1, 0, 1))``, which returns a list of slice dicts carrying
    ``source_id``/``slice_index``); ``slice_transform`` (resize, normalisation) is applied to every slice.

    Args:
        data: volume data list.
        volume_transform: volume dict transform, or None when ``data`` already holds loaded volumes.
        slicing: volume dict -> list of slice dicts (a single dict is treated as one slice).
        slice_transform: optional per-slice transform.

    Yields:
        slice dicts.
    """
    for item in data:
        vol = volume_transform(dict(item)) if volume_transform is not None else dict(item)
        slices = slicing(vol)
        if isinstance(slices, Mapping):
            slices = [slices]
        for s in slices:
            yield slice_transform(s) if slice_transform is not None else s


def slice_datalist(
    data: Iterable[Mapping[str, Any]],
    volume_transform: Callable[[Any], Any] | None,
    slicing: Callable[[Any], Any],
    slice_transform: Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """All slices of a volume data list as one flat list (see :func:`volume_slices`).

    Use it for deterministic slicing (``central_n``, ``foreground``, ``every_k``, ``all``): the slices are made once
    and the volumes are not kept, so memory holds the slices only. Random slicing (``random_n``) belongs in the
    training transform chain instead, so that every epoch draws new slices.
    """
    return list(volume_slices(data, volume_transform, slicing, slice_transform))


def check_disjoint_sources(
    splits: Mapping[str, Iterable[Mapping[str, Any]]], key: str = "source_id"
) -> dict[str, set[str]]:
    """Check that no volume (``key`` value) contributes items to two splits.

    Args:
        splits: ``{"train": slices_or_volumes, "val": ..., ...}``.
        key: the id that must not cross splits: ``"source_id"`` for slices, ``"patient_id"`` for patients,
            ``"image"`` for volume data lists.

    Returns:
        ``{split: set of ids}``.

    Raises:
        KeyError: an item without ``key`` (the message names the split).
        ValueError: an id found in two splits (the message names the id and both splits).
    """
    seen: dict[str, str] = {}
    out: dict[str, set[str]] = {}
    for name, items in splits.items():
        ids: set[str] = set()
        for it in items:
            if key not in it:
                raise KeyError(f"an item of split {name!r} has no {key!r} (keys: {sorted(map(str, it))}).")
            ids.add(str(it[key]))
        for v in sorted(ids):
            if seen.setdefault(v, name) != name:
                raise ValueError(f"{key} {v!r} contributes to both the {seen[v]!r} and {name!r} splits.")
        out[name] = ids
    return out
