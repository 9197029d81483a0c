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
"""Per-volume aggregation on hand-made probabilities; slice data sets from real volumes; no volume in two splits."""

from __future__ import annotations

import shutil
import unittest
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, ScaleIntensityd
from parameterized import parameterized

from monai_transfer.data.bundle_data import bundle_datalists
from monai_transfer.data.volumes import (
    aggregate_by_volume,
    aggregate_volume_probs,
    check_disjoint_sources,
    slice_datalist,
    volume_slices,
)
from monai_transfer.transforms import ExtractSlicesd, LoadMedicalImaged
from tests.utils import ADRENAL_NPZ, REPO_ROOT, load_adrenal, requires_shared_data

CT_DATA = REPO_ROOT / "bundles" / "ct_slices" / "data"
CLASS_NAMES = ["normal", "adrenal_mass"]

# 3 slices of a 2-class softmax, positive column 1: 0.1, 0.4, 0.8
P2 = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]
TEST_CASES_2CLASS = [
    ("mean", 3, [0.9 + 0.6 + 0.2, 0.1 + 0.4 + 0.8]),  # divided by 3 below
    ("max", 3, [0.2 * 3, 0.8 * 3]),
    ("topk_mean", 2, [(0.6 + 0.2) * 1.5, (0.4 + 0.8) * 1.5]),
    ("topk_mean", 1, [0.2 * 3, 0.8 * 3]),
    ("topk_mean", 10, [0.9 + 0.6 + 0.2, 0.1 + 0.4 + 0.8]),  # k larger than the slice count: all slices
]


def _volume_transform():
    return Compose([LoadMedicalImaged(keys="image"), ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)])


class TestAggregateVolumeProbs(unittest.TestCase):
    @parameterized.expand(TEST_CASES_2CLASS)
    def test_two_class_rows(self, method, k, expected_times3):
        out = aggregate_volume_probs(P2, method=method, k=k)
        np.testing.assert_allclose(out, np.asarray(expected_times3) / 3, atol=1e-12)
        self.assertAlmostEqual(float(out.sum()), 1.0, places=12)

    def test_scores_and_tensor_input(self):
        s = torch.tensor([0.1, 0.7, 0.3, 0.9])
        self.assertAlmostEqual(aggregate_volume_probs(s, "mean"), 0.5, places=6)
        self.assertAlmostEqual(aggregate_volume_probs(s, "max"), 0.9, places=6)
        self.assertAlmostEqual(aggregate_volume_probs(s, "topk_mean", k=2), 0.8, places=6)
        self.assertAlmostEqual(aggregate_volume_probs(s, "topk_mean", k=3), (0.9 + 0.7 + 0.3) / 3, places=6)

    def test_positive_index_and_multiclass(self):
        # ranking on column 0 picks the row with 0.9
        np.testing.assert_allclose(aggregate_volume_probs(P2, "max", positive_index=0), [0.9, 0.1])
        p3 = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]  # softmax rows: per-column max (0.7, 0.3, 0.6), renormalised
        np.testing.assert_allclose(aggregate_volume_probs(p3, "max"), np.array([0.7, 0.3, 0.6]) / 1.6)
        ml = [[0.9, 0.2, 0.5], [0.1, 0.4, 0.7]]  # sigmoid rows (do not sum to 1): per-column max, no renormalising
        np.testing.assert_allclose(aggregate_volume_probs(ml, "max"), [0.9, 0.4, 0.7])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "one of"):
            aggregate_volume_probs(P2, "median")
        with self.assertRaisesRegex(ValueError, "k must be"):
            aggregate_volume_probs(P2, "topk_mean", k=0)
        with self.assertRaisesRegex(ValueError, "no slice"):
            aggregate_volume_probs(np.zeros((0, 2)))
        with self.assertRaisesRegex(ValueError, "shape"):
            aggregate_volume_probs(np.zeros((2, 2, 2)))

    def test_aggregate_by_volume(self):
        ids = ["b", "a", "b", "a", "c"]
        probs = [[0.8, 0.2], [0.5, 0.5], [0.4, 0.6], [0.1, 0.9], [0.7, 0.3]]
        res = aggregate_by_volume(ids, probs, labels=[1, 0, 1, 0, 1], method="mean")
        self.assertEqual(res["ids"], ["b", "a", "c"])  # order of first appearance
        np.testing.assert_allclose(res["probs"], [[0.6, 0.4], [0.3, 0.7], [0.7, 0.3]])
        np.testing.assert_array_equal(res["labels"], [1, 0, 1])
        self.assertEqual(res["labels"].dtype, np.int64)
        self.assertEqual(res["n_slices"], [2, 2, 1])
        res_max = aggregate_by_volume(ids, probs, method="max")
        np.testing.assert_allclose(res_max["probs"], [[0.4, 0.6], [0.1, 0.9], [0.7, 0.3]])
        self.assertIsNone(res_max["labels"])
        with self.assertRaisesRegex(ValueError, "volume 'a' have different labels"):
            aggregate_by_volume(ids, probs, labels=[1, 0, 1, 1, 1])
        with self.assertRaisesRegex(ValueError, "one entry per slice"):
            aggregate_by_volume(ids[:-1], probs)


