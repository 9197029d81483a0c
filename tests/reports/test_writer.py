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
"""Report files exist, parse and hold the right numbers; PNGs are real, non-trivial images; Grad-CAM overlays."""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import unittest
import unittest.mock
from pathlib import Path

import numpy as np
import pytest
import torch
from parameterized import parameterized
from PIL import Image
from sklearn import metrics as skm

from monai_transfer.metrics import save_threshold
from monai_transfer.metrics.calibration import apply_temperature
from monai_transfer.metrics.prevalence import ppv_npv_at_prevalence
from monai_transfer.reports import save_gradcam_overlays, write_classification_report
from tests.metrics.test_functional import make_binary, make_multiclass, make_multilabel
from tests.utils import assert_png

MAKERS = {"binary": make_binary, "multiclass": make_multiclass, "multilabel": make_multilabel}
NAMES = {"binary": ["normal", "pneumonia"], "multiclass": ["a", "b", "c", "d"], "multilabel": ["x", "y", "z"]}


def check_png(test: unittest.TestCase, path: Path, min_width: int = 300, min_bytes: int = 10_000) -> np.ndarray:
    test.assertTrue(path.is_file(), path)
    test.assertGreater(path.stat().st_size, min_bytes, path)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        test.assertEqual(im.format, "PNG")
        test.assertGreater(im.width, min_width, path)
        arr = np.asarray(im.convert("RGB"))
    test.assertGreater(len(np.unique(arr.reshape(-1, 3), axis=0)), 10, f"{path} is (almost) a single colour")
    return arr


class TestWriteReport(unittest.TestCase):
    @parameterized.expand([(m,) for m in MAKERS])
    def test_report_files(self, mode):
        p, y = MAKERS[mode](0)
        names = NAMES[mode]
        ids = [f"/data/case_{i}.png" for i in range(len(p))]
        with tempfile.TemporaryDirectory() as d:
            thr = {"binary": 0.4, "multiclass": None, "multilabel": [0.4, 0.5, 0.6]}[mode]
            written = write_classification_report(
                d, y, p, ids=ids, class_names=names, threshold=thr, mode=mode,
                meta={"weights": "packaged", "data": "synthetic", "split": "test"}, n_bootstrap=200,
            )  # fmt: skip
            files = {"metrics", "predictions", "roc", "confusion_matrix", "reliability"}
            self.assertEqual(set(written), files | (set() if mode == "binary" else {"per_class_csv", "per_class_md"}))
            report = json.loads((Path(d) / "metrics.json").read_text())
            self.assertEqual(report["meta"]["weights"], "packaged")
            self.assertEqual(report["class_names"], names)
            self.assertEqual(report["n_samples"], len(p))
            self.assertEqual(
                sum(report["counts"].values()), int(np.asarray(y).sum()) if mode == "multilabel" else len(p)
            )
            auc = skm.roc_auc_score(y, p, multi_class="ovr") if mode == "multiclass" else skm.roc_auc_score(y, p)
            self.assertAlmostEqual(report["metrics"]["auc"], auc, places=10)
            for m in ("auc", "sensitivity", "specificity"):
                ci = report["confidence_intervals"][m]
                self.assertLessEqual(ci["lower"], ci["upper"])
            if mode == "binary":
                self.assertEqual(report["threshold"]["value"], 0.4)
                pred = (p >= 0.4).astype(int)
                self.assertAlmostEqual(report["metrics"]["sensitivity"], skm.recall_score(y, pred), places=10)
                pred5 = (p >= 0.5).astype(int)
                self.assertAlmostEqual(report["metrics_at_0.5"]["sensitivity"], skm.recall_score(y, pred5), places=10)
            elif mode == "multiclass":
                self.assertNotIn("metrics_at_0.5", report)
                self.assertIsNone(report["threshold"]["value"])
            with open(Path(d) / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), len(p))
            self.assertEqual(rows[3]["id"], ids[3])
            if mode == "multilabel":
                self.assertEqual(int(rows[0]["label_y"]), int(y[0, 1]))
                self.assertAlmostEqual(float(rows[0]["prob_z"]), p[0, 2], places=5)
            else:
                self.assertEqual(int(rows[0]["label"]), int(y[0]))
                col = f"prob_{names[-1]}"
                self.assertAlmostEqual(float(rows[0][col]), (p[0] if mode == "binary" else p[0, -1]), places=5)
                acc = np.mean([int(r["label"]) == int(r["prediction"]) for r in rows])
                self.assertAlmostEqual(acc, report["metrics"]["accuracy"], places=10)
            for name in ("roc.png", "confusion_matrix.png", "reliability.png"):
                check_png(self, Path(d) / name)

    def test_threshold_from_file_and_nan_as_null(self):
        p, y = make_binary(1, n=60)
        y[:] = 1  # a class absent: AUC undefined -> null in JSON, no crash
        with tempfile.TemporaryDirectory() as d:
            path = save_threshold(Path(d) / "models" / "threshold.json", 0.6, method="youden")
            with self.assertWarns(RuntimeWarning):
                write_classification_report(Path(d) / "r", y, p, threshold=path, n_bootstrap=50)
            report = json.loads((Path(d) / "r" / "metrics.json").read_text())
            self.assertIsNone(report["metrics"]["auc"])
            self.assertEqual(report["threshold"]["value"], 0.6)
            self.assertIn("threshold.json", report["threshold"]["source"])
            self.assertAlmostEqual(report["metrics"]["sensitivity"], float(np.mean(p >= 0.6)), places=12)


