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
"""``bundles/xray`` beyond two classes: the ``mode`` id (binary / multiclass / multilabel) end to end.

A 3-class folder data set and a 14-label CSV (NIH ChestX-ray14 finding names on synthetic 32 px images, built by the
tests) are trained for one epoch, evaluated and run through inference; the reports are checked against
scikit-learn on probabilities recomputed here from ``model.pt``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reports.test_tables import NIH14, assert_table_matches_sklearn
from tests.utils import REPO_ROOT, assert_png, bundle_cli, load_script, read_csv, synthetic_findings

__all__: list[str] = []

BUNDLE = REPO_ROOT / "bundles" / "xray"
TRAIN = (BUNDLE / "configs" / "train.json").relative_to(REPO_ROOT)
EVALUATE = (BUNDLE / "configs" / "evaluate.json").relative_to(REPO_ROOT)
INFERENCE = (BUNDLE / "configs" / "inference.json").relative_to(REPO_ROOT)
TINY = ["--epochs", "1", "--image_size", "32", "--batch_size", "4", "--n_bootstrap", "20", "--device", "cpu"]
THREE = ["a", "b", "c"]


def _png(path: Path, img: np.ndarray) -> None:
    from monai_transfer.data import write_png

    write_png(path, img.astype(np.uint8))


def make_three_class(root: Path, n_train: int = 8, n_val: int = 5) -> Path:
    """``root/{train,val}/{a,b,c}/*.png``: class k brightens vertical band k of a noisy 32x32 image."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for k, c in enumerate(THREE):
            for i in range(n):
                img = rng.integers(0, 60, (32, 32))
                img[:, k * 10 : (k + 1) * 10] += 150
                _png(root / split / c / f"{split}_{c}_{i}.png", img)
    return root


def make_multilabel_csv(root: Path, names=NIH14, n_train: int = 24, n_val: int = 12) -> Path:
    """``root/labels.csv`` (``image, split, <one 0/1 column per finding>``) + ``root/images``.

    Images and labels from :func:`tests.utils.synthetic_findings` (finding k on case i when ``(i + k) % 3 == 0``, each
    finding positive and negative in both splits); one training value is ``-1`` (uncertain).
    """
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        images, labels = synthetic_findings(n, len(names), rng)
        for i, (img, lab) in enumerate(zip(images, labels.tolist())):
            _png(root / "images" / f"{split}_{i:03d}.png", img)
            if split == "train" and i == 0:
                lab[1] = -1
            rows.append({"image": f"images/{split}_{i:03d}.png", "split": split, **dict(zip(names, lab))})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "split", *names])
        w.writeheader()
        w.writerows(rows)
    return root / "labels.csv"


def _parser(dataset_dir: Path, output_dir: Path, **override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / TRAIN))
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = str(dataset_dir)
    parser["output_dir"] = str(output_dir)
    for k, v in override.items():
        parser[k] = v
    return parser


def recompute_probs(run: Path, ids: list[str], class_names: list[str], mode: str) -> np.ndarray:
    """Probabilities of ``ids`` from ``run/models/model.pt`` with the bundle's inference preprocessing, here."""
    from monai.bundle import ConfigParser

    from monai_transfer.utils.io import safe_torch_load

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / INFERENCE))
    parser["bundle_root"] = str(BUNDLE)
    parser["image_size"] = 32
    parser["class_names"] = class_names
    parser["device"] = "cpu"
    pre = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(safe_torch_load(run / "models" / "model.pt"))
    net.eval()
    x = torch.stack([pre({"image": i})["image"].as_tensor() for i in ids])
    with torch.no_grad():
        logits = net(x)
    return (torch.sigmoid(logits) if mode == "multilabel" else torch.softmax(logits, 1)).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------------- fast


def test_mode_is_inferred_and_drives_loss_activation_metrics_threshold(tmp_path):
    from monai_transfer.losses.classification import ClassificationBCEWithLogitsLoss, ClassificationCrossEntropyLoss

    shipped = _parser(BUNDLE / "data", tmp_path / "r0", max_items=8)
    assert shipped.get_parsed_content("mode") == "binary"
    three = _parser(make_three_class(tmp_path / "d3", 2, 2), tmp_path / "r3", class_names=THREE)
    assert three.get_parsed_content("mode") == "multiclass"
    assert isinstance(three.get_parsed_content("train#loss_function"), ClassificationCrossEntropyLoss)
    assert three.get_parsed_content("validate#report_writer#select_threshold_on") is None  # arg-max: no threshold
    act = three.get_parsed_content("validate#postprocessing").transforms[0]
    assert act.softmax == (True,) and act.sigmoid == (False,)
    ml = _parser(make_multilabel_csv(tmp_path / "dml", NIH14[:4], 6, 6), tmp_path / "rml", class_names=NIH14[:4])
    ml["uncertain"] = "zeros"
    assert ml.get_parsed_content("mode") == "multilabel"  # CSV with one column per class name
    loss = ml.get_parsed_content("train#loss_function")
    assert isinstance(loss, ClassificationBCEWithLogitsLoss)
    train = ml.get_parsed_content("datalists")["train"]
    y = np.array([x["label"] for x in train])
    torch.testing.assert_close(loss.pos_weight, torch.as_tensor((len(y) - y.sum(0)) / y.sum(0), dtype=torch.float32))
    act = ml.get_parsed_content("validate#postprocessing").transforms[0]
    assert act.sigmoid == (True,) and act.softmax == (False,)
    from monai_transfer.engines.workflow import describe_datalists

    assert describe_datalists({"train": train})["train"] == {"n": 6, "positives_per_label": y.sum(0).tolist()}
    assert ml.get_parsed_content("validate#key_metric#val_auc").metric_fn.mode == "multilabel"
    assert ml.get_parsed_content("validate#report_writer").select_threshold_on == "youden"
    ml["uncertain"] = "ignore"  # U-Ignore: the uncertain training entry stays -1 and leaves pos_weight and the loss
    train = ml.get_parsed_content("datalists", lazy=False)["train"]
    y = np.array([x["label"] for x in train])
    assert (y == -1).sum() == 1
    pw = ml.get_parsed_content("train#loss_function", lazy=False).pos_weight
    torch.testing.assert_close(pw, torch.as_tensor((y == 0).sum(0) / (y == 1).sum(0), dtype=torch.float32))
    ml["uncertain"] = None
    with pytest.raises(RuntimeError) as e:  # the uncertain value needs a policy; the error names the row
        ml.get_parsed_content("datalists", lazy=False)
    assert "labels.csv' line 2: label 'Cardiomegaly' is uncertain" in str(e.value.__cause__)


def test_multilabel_mixup_run_mixes_multi_hot_rows_and_keeps_ignored_entries(tmp_path):
    """One tiny multi-label epoch with MixUp and U-Ignore: targets stay per-label rows, ``-1`` never mixes."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from monai_transfer.handlers.mixing import MixBatchHandler

    names = NIH14[:4]
    wf = ConfigWorkflow(
        config_file=str(REPO_ROOT / TRAIN), workflow_type="train", bundle_root=str(BUNDLE),
        dataset_dir=str(make_multilabel_csv(tmp_path / "dml", names, 8, 4)), output_dir=str(tmp_path / "run"),
        class_names=names, uncertain="ignore", mixup_alpha=0.4, epochs=1, batch_size=4, image_size=32,
        n_bootstrap=0, device="cpu",
    )  # fmt: skip
    wf.initialize()
    (mixer,) = [h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, MixBatchHandler)]
    assert mixer.mixer.one_hot is False and mixer.mixer.num_classes == 4
    seen, losses = [], []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.extend(d["label"] for d in e.state.batch))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"]))
    wf.run()
    targets = torch.stack(seen)
    assert targets.shape == (8, 4) and all(np.isfinite(float(v)) for v in losses)
    assert bool(((targets == -1) | ((targets >= 0) & (targets <= 1))).all())
    assert bool((targets == -1).any()) and bool(((targets > 0) & (targets < 1)).any())  # ignored kept, rest mixed
    wf.finalize()


# ---------------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_three_class_train_evaluate_infer_report_equals_sklearn(tmp_path):
    data, run = make_three_class(tmp_path / "data"), tmp_path / "run"
    names = "['a','b','c']"
    bundle_cli("run", "--config_file", str(TRAIN), *TINY, "--dataset_dir", str(data), "--class_names", names,
               "--output_dir", str(run))  # fmt: skip
    assert not (run / "models" / "threshold.json").exists()  # arg-max: no threshold is selected
    configs = f"['{TRAIN}','{EVALUATE}']"
    bundle_cli("run", "--config_file", configs, *TINY, "--dataset_dir", str(data), "--class_names", names,
               "--output_dir", str(run), "--gradcam_cases", "1")  # fmt: skip
    report = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert report["mode"] == "multiclass" and report["class_names"] == THREE and report["n_samples"] == 15
    assert report["threshold"]["value"] is None
    rows = read_csv(run / "eval" / "val" / "predictions.csv")
    ids = [r["image"] for r in rows]  # the full path (the id is the path relative to dataset_dir)
    assert [r["id"] for r in rows] == [Path(i).relative_to(data).as_posix() for i in ids]
    y = np.array([THREE.index(Path(i).parent.name) for i in ids])
    p = recompute_probs(run, ids, THREE, "multiclass")
    np.testing.assert_allclose(p, [[float(r[f"prob_{c}"]) for c in THREE] for r in rows], atol=2e-6)
    assert_table_matches_sklearn(report, y, p, "multiclass")
    from sklearn import metrics as skm

    assert report["metrics"]["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-9)
    assert report["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)), abs=1e-12)
    assert report["metrics"]["confusion_matrix"] == skm.confusion_matrix(y, p.argmax(1)).tolist()
    for f in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert_png(run / "eval" / "val" / f)
    md = (run / "eval" / "val" / "per_class.md").read_text()
    assert "| a |" in md and "| macro |" in md and "| micro |" in md
    # inference on the validation images of class c: arg-max over the 3 probabilities
    out = tmp_path / "infer"
    bundle_cli("run", "--config_file", str(INFERENCE), "--input_dir", str(data / "val" / "c"), "--class_names", names,
               "--ckpt_path", str(run / "models" / "model.pt"), "--output_dir", str(out), "--image_size", "32",
               "--device", "cpu")  # fmt: skip
    preds = read_csv(out / "predictions.csv")
    assert len(preds) == 5
    for r in preds:
        probs = np.array([float(r[f"prob_{c}"]) for c in THREE])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5) and r["prediction_name"] == THREE[int(probs.argmax())]
        assert r["threshold"] == ""


@pytest.mark.slow
def test_fourteen_label_train_infer_per_label_table_equals_sklearn(tmp_path):
    """The ChestMNIST path: a ChestMNIST-format npz (synthetic pixels) converted by
    ``scripts/data/prepare_chestmnist.py`` trains the 14-finding model (one training value set to ``-1`` for
    ``--uncertain zeros``). Training ends with the validation report at per-label thresholds chosen on it (the
    evaluate.json path with a stored threshold file is the 3-class test's); inference applies threshold.json label by
    label."""
    from tests.scripts.test_prepare_chestmnist import SCRIPT, make_chestmnist_npz

    prep, data, run = load_script(SCRIPT), tmp_path / "data", tmp_path / "run"
    npz = make_chestmnist_npz(tmp_path / "chestmnist.npz", 25, 12, 0)
    assert prep.main(["--npz", str(npz), "--out", str(data)]) == 0
    csv_path, findings = data / "labels.csv", list(prep.FINDINGS)
    lines = csv_path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3 + findings.index("cardiomegaly")] = "-1"  # an uncertain training value
    csv_path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    names = str(findings)
    bundle_cli("run", "--config_file", str(TRAIN), *TINY, "--dataset_dir", str(csv_path), "--class_names", names,
               "--uncertain", "zeros", "--output_dir", str(run))  # fmt: skip
    thr = json.loads((run / "models" / "threshold.json").read_text())
    assert thr["mode"] == "multilabel" and thr["class_names"] == findings and len(thr["threshold"]) == 14
    t = np.array(thr["threshold"])
    assert len(thr["sensitivity_per_label"]) == 14 and len(thr["specificity_per_label"]) == 14
    report = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert report["mode"] == "multilabel" and report["n_samples"] == 12
    assert report["threshold"]["value"] == pytest.approx(thr["threshold"])
    rows = read_csv(run / "eval" / "val" / "predictions.csv")
    ids = [r["image"] for r in rows]
    labels = {Path(r["image"]).name: [int(r[c]) for c in findings] for r in read_csv(csv_path)}
    y = np.array([labels[Path(i).name] for i in ids])
    np.testing.assert_array_equal(y, [[int(r[f"label_{c}"]) for c in findings] for r in rows])
    assert report["meta"]["data"]["val"]["positives_per_label"] == y.sum(0).tolist()
    p = recompute_probs(run, ids, findings, "multilabel")
    np.testing.assert_allclose(p, [[float(r[f"prob_{c}"]) for c in findings] for r in rows], atol=2e-6)
    # the report's decisions are p >= threshold per label (a probability on its own threshold may differ by float
    # rounding between processes, so those are read from the report rather than recomputed)
    pred = np.array([[int(r[f"pred_{c}"]) for c in findings] for r in rows])
    clear = np.abs(p - t[None, :]) > 1e-5
    np.testing.assert_array_equal(pred[clear], (p >= t[None, :])[clear].astype(int))
    assert_table_matches_sklearn(report, y, p, "multilabel", thr["threshold"], pred=pred)
    table = [line for line in (run / "eval" / "val" / "per_class.md").read_text().splitlines() if line[:2] == "| "]
    assert len(table) == 1 + 14 + 2 and table[1].startswith("| atelectasis |") and table[-1].startswith("| micro |")
    assert len(read_csv(run / "eval" / "val" / "per_class.csv")) == 16
    assert_png(run / "eval" / "val" / "roc.png")
    # inference: sigmoid probabilities, one decision per finding at its own threshold
    out = tmp_path / "infer"
    bundle_cli("run", "--config_file", str(INFERENCE), "--input_dir", str(data / "val"),
               "--class_names", names, "--mode", "multilabel", "--ckpt_path", str(run / "models" / "model.pt"),
               "--output_dir", str(out), "--image_size", "32", "--device", "cpu")  # fmt: skip
    preds = {Path(r["image"]).name: r for r in read_csv(out / "predictions.csv")}
    assert len(preds) == 12
    for i, case in enumerate(ids):
        r = preds[Path(case).name]
        probs = np.array([float(r[f"prob_{c}"]) for c in findings])
        np.testing.assert_allclose(probs, p[i], atol=2e-6)
        decisions = np.array([int(r[f"pred_{c}"]) for c in findings])
        np.testing.assert_array_equal(decisions[clear[i]], (probs >= t)[clear[i]].astype(int))
        assert r["prediction_names"] == ";".join(c for c, v in zip(findings, decisions) if v)
    # python -m monai_transfer.evaluate on the run folder (its inference.json carries mode "multilabel"): the
    # validation images with the training CSV (one 0/1 column per finding) give the training report's table
    from monai_transfer.evaluate import EXIT_OK, main

    assert json.loads((run / "configs" / "inference.json").read_text())["mode"] == "multilabel"
    val_csv = tmp_path / "val_labels.csv"  # the validation rows (a row for a file not evaluated is a failure)
    lines = csv_path.read_text().splitlines()
    val_csv.write_text("\n".join([lines[0]] + [line for line in lines[1:] if ",val," in line]) + "\n")
    cli = tmp_path / "cli"
    args = ["--bundle", str(run), "--images", str(data / "val"), "--labels", str(val_csv), "--output", str(cli)]
    assert main(args + ["--device", "cpu", "--n_bootstrap", "20", "--no_progress", "--image_size", "32"]) == EXIT_OK
    got = json.loads((cli / "metrics.json").read_text())
    assert got["mode"] == "multilabel" and got["threshold"]["value"] == pytest.approx(thr["threshold"])
    for a, b in zip(got["per_class"], report["per_class"]):
        assert a["class"] == b["class"] and a["auc"] == pytest.approx(b["auc"], abs=1e-6)
    # MONAI Label's train task on the run folder (its train.json fixes mode "multilabel", its metadata.json lists the
    # findings): datastore label files listing the findings become the 0/1 vectors its train.json takes (parsed here)
    from monai.bundle import ConfigParser

    from monai_transfer.label import read_class_names, write_image_label
    from tests.label.test_utils import _Datastore, _train_task

    task = _train_task(read_class_names(run), None)
    task.bundle_config, task.bundle_path = ConfigParser(), str(run)
    task.bundle_config.read_config(str(run / "configs" / "train.json"))
    assert task.class_names == findings and task.train_mode() == "multilabel"
    store = []
    for r in read_csv(csv_path):
        present = [c for c in findings if r[c] == "1"]
        label_file = write_image_label(tmp_path / "final", Path(r["image"]).stem, present, findings)
        store.append({"image": str(data / r["image"]), "label": str(label_file)})
    train, val = task._partition_datalist(task._fetch_datalist({}, _Datastore(store)), {"val_split": 0.2})
    truth = {Path(r["image"]).name: [max(int(r[c]), 0) for c in findings] for r in read_csv(csv_path)}
    assert all(x["label"] == truth[Path(x["image"]).name] for x in train + val) and (len(train), len(val)) == (29, 7)
    task.bundle_config["datalists"] = {"train": train, "val": val}  # the task's overrides
    task.bundle_config["train#dataset#data"] = train
    assert task.bundle_config.get_parsed_content("mode") == "multilabel"
    y = np.array([x["label"] for x in train])
    torch.testing.assert_close(
        task.bundle_config.get_parsed_content("train#loss_function").pos_weight,
        torch.as_tensor((y == 0).sum(0) / np.maximum((y == 1).sum(0), 1), dtype=torch.float32),
    )
