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
"""Reliability round 3 (issue 26): the bad inputs of the newer features, built here, through the CLIs and bundles.

Each test covers a class of bad input (several inputs of the class), fails on the code before round 3 and checks
that the error names the file, option or fold. See ``docs/reliability.md``, "Round 3".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_transfer.evaluate import EXIT_OK, EXIT_USAGE, main
from monai_transfer.metrics.calibration import load_calibration, save_calibration
from tests.evaluate.test_inference_paths import XRAY, _member, _parser
from tests.utils import REPO_ROOT

__all__: list[str] = []

FAST = ["--device", "cpu", "--no_progress", "--n_bootstrap", "0"]

#: calibration files that must be refused, and a word of the reason each message must give
BAD_CALIBRATIONS = {
    "nan": ('{"method": "temperature", "temperature": NaN}', "nan"),
    "zero": ('{"method": "temperature", "temperature": 0}', "temperature 0"),
    "negative": ('{"method": "temperature", "temperature": -1.5}', "-1.5"),
    "missing": ('{"method": "temperature", "fitted_on": "x"}', "no 'temperature'"),
    "text": ('{"temperature": "2.0"}', "'2.0'"),
    "method": ('{"method": "platt", "temperature": 1.5}', "unknown method 'platt'"),
    "list": ("[1.5]", "JSON object"),
    "bad_mode": ('{"method": "temperature", "temperature": 1.5, "mode": "multi-label"}', "'multi-label'"),
    "other_task": ('{"method": "temperature", "temperature": 1.5, "mode": "multilabel"}', "multilabel model"),
}


@pytest.fixture
def xray(tmp_path) -> tuple[Path, Path]:
    """A copy of the xray bundle's configs with random weights, and 3 PNGs made here."""
    from PIL import Image

    from monai_transfer.utils.io import atomic_torch_save

    bundle, images = tmp_path / "xray", tmp_path / "images"
    shutil.copytree(XRAY / "configs", bundle / "configs")
    atomic_torch_save(_member(bundle, 0).state_dict(), bundle / "models" / "model.pt")
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (50, 44), dtype=np.uint8)).save(images / f"img_{i}.png")
    return bundle, images