class TestGradCAM(unittest.TestCase):
    def test_overlays_original_geometry(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 2),
        )
        x = torch.rand(3, 1, 32, 32)
        originals = [np.random.default_rng(i).random((400 + i, 360)) for i in range(3)]  # (H0, W0) != input size
        import monai_transfer.reports.gradcam as gradcam

        figures = []
        save = gradcam.save_figure
        with (
            tempfile.TemporaryDirectory() as d,
            unittest.mock.patch.object(
                gradcam, "save_figure", lambda f, p, **kw: figures.append(f) or save(f, p, **kw)
            ),
        ):
            paths = save_gradcam_overlays(
                model, x, "3", d, n=2, class_index=1, original_images=originals, ids=["/a/p1.nii.gz", "p2.png"],
                class_names=["no", "yes"],
            )  # fmt: skip
            self.assertEqual([p.name for p in paths], ["gradcam_p1.png", "gradcam_p2.png"])
            with torch.no_grad():
                p_yes = torch.softmax(model.eval()(x[:2]), dim=1)[:, 1]
            model.train()
            for i, path in enumerate(paths):
                check_png(self, path, min_width=300, min_bytes=1000)
                image_ax, bar_ax = figures[i].axes  # the overlay and its colour bar
                background, heat = image_ax.images
                self.assertEqual(background.get_array().shape, originals[i].shape)  # the original geometry
                self.assertEqual(heat.get_array().shape, originals[i].shape)
                self.assertEqual(bar_ax.get_ylabel(), "Grad-CAM (scaled per image)")
                title = image_ax.get_title()
                self.assertEqual(title, f"{['a/p1.nii.gz', 'p2.png'][i]}\nGrad-CAM for 'yes'\np(yes) = {p_yes[i]:.3f}")
                with Image.open(path) as im:
                    self.assertEqual(im.text["Title"], title.replace("\n", " | "))
                    self.assertIn(f"the {originals[i].shape[0]}x360 original image", im.text["Description"])
            self.assertTrue(model.training)  # mode restored
            with self.assertRaisesRegex(ValueError, "original_images"):
                save_gradcam_overlays(model, x, "3", d, n=3, original_images=originals[:1])

    def test_dataset_overlays_on_the_original_files(self):
        """``save_dataset_gradcam_overlays``: network inputs from the dataset items, overlays on the loaded original
        files (named after them); ``n=0`` writes nothing."""
        from monai.data import Dataset
        from PIL import Image

        from monai_transfer.reports.gradcam import save_dataset_gradcam_overlays

        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(4, 2),
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as d:
            files = []
            for i in range(3):
                f = Path(d) / f"img{i}.png"
                Image.fromarray((np.random.default_rng(i).random((48, 40)) * 255).astype(np.uint8)).save(f)
                files.append({"image": str(f)})
            ds = Dataset(files, transform=lambda x: {"image": torch.rand(1, 16, 16)})
            out = Path(d) / "cam"
            self.assertEqual(save_dataset_gradcam_overlays(model, ds, "0", out, n=0), [])
            self.assertFalse(out.exists())
            paths = save_dataset_gradcam_overlays(model, ds, "0", out, n=2, temperature=2.0)
            self.assertEqual([p.name for p in paths], ["gradcam_img0.png", "gradcam_img1.png"])
            for p in paths:
                with Image.open(p) as im:
                    self.assertIn("the 48x40 original image", im.text["Description"])  # the original file's geometry
                    self.assertIn("(highest score) | p(class ", im.text["Title"])
                    self.assertIn(", temperature 2", im.text["Title"])


