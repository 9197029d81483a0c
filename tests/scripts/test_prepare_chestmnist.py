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
"""``scripts/data/prepare_chestmnist.py`` on a ChestMNIST-format npz with synthetic pixels (ChestMNIST itself is not
available offline). The 1-epoch training of ``bundles/xray`` on the converted CSV is the 14-label test of
``tests/bundles/test_bundle_xray_modes.py``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.utils import REPO_ROOT, load_script, read_csv, synthetic_findings

__all__ = ["SCRIPT", "make_chestmnist_npz"]

SCRIPT = REPO_ROOT / "scripts" / "data" / "prepare_chestmnist.py"


@pytest.fixture(scope="module")
def prep():
    return load_script(SCRIPT)


def make_chestmnist_npz(path: Path, n_train: int = 24, n_val: int = 12, n_test: int = 6, size: int = 32) -> Path:
    """An npz with ChestMNIST's arrays: ``<split>_images`` ``(N, size, size)`` uint8 and ``<split>_labels`` ``(N, 14)``
    uint8 0/1 (:func:`tests.utils.synthetic_findings`) for train, val and (``n_test > 0``) test. Train image 0 is a copy
    of val image 0 and val image 1 a copy of test image 1 (with the same labels), as cross-split copies to remove."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n:
            images, labels = synthetic_findings(n, 14, rng, size)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.uint8)
    arrays["train_images"][0] = arrays["val_images"][0]
    if n_test > 1:
        arrays["val_images"][1] = arrays["test_images"][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_npz_becomes_pngs_and_a_finding_per_column_csv(tmp_path, prep):
    npz, out = make_chestmnist_npz(tmp_path / "chestmnist.npz"), tmp_path / "cxr14"
    assert prep.main(["--npz", str(npz), "--out", str(out)]) == 0
    rows = read_csv(out / "labels.csv")
    assert list(rows[0]) == ["image", "patient_id", "split", *prep.FINDINGS]
    assert len(prep.FINDINGS) == 14 and prep.NIH_NAMES["pleural"] == "Pleural_Thickening"
    with np.load(npz) as z:
        source = {k: z[k] for k in z.files}
    ids = {s: [int(r["patient_id"].rsplit("_", 1)[1]) for r in rows if r["split"] == s] for s in prep.SPLITS}
    assert ids == {"train": list(range(1, 24)), "val": [0, *range(2, 12)], "test": list(range(6))}  # copies left out
    for r in rows:
        split, name = r["image"].split("/")
        i = int(r["patient_id"].rsplit("_", 1)[1])
        assert name == f"{r['patient_id']}.png" and r["patient_id"] == f"chestmnist_{split}_{i:05d}"
        with Image.open(out / r["image"]) as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), source[f"{split}_images"][i])
        assert [int(r[f]) for f in prep.FINDINGS] == source[f"{split}_labels"][i].tolist()
    readme = (out / "README.md").read_text()
    assert "train 23, val 11, test 6" in readme and "| pleural (Pleural_Thickening) |" in readme
    assert f"--dataset_dir {out / 'labels.csv'}" in readme and prep.CLASS_NAMES_ARG in readme
    licence = (out / "data_license.txt").read_text()
    for needle in ("ChestMNIST (32x32)", "MedMNIST v2", "CC BY 4.0", "ChestX-ray8", "NIH Clinical Center",
                   "scripts/data/prepare_chestmnist.py", f"--npz chestmnist.npz --out {out}"):  # fmt: skip
        assert needle in licence, needle
    # a rerun deletes what it wrote before: same bytes, stale files gone
    first = _hashes(out)
    (out / "train" / "stale.png").write_bytes(b"x")
    assert prep.main(["--npz", str(npz), "--out", str(out)]) == 0
    assert _hashes(out) == first