def _errors(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


# ------------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("case", sorted(BAD_CALIBRATIONS))
def test_load_calibration_refuses_bad_files_naming_file_and_problem(tmp_path, case):
    text, reason = BAD_CALIBRATIONS[case]
    f = tmp_path / f"{case}.json"
    f.write_text(text)
    with pytest.raises(ValueError) as e:  # the task is only needed to refuse another task's file
        load_calibration(f, mode="binary") if case == "other_task" else load_calibration(f)
    assert str(f) in str(e.value) and reason in str(e.value), str(e.value)
    ok = save_calibration(tmp_path / "ok.json", 1.7, mode="binary")
    assert load_calibration(ok, mode="binary") == 1.7 and load_calibration(ok) == 1.7


def test_bad_calibration_through_evaluate_and_inference_json(xray, tmp_path, caplog):
    """``python -m monai_transfer.evaluate`` exits 1 naming the file and the problem (before: MONAI's
    "Failed to instantiate" traceback, or, for a multi-label calibration on the binary model, exit 0); the bundle's
    ``inference.json`` (the path MONAI Label serves) refuses the same files through the same loader."""
    bundle, images = xray
    cal = bundle / "models" / "calibration.json"
    for case in ("nan", "zero", "missing", "method", "list", "other_task"):
        text, reason = BAD_CALIBRATIONS[case]
        cal.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            code = main(["--bundle", str(bundle), "--images", str(images), "--output", str(tmp_path / "o")] + FAST)
        assert code == EXIT_USAGE, case
        assert str(cal) in _errors(caplog) and reason in _errors(caplog), (case, _errors(caplog))
        with pytest.raises(Exception) as e:  # the bundle's own evaluator: MONAI wraps the error, which names the file
            _parser(bundle / "configs" / "inference.json", bundle).get_parsed_content("postprocessing")
        assert str(cal) in f"{e.value} {e.value.__cause__}", case


def test_threshold_is_bound_to_the_calibration_it_was_chosen_with(xray, tmp_path, caplog):
    """A threshold chosen after calibration A is refused with ``--calibration B`` naming both files; a copy of A at
    another path (a copied run folder) is the same calibration."""
    from monai_transfer.metrics.threshold import calibration_binding, check_threshold_calibration, save_threshold

    bundle, images = xray
    a = save_calibration(bundle / "models" / "calibration.json", 1.8, mode="binary")
    b = save_calibration(tmp_path / "other" / "calibration.json", 3.0, mode="binary")
    copy_of_a = tmp_path / "copied run" / "calibration.json"
    copy_of_a.parent.mkdir()
    shutil.copy(a, copy_of_a)
    thr = save_threshold(bundle / "models" / "threshold.json", 0.4, method="youden", **calibration_binding(a))
    base = ["--bundle", str(bundle), "--images", str(images)] + FAST
    with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
        assert main(base + ["--output", str(tmp_path / "o1"), "--calibration", str(b)]) == EXIT_USAGE
    assert str(thr) in _errors(caplog) and str(a) in _errors(caplog) and str(b) in _errors(caplog), _errors(caplog)
    assert main(base + ["--output", str(tmp_path / "o2"), "--calibration", str(copy_of_a)]) == EXIT_OK
    assert main(base + ["--output", str(tmp_path / "o3")]) == EXIT_OK
    with pytest.raises(ValueError, match="calibrated with"):
        check_threshold_calibration(thr, b)  # inference.json's initialize and MONAI Label call the same check
    # a threshold file written before the hash was recorded: compared with the file it names
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"threshold": 0.4, "applies_to": f"probabilities after temperature scaling with {a}"}))
    check_threshold_calibration(legacy, copy_of_a)
    with pytest.raises(ValueError, match=str(b)):
        check_threshold_calibration(legacy, b)


def test_numeric_options_of_the_three_clis_are_usage_errors(xray, tmp_path, caplog, capsys):
    """Out-of-range numbers are refused as usage errors naming the option (before: tracebacks or silent runs)."""
    from monai_transfer.audit import main as audit_main
    from monai_transfer.cv import main as cv_main

    bundle, images = xray
    base = ["--bundle", str(bundle), "--images", str(images), "--output", str(tmp_path / "o")]
    for bad, option in (
        (["--batch_size", "0"], "--batch_size"),
        (["--n_bootstrap", "-1"], "--n_bootstrap"),
        (["--batch_size", "x"], "--batch_size"),
    ):
        assert main(base + bad) == EXIT_USAGE
        assert f"argument {option}" in capsys.readouterr().err
    for bad, shown in (
        (["--num_members", "0"], "num_members must be at least 1, got 0"),
        (["--image_size", "0"], "--image_size 0"),
        (["--dropout", "2"], "dropout"),
        (["--calibration", str(tmp_path / "nope.json")], "--calibration"),
    ):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            assert main(base + bad + FAST) == EXIT_USAGE, bad
        assert shown in _errors(caplog), (bad, _errors(caplog))
    train = str(REPO_ROOT / "bundles" / "xray")
    for bad, option in (
        (["--folds", "1"], "--folds"),
        (["--folds", "two"], "--folds"),
        (["--target_sensitivity", "0"], "--target_sensitivity"),
        (["--target_sensitivity", "1.5"], "--target_sensitivity"),
    ):
        with pytest.raises(SystemExit) as e:
            cv_main(["--bundle", train, "--output_dir", str(tmp_path / "cv")] + bad)
        assert e.value.code == 2 and f"argument {option}" in capsys.readouterr().err, bad
    for bad, option in (
        (["--val_fraction", "1.5"], "--val_fraction"),
        (["--val_fraction", "nan"], "--val_fraction"),
        (["--seed", "-1"], "--seed"),
        (["--max_distance", "65"], "--max_distance"),
        (["--min_similarity", "2"], "--min_similarity"),
    ):
        with pytest.raises(SystemExit) as e:
            audit_main([str(images), "--output", str(tmp_path / "audit")] + bad)
        assert e.value.code == 2 and f"argument {option}" in capsys.readouterr().err, bad
    assert not (tmp_path / "cv").exists() and not (tmp_path / "audit").exists()