# ------------------------------------------------------------------------- prevalence shift and calibration


def _binary_set() -> tuple[np.ndarray, np.ndarray]:
    """10 normal (2 predicted positive at 0.5) and 30 pneumonia (27 predicted positive): sens 0.9, spec 0.8."""
    y = np.array([0] * 10 + [1] * 30)
    p = np.array([0.7, 0.6] + [0.2] * 8 + [0.9] * 27 + [0.3] * 3)
    return p, y


def test_report_headline_first_prevalence_and_shift_warning(tmp_path, caplog):
    p, y = _binary_set()  # evaluated: 25 % normal
    meta = {"data": {"train": {"per_class": {"normal": 60, "pneumonia": 40}}}}  # training: 60 % normal
    with caplog.at_level(logging.WARNING):
        write_classification_report(
            tmp_path,
            y,
            p,
            class_names=NAMES["binary"],
            threshold=0.5,
            meta=meta,
            n_bootstrap=0,
            plots=False,
            prevalence=0.1,
        )
    report = json.loads((tmp_path / "metrics.json").read_text())
    keys = list(report)
    assert keys.index("headline") < keys.index("metrics")
    head = report["headline"]
    assert head["sensitivity"] == pytest.approx(0.9) and head["specificity"] == pytest.approx(0.8)
    assert head["balanced_accuracy"] == pytest.approx(0.85)
    assert set(head) == {"auc", "sensitivity", "specificity", "balanced_accuracy", "note"}
    prev = report["prevalence"]
    assert prev["evaluated"] == {"normal": 0.25, "pneumonia": 0.75}
    assert prev["training"] == {"normal": 0.6, "pneumonia": 0.4}
    assert prev["training_source"] == "meta: data.train.per_class"
    assert prev["stated"] == 0.1
    assert prev["ppv_at_stated"] == pytest.approx(1 / 3) and prev["npv_at_stated"] == pytest.approx(72 / 73)
    # at the evaluated prevalence the Bayes formula reproduces the observed PPV: 27 / (27 + 2)
    assert ppv_npv_at_prevalence(0.9, 0.8, 0.75)[0] == pytest.approx(report["metrics"]["ppv"]) == pytest.approx(27 / 29)
    assert prev["shift_warning"] and report["warnings"] == [prev["shift_warning"]]
    assert any("class balance differs" in r.message for r in caplog.records)
    # same balance as training, given explicitly: no warning
    write_classification_report(
        tmp_path / "b",
        y,
        p,
        class_names=NAMES["binary"],
        n_bootstrap=0,
        plots=False,
        training_counts={"normal": 1, "pneumonia": 3},
    )
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert report["warnings"] == [] and report["prevalence"]["training_source"] == "given"
    assert report["prevalence"]["stated"] is None and "ppv_at_stated" not in report["prevalence"]
    with pytest.raises(ValueError, match="binary"):
        write_classification_report(
            tmp_path / "c",
            np.array([0, 1, 2]),
            np.eye(3),
            mode="multiclass",
            n_bootstrap=0,
            plots=False,
            prevalence=0.2,
        )