class TestCheckDisjointSources(unittest.TestCase):
    def test_disjoint_and_leak(self):
        ok = check_disjoint_sources({"train": [{"source_id": "a"}, {"source_id": "a"}], "val": [{"source_id": "b"}]})
        self.assertEqual(ok, {"train": {"a"}, "val": {"b"}})
        with self.assertRaisesRegex(ValueError, "source_id 'a' contributes to both the 'train' and 'val'"):
            check_disjoint_sources({"train": [{"source_id": "a"}], "val": [{"source_id": "b"}, {"source_id": "a"}]})
        with self.assertRaisesRegex(KeyError, "split 'val' has no 'source_id'"):
            check_disjoint_sources({"train": [{"source_id": "a"}], "val": [{"image": "x"}]})


def _slice_splits(datalists, n_train=3, n_val=4):
    """Train slices (random_n from the foreground, like the bundle) and val slices (central_n) of each split."""
    train_slicer = ExtractSlicesd("image", "axial", "random_n", n=n_train, offsets=(-1, 0, 1), random_pool="foreground")
    train_slicer.set_random_state(0)
    val_slicer = ExtractSlicesd("image", "axial", "central_n", n=n_val, offsets=(-1, 0, 1))
    return {
        "train": slice_datalist(datalists["train"], _volume_transform(), train_slicer),
        "val": slice_datalist(datalists["val"], _volume_transform(), val_slicer),
    }


class TestSliceSplits(unittest.TestCase):
    def test_shipped_labels_csv_no_volume_in_two_splits(self):
        full = bundle_datalists(CT_DATA / "labels.csv", class_names=CLASS_NAMES)
        self.assertEqual((len(full["train"]), len(full["val"])), (300, 98))
        vols = check_disjoint_sources(full, key="image")
        self.assertFalse(vols["train"] & vols["val"])
        check_disjoint_sources(full, key="patient_id")
        small = bundle_datalists(CT_DATA / "labels.csv", class_names=CLASS_NAMES, max_items=3)
        slices = _slice_splits(small)
        self.assertEqual((len(slices["train"]), len(slices["val"])), (3 * 3, 3 * 4))
        src = check_disjoint_sources(slices)  # raises if a volume gave slices to both splits
        self.assertEqual(src["train"], {x["image"] for x in small["train"]})
        self.assertEqual(src["val"], {x["image"] for x in small["val"]})
        for s in slices["train"] + slices["val"]:
            self.assertEqual(tuple(s["image"].shape), (3, 64, 64))
            self.assertIn(s["label"], (0, 1))

    def test_random_split_of_class_folder(self):
        import tempfile

        rows = bundle_datalists(CT_DATA / "labels.csv", class_names=CLASS_NAMES, max_items=6)["train"]
        with tempfile.TemporaryDirectory() as d:
            for r in rows:
                folder = Path(d) / CLASS_NAMES[r["label"]]
                folder.mkdir(exist_ok=True)
                shutil.copy(r["image"], folder / Path(r["image"]).name)
            splits = bundle_datalists(d, class_names=CLASS_NAMES, val_fraction=0.34, seed=1)
            self.assertEqual(len(splits["train"]) + len(splits["val"]), 6)
            self.assertEqual({x["label"] for x in splits["val"]}, {0, 1})  # stratified
            slices = _slice_splits(splits, n_train=2, n_val=2)
            src = check_disjoint_sources(slices)
            self.assertEqual(len(src["train"]) + len(src["val"]), 6)
            # a slice-level split would leak: the same check catches it
            leaked = {"train": slices["train"], "val": slices["val"] + slices["train"][:1]}
            with self.assertRaisesRegex(ValueError, "both the 'train' and 'val'"):
                check_disjoint_sources(leaked)


class TestVolumeSlices(unittest.TestCase):
    def test_streams_25d_slices_with_source_ids(self):
        path = str(CT_DATA / "volumes" / "adrenal_val_0000.nii.gz")
        vol = _volume_transform()({"image": path})["image"]
        slicer = ExtractSlicesd("image", "axial", "foreground", offsets=(-1, 0, 1))
        it = volume_slices([{"image": path, "label": 0}], _volume_transform(), slicer)
        first = next(it)  # a generator: nothing else loaded yet
        rest = list(it)
        slices = [first, *rest]
        fg = [int(i) for i in torch.nonzero((vol[0] > 0).sum(dim=(0, 1))).flatten()]
        self.assertEqual([s["slice_index"] for s in slices], fg)
        self.assertGreater(len(fg), 5)
        for s in slices:
            self.assertEqual(s["source_id"], path)
            i = s["slice_index"]
            expected = torch.stack([vol[0, :, :, max(i - 1, 0)], vol[0, :, :, i], vol[0, :, :, min(i + 1, 63)]])
            torch.testing.assert_close(s["image"].as_tensor(), expected.as_tensor())


@requires_shared_data(ADRENAL_NPZ)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_volumes_written_as_nifti(tmp_path):
    """Real AdrenalMNIST3D volumes from ../shared written as NIfTI give per-volume slice sets with the right label."""
    from monai_transfer.data import write_nifti

    x, y = load_adrenal("val", n=4, seed=0)
    data = [{"image": str(write_nifti(tmp_path / f"vol_{i}.nii.gz", x[i])), "label": int(y[i])} for i in range(len(y))]
    slicer = ExtractSlicesd("image", "axial", "central_n", n=5, offsets=(-1, 0, 1))
    slices = slice_datalist(data, _volume_transform(), slicer)
    ids, labels = [s["source_id"] for s in slices], [s["label"] for s in slices]
    res = aggregate_by_volume(ids, np.full((len(slices), 2), 0.5), labels)
    assert res["ids"] == [d["image"] for d in data]
    assert res["n_slices"] == [5] * len(data)
    np.testing.assert_array_equal(res["labels"], y)
