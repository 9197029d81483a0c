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
"""Deterministic, stratified, group-disjoint splits."""

from __future__ import annotations

import random

import pytest

from monai_transfer.data import split_datalist


def _items(n_patients: int = 40, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for p in range(n_patients):
        label = int(p % 4 == 0)  # 25 % positive patients
        for k in range(rng.randint(1, 5)):
            items.append({"image": f"/d/p{p}_{k}.png", "label": label, "patient_id": f"P{p}"})
    return items


def test_no_patient_on_both_sides_and_stratified():
    items = _items()
    train, val = split_datalist(items, val_fraction=0.25, seed=3)
    assert len(train) + len(val) == len(items)
    assert not {it["patient_id"] for it in train} & {it["patient_id"] for it in val}
    for lab in (0, 1):
        total = sum(it["label"] == lab for it in items)
        in_val = sum(it["label"] == lab for it in val)
        assert 0 < in_val < total
        assert abs(in_val / total - 0.25) < 0.15


def test_deterministic_and_order_independent():
    items = _items()
    a = split_datalist(items, 0.2, seed=1)
    assert split_datalist(items, 0.2, seed=1) == a
    shuffled = list(items)
    random.Random(5).shuffle(shuffled)
    b = split_datalist(shuffled, 0.2, seed=1)
    assert sorted(x["image"] for x in b[1]) == sorted(x["image"] for x in a[1])
    c = split_datalist(items, 0.2, seed=2)
    assert sorted(x["image"] for x in c[1]) != sorted(x["image"] for x in a[1])


def test_fallback_to_image_path_and_source_id():
    items = [{"image": f"/d/{i}.png", "label": i % 2} for i in range(20)]
    train, val = split_datalist(items, 0.3, seed=0)
    assert len(val) == 6 and not {x["image"] for x in train} & {x["image"] for x in val}
    slices = [
        {"image": f"/v{v}.nii", "source_id": f"/v{v}.nii", "slice_index": s, "label": v % 2}
        for v in range(6)
        for s in range(4)
    ]
    tr, va = split_datalist(slices, 0.34, seed=0, group_key="source_id")
    assert not {x["source_id"] for x in tr} & {x["source_id"] for x in va}
    assert len(va) % 4 == 0 and len(va) > 0


def test_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        split_datalist(_items(), val_fraction=1.0)
    one_patient = [{"image": f"/d/{i}.png", "label": 0, "patient_id": "P"} for i in range(5)]
    with pytest.raises(ValueError, match="one side empty"):
        split_datalist(one_patient, 0.2)


# ------------------------------------------------------------------------------------------------- k-fold


@pytest.mark.parametrize("n_folds,seed", [(2, 0), (3, 1), (5, 7)])
def test_kfold_group_disjoint_every_item_out_of_fold_once_stratified(n_folds, seed):
    from monai_transfer.data import assign_folds, kfold_datalist

    items = _items(60, seed=seed)
    folds = kfold_datalist(items, n_folds=n_folds, seed=seed)
    assert len(folds) == n_folds
    out_of_fold = [x["image"] for _, val in folds for x in val]
    assert sorted(out_of_fold) == sorted(x["image"] for x in items)  # every item out-of-fold exactly once
    fold_of = assign_folds(items, n_folds=n_folds, seed=seed)
    for k, (train, val) in enumerate(folds):
        assert len(train) + len(val) == len(items)
        assert {x["image"] for x in val} == {x["image"] for x, f in zip(items, fold_of) if f == k}
        assert not {x["patient_id"] for x in train} & {x["patient_id"] for x in val}  # no patient on both sides
    # no patient in two folds
    patient_folds: dict[str, set[int]] = {}
    for x, f in zip(items, fold_of):
        patient_folds.setdefault(x["patient_id"], set()).add(f)
    assert all(len(v) == 1 for v in patient_folds.values())
    # stratified: each fold holds close to 1/K of each class (patients have at most 5 images)
    for lab in (0, 1):
        total = sum(x["label"] == lab for x in items)
        per_fold = [sum(x["label"] == lab for x in val) for _, val in folds]
        assert all(c > 0 for c in per_fold)
        assert max(per_fold) - min(per_fold) <= 5, per_fold
        assert sum(per_fold) == total


def test_kfold_deterministic_order_independent_and_seeded():
    from monai_transfer.data import kfold_datalist

    items = _items(40)
    a = kfold_datalist(items, 4, seed=1)
    assert kfold_datalist(items, 4, seed=1) == a
    shuffled = list(items)
    random.Random(3).shuffle(shuffled)
    b = kfold_datalist(shuffled, 4, seed=1)
    assert [sorted(x["image"] for x in v) for _, v in b] == [sorted(x["image"] for x in v) for _, v in a]
    c = kfold_datalist(items, 4, seed=2)
    assert [sorted(x["image"] for x in v) for _, v in c] != [sorted(x["image"] for x in v) for _, v in a]


def test_kfold_without_groups_is_exact_and_errors():
    from monai_transfer.data import assign_folds, kfold_datalist

    items = [{"image": f"/d/{i}.png", "label": int(i < 8)} for i in range(20)]  # 8 positives, 12 negatives
    folds = kfold_datalist(items, 4, seed=0)
    assert [sum(x["label"] for x in v) for _, v in folds] == [2, 2, 2, 2]
    assert [len(v) for _, v in folds] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(items, 1)
    with pytest.raises(ValueError, match="empty"):
        assign_folds([], 3)
    few = [{"image": f"/d/{i}.png", "label": 0, "patient_id": "P1"} for i in range(3)]
    with pytest.raises(ValueError, match="1 group"):
        assign_folds(few, 2)


def test_kfold_keeps_linked_items_in_one_fold():
    """Near-duplicate clusters (``linked``) share a fold, like one patient; without it they may be split."""
    from monai_transfer.data.splits import assign_folds, kfold_datalist

    items = [{"image": f"{i}.png", "label": i % 2} for i in range(20)]
    linked = [[0, 1, 2, 3], [4, 9]]
    fold = assign_folds(items, 4, seed=0, linked=linked)
    assert len({fold[i] for i in linked[0]}) == 1 and len({fold[i] for i in linked[1]}) == 1
    assert sorted(set(fold)) == [0, 1, 2, 3]
    vals = [v for _, v in kfold_datalist(items, 4, seed=0, linked=linked)]
    assert sorted(x["image"] for v in vals for x in v) == sorted(x["image"] for x in items)
    assert sum(any(x["image"] == "0.png" for x in v) and any(x["image"] == "3.png" for x in v) for v in vals) == 1