def test_report_calibration_before_after(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4.0, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z / 3.0))).astype(int)  # the logits are over-confident by T = 3
    before = apply_temperature(z, 1.0)
    after = apply_temperature(z, 3.0)
    written = write_classification_report(
        tmp_path, y, after, class_names=NAMES["binary"], n_bootstrap=0, uncalibrated_prob=before,
        calibration={"temperature": 3.0, "fitted_on": "synthetic"},
    )  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text())
    cal = report["calibration"]
    assert cal["temperature"] == 3.0 and cal["fitted_on"] == "synthetic"
    assert cal["ece_after"] == pytest.approx(report["metrics"]["ece"])
    assert cal["ece_after"] < cal["ece_before"] and cal["brier_after"] < cal["brier_before"]
    assert_png(written["reliability_uncalibrated"])
    assert_png(written["reliability"])


if __name__ == "__main__":
    unittest.main()


def test_predictions_csv_unknown_labels_and_extra_columns(tmp_path):
    """The one predictions writer: ``None`` labels leave the label cells and ``correct`` empty; extras are appended."""
    from monai_transfer.reports.writer import write_predictions_csv

    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    path = write_predictions_csv(
        tmp_path / "p.csv", probs, [0, None, 1], ids=["a", "b", "c"], class_names=["no", "yes"], threshold=0.4,
        extra_columns={"image": ["a.png", "b.png", "c.png"], "threshold": ["0.4"] * 3},
    )  # fmt: skip
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "label", "label_name", "prob_no", "prob_yes", "prediction", "prediction_name"] + [
        "correct", "image", "threshold"
    ]  # fmt: skip
    assert [r["prediction"] for r in rows] == ["0", "1", "1"]  # 0.45 >= 0.4
    assert rows[1]["label"] == rows[1]["label_name"] == rows[1]["correct"] == ""
    assert (rows[0]["correct"], rows[2]["correct"], rows[2]["image"]) == ("1", "1", "c.png")
    ml = write_predictions_csv(tmp_path / "m.csv", probs, None, class_names=["a", "b"], mode="multilabel")
    with open(ml, newline="") as f:
        first = next(csv.DictReader(f))
    assert first["label_a"] == first["correct"] == "" and first["pred_a"] == "1" and first["pred_b"] == "0"


def test_case_id_is_the_path_relative_to_the_data_folder(tmp_path):
    from monai_transfer.reports.writer import case_id, write_predictions_csv

    data = tmp_path / "data"
    (data / "val" / "normal").mkdir(parents=True)
    (data / "labels.csv").write_text("image,label\n")
    img = data / "val" / "normal" / "a.png"
    assert case_id(img, data) == "val/normal/a.png"
    assert case_id(img, data / "labels.csv") == "val/normal/a.png"  # a data list stands for its folder
    assert case_id(img, data / "val") == "normal/a.png"
    assert case_id(img, None) == str(img)
    assert case_id(tmp_path / "elsewhere" / "b.png", data) == str(tmp_path / "elsewhere" / "b.png")  # outside: as is
    link = tmp_path / "link"
    link.symlink_to(data)
    assert case_id(link / "val" / "normal" / "a.png", data) == "val/normal/a.png"  # through a symbolic link
    out = write_predictions_csv(tmp_path / "p.csv", np.array([0.2, 0.9]), [0, 1], ids=[img, data / "b.dcm"],
                                id_root=data, extra_columns={"threshold": ["0.5", "0.5"]})  # fmt: skip
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["val/normal/a.png", "b.dcm"]
    assert [r["image"] for r in rows] == [str(img), str(data / "b.dcm")] and list(rows[0])[-2:] == [
        "image",
        "threshold",
    ]