def test_xray_bundle_reads_the_csv_as_fourteen_findings(tmp_path, prep):
    from tests.bundles.test_bundle_xray_modes import _parser

    out = tmp_path / "cxr14"
    prep.prepare_chestmnist(make_chestmnist_npz(tmp_path / "chestmnist.npz", 9, 6, 3), out)
    parser = _parser(out / "labels.csv", tmp_path / "run", class_names=list(prep.FINDINGS))
    assert parser.get_parsed_content("mode") == "multilabel"
    assert parser.get_parsed_content("loss") == "bce"
    lists = parser.get_parsed_content("datalists")
    assert {s: len(v) for s, v in lists.items()} == {"train": 8, "val": 5, "test": 3}
    by_name = {Path(x["image"]).name: x["label"] for s in lists for x in lists[s]}
    for r in read_csv(out / "labels.csv"):
        assert by_name[Path(r["image"]).name] == [int(r[f]) for f in prep.FINDINGS]


def test_subset_keeps_positives_of_every_finding(prep):
    labels = np.zeros((200, 3), dtype=np.int64)
    labels[:100, 0] = 1
    labels[100:104, 1] = 1  # rare
    labels[150:152, 2] = 1  # rarer than min_positive
    candidates = np.arange(1, 200)  # index 0 excluded (a cross-split copy)
    draw = prep.multilabel_subset(labels, candidates, 20, 3, seed=[1, 0])
    assert len(draw) == 20 and np.all(np.diff(draw) > 0) and 0 not in draw
    assert labels[draw, 0].sum() >= 3 and labels[draw, 1].sum() >= 3 and labels[draw, 2].sum() == 2
    np.testing.assert_array_equal(draw, prep.multilabel_subset(labels, candidates, 20, 3, seed=[1, 0]))
    np.testing.assert_array_equal(prep.multilabel_subset(labels, candidates, 500, 3, seed=0), candidates)
    with pytest.raises(ValueError, match="n=4 is too small for 3 positives of each of the 3 findings"):
        prep.multilabel_subset(labels, candidates, 4, 3, seed=0)


def test_max_per_split(tmp_path, prep):
    npz = make_chestmnist_npz(tmp_path / "c.npz", 30, 12, 0)
    summary = prep.prepare_chestmnist(npz, tmp_path / "out", max_per_split=10, min_positive=2)
    assert summary["train"]["n"] == 10 and summary["val"]["n"] == 10 and "test" not in summary
    assert min(summary["train"]["positives"].values()) >= 2
    assert not (tmp_path / "out" / "test").exists()
    assert "at most 10 images per split" in (tmp_path / "out" / "data_license.txt").read_text()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"val_labels": None}, r"lacks arrays \['val_labels'\]"),
        ({"train_labels": np.zeros((4, 1), np.uint8)}, r"train_labels must be \(N, 14\).*is this ChestMNIST"),
        ({"train_labels": np.full((4, 14), 2, np.uint8)}, r"train_labels must hold only 0 and 1, found \[2\]"),
        ({"train_images": np.zeros((4, 8, 8, 3), np.uint8)}, r"train_images must be \(N, H, W\) uint8 grey"),
        ({"train_images": np.zeros((3, 8, 8), np.uint8)}, "3 train_images but 4 train_labels"),
    ],
)
def test_refuses_what_is_not_chestmnist(tmp_path, prep, change, match):
    arrays = {f"{s}_images": np.zeros((4, 8, 8, 1), np.uint8) for s in ("train", "val")}
    arrays.update({f"{s}_labels": np.zeros((4, 14), np.uint8) for s in ("train", "val")})
    np.savez(tmp_path / "ok.npz", **arrays)
    assert set(prep.load_chestmnist(tmp_path / "ok.npz")) == {"train", "val"}  # (N, H, W, 1) is squeezed
    arrays.update(change)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=match) as e:
        prep.load_chestmnist(tmp_path / "bad.npz")
    assert str(tmp_path / "bad.npz") in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        prep.load_chestmnist(tmp_path / "missing.npz")