def test_audit_of_a_data_set_it_cannot_read_is_a_usage_error(tmp_path, capsys):
    """A missing path or a single class folder: exit 2 with the message naming it (before: a traceback)."""
    from PIL import Image

    from monai_transfer.audit import main as audit_main

    (tmp_path / "one" / "normal").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8) + 5).save(tmp_path / "one" / "normal" / "a.png")
    for dataset, words in ((tmp_path / "nope", "does not exist"), (tmp_path / "one", "at least two class folders")):
        with pytest.raises(SystemExit) as e:
            audit_main([str(dataset), "--output", str(tmp_path / "audit"), "--cache_dir", "none", "--no_progress"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and str(dataset) in err and words in err, err


# ------------------------------------------------------------------------------------------- cross-validation
def _class_folders(root: Path, counts: dict[str, int], size: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.mark.parametrize(
    "counts, folds, words",
    [
        ({"normal": 12, "pneumonia": 4}, 4, ["--folds 4", "'pneumonia'", "held-out part", "use --folds 3"]),
        ({"normal": 12, "pneumonia": 2}, 2, ["--folds 2", "'pneumonia'", "no number of folds works"]),
    ],
)
def test_cross_validation_refuses_infeasible_folds_before_the_first_fold(tmp_path, counts, folds, words):
    """More folds than images of a class: refused before any fold trains, naming --folds, the fold and the class
    (before: each fold trained, then 'cannot select a threshold: the data have 0 positive ...' naming nothing)."""
    from monai_transfer.cv.run import CrossValidationError, run_cross_validation

    data = _class_folders(tmp_path / "data", counts)
    out = tmp_path / "run"
    with pytest.raises(CrossValidationError) as e:
        run_cross_validation(
            REPO_ROOT / "bundles" / "xray" / "configs" / "train.json", folds=folds, output_dir=out,
            dataset_dir=str(data), val_fraction=0.25, duplicates="off", epochs=1, image_size=16, weights="none",
            device="cpu",
        )  # fmt: skip
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "fold " in str(e.value)
    assert not (out / "cv").exists()  # no fold was started


def test_cross_validation_cli_names_bad_overrides_before_training(tmp_path, capsys):
    """``--epochs 0`` and an override that cannot be built are usage errors of the CLI (exit 2), not tracebacks."""
    from monai_transfer.cv import main as cv_main

    data = _class_folders(tmp_path / "data", {"normal": 6, "pneumonia": 6})
    base = ["--bundle", str(REPO_ROOT / "bundles" / "xray"), "--output_dir", str(tmp_path / "run")]
    base += ["--dataset_dir", str(data), "--duplicates", "off", "--folds", "2"]
    for bad, words in (
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--batch_size", "0"], "--batch_size must be an integer >= 1"),
        (["--val_fraction", "2"], "val_fraction"),
    ):
        with pytest.raises(SystemExit) as e:
            cv_main(base + bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err, err
    assert not (tmp_path / "run" / "cv").exists()


# ------------------------------------------------------------------------------------------------ run folders
def _export_run(tmp_path: Path, name: str = "run") -> Path:
    """A run folder exported from the xray template inside a ConfigParser (as train.json's last ``run`` step does,
    so the weights record holds the training preprocessing's probe), with random weights at 32 px and 2 samples."""
    from PIL import Image

    from monai_transfer.utils.io import atomic_torch_save

    xray_dir = REPO_ROOT / "bundles" / "xray"
    run = tmp_path / name
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    val = []
    for i in range(2):
        data.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(data / f"v{i}.png")
        val.append({"image": str(data / f"v{i}.png"), "label": i})
    p = _parser(xray_dir / "configs" / "train.json", xray_dir, image_size=32, weights="none", output_dir=str(run))
    atomic_torch_save(p.get_parsed_content("network_def").state_dict(), run / "models" / "model.pt")
    p["export"] = {
        "_target_": "monai_transfer.run_bundle.export_run_bundle", "output_dir": str(run),
        "template_dir": str(xray_dir),
        "values": {"image_size": 32, "class_names": ["normal", "pneumonia"], "weights": "none"},
        "spec": "@model_spec", "datalists": {"train": [], "val": val}, "n_samples": 2,
    }  # fmt: skip
    p.get_parsed_content("export")
    return run


def test_a_copied_run_folder_always_resolves_to_itself(tmp_path, monkeypatch):
    """A run folder copied to a path with spaces and other characters reads its own weights and writes its own
    predictions, through the workflow API and the ``--config_file`` of the command line (before: the original
    folder's, exit 0)."""
    from monai_transfer.run_bundle import resolve_run_root
    from tests.utils import bundle_workflow

    run = _export_run(tmp_path)
    copy = tmp_path / "copied run #2, (ü) [x]"
    shutil.copytree(run, copy)
    monkeypatch.delenv("MONAI_TRANSFER_BUNDLE_ROOT", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for argv in (
        ["python -m monai.bundle", "run", "--config_file", str(copy / "configs" / "inference.json")],
        ["python -m monai.bundle", "run", f"--config_file={copy / 'configs' / 'inference.json'}"],
        [
            "x",
            "run",
            "--config_file",
            repr([str(copy / "configs" / "inference.json"), str(copy / "configs" / "b.json")]),
        ],
    ):
        monkeypatch.setattr("sys.argv", argv)
        assert resolve_run_root(run) == str(copy.resolve()), argv
    monkeypatch.setattr("sys.argv", ["pytest"])
    configs = copy / "configs"
    wf = bundle_workflow(configs, configs / "inference.json", "infer", device="$torch.device('cpu')")
    wf.initialize()
    wf.run()
    wf.finalize()
    assert wf.parser.get_parsed_content("bundle_root") == str(copy.resolve())
    assert len(list((copy / "eval" / "inference").glob("*.csv"))) >= 1
    assert not (run / "eval").exists()  # nothing written into the original folder


def test_hand_edited_preprocessing_is_refused_by_every_loader(tmp_path, caplog):
    """The weights record holds what the training's preprocessing DOES (a probe image): a run whose configs were
    hand-edited to resize or normalise differently, with every id unchanged, is refused by ``inference.json``'s
    loader and ``python -m monai_transfer.evaluate`` (before: both loaded, predictions moved silently)."""
    from monai_transfer.networks.checkpoint_record import CheckpointConfigMismatchError, read_checkpoint_record

    run = _export_run(tmp_path)
    record = read_checkpoint_record(run / "models" / "model.pt")
    assert record["preprocessing_probe"]["shape"] == [3, 32, 32]
    images = run / "data" / "samples"
    assert main(["--bundle", str(run), "--images", str(images), "--output", str(tmp_path / "ok")] + FAST) == EXIT_OK
    config = run / "configs" / "inference.json"
    original = json.loads(config.read_text())
    for edit, words in (
        (lambda c: c["load_transforms"].update(image_size=40), "shape [3, 32, 32]"),  # resize
        (lambda c: c["final_transforms"].update(backbone="resnet18"), "output mean"),  # normalisation
    ):
        cfg = json.loads(json.dumps(original))
        edit(cfg)
        config.write_text(json.dumps(cfg))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            code = main(["--bundle", str(run), "--images", str(images), "--output", str(tmp_path / "o")] + FAST)
        assert code == EXIT_USAGE and words in _errors(caplog) and "preprocessing" in _errors(caplog), _errors(caplog)
        p = _parser(config, run, input_dir=str(images), output_dir=str(tmp_path / "inf"))
        p["device"] = "$torch.device('cpu')"
        with pytest.raises(Exception) as e:  # MONAI wraps the handler's error
            p.get_parsed_content("run")
        from monai_transfer.utils.bundle import root_cause

        cause = root_cause(e.value)
        assert isinstance(cause, CheckpointConfigMismatchError) and "preprocessing" in str(cause), str(cause)
    config.write_text(json.dumps(original))


@pytest.mark.slow
def test_copied_run_folder_with_a_space_through_monai_bundle_run(tmp_path):
    """The reported case: ``python -m monai.bundle run --config_file "<copy with spaces>/configs/inference.json"``
    from another folder writes the copy's predictions (before: the original folder's, exit 0)."""
    from tests.utils import bundle_cli

    run = _export_run(tmp_path)
    copy = tmp_path / "my runs" / "copy of run"
    shutil.copytree(run, copy)
    bundle_cli("run", "--config_file", str(copy / "configs" / "inference.json"), "--device", "cpu", cwd=tmp_path)
    assert len(list((copy / "eval" / "inference").glob("*.csv"))) >= 1
    assert not (run / "eval").exists()


# ---------------------------------------------------------------------------------------------------- inputs
def test_symlinked_sub_folders_are_followed_once_with_loop_protection(xray, tmp_path, caplog):
    """``--images`` of the evaluation and ``--input_dir`` of ``inference.json`` list the images of a symbolically
    linked sub-folder (before: skipped silently); a link back to a listed folder is named, not followed forever."""
    from monai_transfer.data.datalist import inference_datalist

    bundle, images = xray
    outside = tmp_path / "outside"
    outside.mkdir()
    for f in sorted(images.glob("*.png"))[:2]:
        shutil.copy(f, outside / f"linked_{f.name}")
    (images / "more").symlink_to(outside, target_is_directory=True)
    (images / "more" / "back").symlink_to(images, target_is_directory=True)  # a loop through the link
    (images / "self_loop").symlink_to(images / "self_loop")  # a broken link without an image name
    with caplog.at_level(logging.WARNING):
        listed = [Path(x["image"]).relative_to(images).as_posix() for x in inference_datalist(images, [".png"])]
    assert listed == ["img_0.png", "img_1.png", "img_2.png", "more/linked_img_0.png", "more/linked_img_1.png"]
    assert "more/back" in caplog.text and "already listed" in caplog.text and "self_loop" in caplog.text
    out = tmp_path / "out"
    assert main(["--bundle", str(bundle), "--images", str(images), "--output", str(out)] + FAST) == EXIT_OK
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and any("more/linked_img_1.png" in r for r in rows)


def _png(path: Path, width: int, height: int, rows: int, colour: int = 0, interlace: int = 0) -> Path:
    """A PNG whose compressed stream is complete but holds ``rows`` rows (all of them when ``rows == height``) of a
    ``width x height`` 8-bit image of colour type ``colour`` (0 grey, 2 RGB); ``interlace=1``: Adam7."""
    import struct
    import zlib

    channels = {0: 1, 2: 3}[colour]
    rng = np.random.default_rng(height)
    if interlace:
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        sub = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in passes]
        lines = [w for w, h in sub if w > 0 and h > 0 for _ in range(h)]
    else:
        lines = [width] * height
    lines = lines[: len(lines) - (height - rows)]
    raw = b"".join(b"\x00" + rng.integers(1, 255, w * channels, dtype=np.uint8).tobytes() for w in lines)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("colour, interlace", [(0, 0), (2, 0), (0, 1), (2, 1)])
def test_png_with_fewer_rows_than_its_header_is_refused(tmp_path, colour, interlace):
    """Complete compressed data holding fewer rows than ``IHDR`` declares: Pillow fills zeros without an error;
    ``LoadMedicalImage`` refuses it naming the file (before: loaded with the missing rows as zeros)."""
    from PIL import Image

    from monai_transfer.transforms import LoadMedicalImage
    from monai_transfer.transforms.io.array import MedicalImageLoadError

    full = _png(tmp_path / "full.png", 21, 30, 30, colour, interlace)
    with Image.open(full) as im:
        assert np.asarray(im).min() > 0  # the writer above is a valid PNG: every pixel 1..254
    assert LoadMedicalImage()(str(full)).shape[-2:] == (30, 21)
    short = _png(tmp_path / "short.png", 21, 30, 22, colour, interlace)
    with Image.open(short) as im:
        im.load()  # Pillow alone: no error
    with pytest.raises(MedicalImageLoadError) as e:
        LoadMedicalImage()(str(short))
    assert str(short) in str(e.value) and "header declares" in str(e.value)


def test_truncated_or_corrupt_npz_named_by_prepare_chestmnist(tmp_path, capsys):
    """A truncated download, a flipped byte inside a compressed array and a file that is no zip: every error names
    the file (before: ``BadZipFile: File is not a zip file``, ``zlib.error`` or ``EOFError`` naming nothing)."""
    from tests.scripts.test_prepare_chestmnist import SCRIPT, make_chestmnist_npz
    from tests.utils import load_script

    prep = load_script(SCRIPT)
    good = make_chestmnist_npz(tmp_path / "chestmnist.npz", 8, 4, 0, size=16)
    data = good.read_bytes()
    bad = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "not_a_zip": b"<html>404 Not Found</html>",
    }
    for name, content in bad.items():
        f = tmp_path / f"{name}.npz"
        f.write_bytes(content)
        with pytest.raises(ValueError) as e:
            prep.load_chestmnist(f)
        assert str(f) in str(e.value), (name, str(e.value))
        assert prep.main(["--npz", str(f), "--out", str(tmp_path / f"out_{name}")]) == 1
        assert str(f) in capsys.readouterr().err
    assert set(prep.load_chestmnist(good)) == {"train", "val"}


def test_full_disk_under_the_tensorboard_folder_names_it(tmp_path, monkeypatch):
    """ENOSPC in TensorBoard's background writer surfaces as ``DiskFullError`` naming the log folder, from the
    training's logging handlers (before: ``OSError: [Errno 28] No space left on device``, no folder)."""
    import errno
    import threading

    import torch
    from ignite.engine import Engine
    from tensorboard.summary.writer import record_writer

    from monai_transfer.handlers.loggers import TrainingLoggers, ValidationLoggers
    from monai_transfer.utils.io import DiskFullError

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the writer thread's own report
    for group, log_dir in ((TrainingLoggers, tmp_path / "logs" / "train"), (ValidationLoggers, tmp_path / "val")):
        kw = {"progress": False} if group is TrainingLoggers else {}
        handlers = group(log_dir, **kw)
        engine = Engine(lambda e, b: {"loss": torch.tensor(0.5)})
        engine.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        handlers.attach(engine)
        engine.state.metrics = {"val_auc": 0.5}
        with monkeypatch.context() as m:
            m.setattr(record_writer.RecordWriter, "write", full_disk)
            with pytest.raises(DiskFullError) as e:
                engine.run([{"image": torch.zeros(2, 1, 8, 8)}] * 3, max_epochs=3)
        assert str(log_dir) in str(e.value) and "TensorBoard" in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------------------ docs
def test_documented_options_of_the_applications_exist():
    """Every ``--option`` that the docs, READMEs and the applications' docstrings give ``python -m
    monai_transfer.evaluate|cv|audit`` is an option of that command (or, for evaluate and cv, a bundle id their
    ``--<id> VALUE`` overrides set), in its current spelling; the docstrings of each application name only its own
    options. (Issue 26 found ``--fail-on-leak`` in the audit's docstring; fixed on main before this round.)"""
    import ast
    import re

    from monai_transfer.audit.cli import build_arg_parser as audit_parser
    from monai_transfer.cv.cli import build_arg_parser as cv_parser
    from monai_transfer.evaluate.cli import build_arg_parser as evaluate_parser

    options = {n: set(p()._option_string_actions) for n, p in (("evaluate", evaluate_parser), ("cv", cv_parser))}
    options["audit"] = set(audit_parser()._option_string_actions)
    ids: dict[str, set[str]] = {"evaluate": set(), "cv": set(), "audit": set()}
    for b in ("xray", "ct_slices"):
        ids["evaluate"] |= set(json.loads((REPO_ROOT / "bundles" / b / "configs" / "inference.json").read_text()))
        ids["cv"] |= set(json.loads((REPO_ROOT / "bundles" / b / "configs" / "train.json").read_text()))
    flag = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
    command = re.compile(r"python -m monai_transfer\.(evaluate|cv|audit)\b")
    bad = []
    docs = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), *(REPO_ROOT / "bundles").glob("*/docs/*.md")]
    for f in docs + sorted((REPO_ROOT / "monai_transfer").rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = command.search(line)
            if not m:
                continue
            app, text, j = m.group(1), line[m.end() :], i
            while text.rstrip().endswith("\\") and j + 1 < len(lines):  # a shell command continued
                j += 1
                text += " " + lines[j]
            bad += [(f.name, app, o) for o in flag.findall(text) if o not in options[app] and o[2:] not in ids[app]]
    for app in options:  # the docstrings of each application's modules
        for f in sorted((REPO_ROOT / "monai_transfer" / app).glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                    text = [ln for ln in ast.get_docstring(node).splitlines() if "monai.bundle" not in ln]
                    found = flag.findall("\n".join(text))  # (lines about `python -m monai.bundle` name its options)
                    bad += [(f.name, app, o) for o in found if o not in options[app] and o[2:] not in ids[app]]
    assert not bad, bad


def test_bundle_readmes_say_input_dir_is_searched_recursively_with_links():
    """The bundles' README describe ``--input_dir`` as the code lists it (sub-folders included, linked ones too)."""
    for b in ("xray", "ct_slices"):
        text = " ".join((REPO_ROOT / "bundles" / b / "docs" / "README.md").read_text(encoding="utf-8").split())
        assert "not recursive" not in text and "sub-folders included" in text, b
        assert "symbolic links to folders are followed" in text, b


# ------------------------------------------------------------------------------------------------- warnings
def test_hashing_threads_leave_the_warning_filters_as_they_were(tmp_path):
    """Two hashing threads inside the loader at once, the first one leaving first: ``catch_warnings`` in the worker
    threads (before) left its "ignore" filter behind, hiding every later warning of the process."""
    import threading
    import time
    import warnings

    from monai_transfer.data.duplicates import hash_files

    order, lock, both_inside = [], threading.Lock(), threading.Barrier(2, timeout=10)

    def loader(path):
        with lock:
            order.append(path)
            first = len(order) == 1
        if len(order) <= 2:
            both_inside.wait()
            if not first:
                time.sleep(0.3)  # the second thread to enter leaves last
        warnings.warn(f"'{path}': image is constant (every value is 7, zero variance)", UserWarning, stacklevel=2)
        return np.full((1, 16, 16), 7.0, np.float32)

    files = []
    for i in range(4):
        files.append(tmp_path / f"f{i}.png")
        files[-1].write_bytes(bytes([i]))
    before = list(warnings.filters)
    res = hash_files(files, cache_dir=None, loader=loader, num_workers=2)
    assert res.ok.all()
    assert warnings.filters == before, [f for f in warnings.filters if f not in before]


def test_a_finding_that_never_occurs_is_reported_every_time(tmp_path, caplog):
    """A multi-label list where a finding has no positive: every training data setup says so (a log record), also
    after a near-duplicate pass over constant images in worker threads; later Python warnings still reach the user."""
    import warnings

    from PIL import Image

    from monai_transfer.data.bundle_data import bundle_datalists
    from monai_transfer.metrics.functional import UndefinedMetricWarning
    from monai_transfer.metrics.threshold import select_threshold

    rng = np.random.default_rng(0)
    rows = ["image,patient_id,edema,mass,nodule"]
    for i in range(16):
        img = np.full((20, 20), 9, np.uint8) if i % 4 == 0 else rng.integers(0, 255, (20, 20), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"img_{i}.png")
        rows.append(f"img_{i}.png,p{i},{i % 2},{int(i % 3 == 0)},0")  # nodule: never positive
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for run in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monai_transfer.data"):
            bundle_datalists(
                tmp_path / "labels.csv", label_cols=["edema", "mass", "nodule"], duplicates="group",
                hash_cache_dir=None, seed=run,
            )  # fmt: skip
        said = [r.getMessage() for r in caplog.records if "'nodule' has no positive item" in r.getMessage()]
        assert any("'train' split" in m for m in said), (run, caplog.text)
        with warnings.catch_warnings(record=True) as seen:  # the process's filters, as a user's run has them
            select_threshold(rng.random((6, 3)), np.array([[1, 0, 0], [0, 1, 0]] * 3), mode="multilabel")
        assert any(issubclass(w.category, UndefinedMetricWarning) and "label 2" in str(w.message) for w in seen), run


# ----------------------------------------------------------------------------------------------- hash cache
def test_hash_cache_of_another_shape_or_version_is_rebuilt(tmp_path, caplog):
    """Valid JSON of the wrong shape or from another version is ignored with a warning naming the file and rewritten
    (before: ``AttributeError: 'list' object has no attribute 'get'`` in the audit and every training run)."""
    from PIL import Image

    from monai_transfer.data.duplicates import HASH_METHOD, hash_files

    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(tmp_path / f"img_{i}.png")
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(files[-1])
    cache_dir = tmp_path / "cache"
    reference = hash_files(files, cache_dir=None, num_workers=0)
    cache = cache_dir / f"image_hashes_{HASH_METHOD}.json"
    for content in (
        "[]",
        '"text"',
        json.dumps({"method": HASH_METHOD, "stat": {}, "hashes": {}}),  # the layout before the format field
        json.dumps({"format": 99, "method": HASH_METHOD, "stat": {}, "hashes": {}}),
        json.dumps({"format": 2, "method": HASH_METHOD, "stat": [], "hashes": {}}),
    ):
        cache_dir.mkdir(exist_ok=True)
        cache.write_text(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monai_transfer.data.duplicates"):
            res = hash_files(files, cache_dir=cache_dir, num_workers=0)
        assert res.ok.all() and np.array_equal(res.hashes, reference.hashes), content
        assert str(cache) in caplog.text and "rewritten" in caplog.text, content
        assert json.loads(cache.read_text())["method"] == HASH_METHOD
    # entries of the wrong shape inside a valid file are skipped, not trusted
    data = json.loads(cache.read_text())
    data["stat"] = {k: ["x"] for k in data["stat"]}
    data["hashes"] = {k: 5 for k in data["hashes"]}
    cache.write_text(json.dumps(data))
    assert np.array_equal(hash_files(files, cache_dir=cache_dir, num_workers=0).hashes, reference.hashes)


def test_hash_cache_follows_content_replaced_with_same_size_and_mtime(tmp_path):
    """``cp -p`` / ``rsync -t``: other bytes, same size, same mtime; the cache gives the new content's hash (before:
    the old one, although the README says hashes are cached by content)."""
    import os

    from PIL import Image

    from monai_transfer.data.duplicates import hash_files

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    yy, xx = np.mgrid[0:32, 0:32]
    Image.fromarray(((xx * 8) % 256).astype(np.uint8)).save(a, compress_level=0)  # stored: equal sizes
    Image.fromarray(((yy * 8) % 256).astype(np.uint8)).save(b, compress_level=0)
    assert a.stat().st_size == b.stat().st_size
    cache = tmp_path / "cache"
    first = hash_files([a], cache_dir=cache, num_workers=0)
    st = a.stat()
    a.write_bytes(b.read_bytes())  # as `cp -p b a`: new bytes, then the old times set back
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = hash_files([a], cache_dir=cache, num_workers=0)
    truth = hash_files([b], cache_dir=None, num_workers=0)
    assert again.hashes[0] == truth.hashes[0] != first.hashes[0]
    assert again.sha256[0] == truth.sha256[0]
