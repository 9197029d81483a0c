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
"""ClassificationPredictionWriter in a MONAI evaluator: 2-class threshold, arg-max, multi-label per-label thresholds;
two gloo ranks over a sharded inference evaluator write every case once, from rank 0."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, DistributedSampler, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from monai_transfer.handlers.prediction_writer import ClassificationPredictionWriter
from monai_transfer.handlers.report_writer import data_sharded_across_ranks, ids_from_output
from monai_transfer.handlers.volume_aggregation import VolumePredictionWriter
from monai_transfer.metrics import save_threshold
from tests.utils import read_csv


def _run(tmp_path, mode, threshold, k=3, n=10):
    rng = np.random.default_rng(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, k))
    torch.manual_seed(0)
    x = torch.as_tensor(rng.random((n, 1, 4, 4)), dtype=torch.float32)
    items = [{"image": MetaTensor(x[i], meta={"filename_or_obj": f"/d/img_{i}.png"})} for i in range(n)]
    writer = ClassificationPredictionWriter(tmp_path, class_names=["Edema", "Mass", "Nodule"][:k], threshold=threshold,
                                            mode=mode)  # fmt: skip
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=4, num_workers=0),
        network=net,
        postprocessing=Activationsd(keys="pred", sigmoid=mode == "multilabel", softmax=mode != "multilabel"),
    )
    writer.attach(evaluator)
    evaluator.run()
    with torch.no_grad():
        logits = net(x)
    probs = torch.sigmoid(logits) if mode == "multilabel" else torch.softmax(logits, 1)
    return writer, read_csv(tmp_path / "predictions.csv"), probs.numpy()


def test_multilabel_per_label_thresholds_from_file(tmp_path):
    thr = save_threshold(tmp_path / "models" / "threshold.json", [0.3, 0.5, 0.7], method="youden", mode="multilabel")
    writer, rows, probs = _run(tmp_path / "out", "multilabel", thr)
    assert writer.threshold_used == [0.3, 0.5, 0.7] and len(rows) == 10
    names = ["Edema", "Mass", "Nodule"]
    for i, r in enumerate(rows):
        assert r["file_name"] == f"img_{i}.png"
        np.testing.assert_allclose([float(r[f"prob_{c}"]) for c in names], probs[i], atol=1e-6)
        expected = (probs[i] >= [0.3, 0.5, 0.7]).astype(int)
        assert [int(r[f"pred_{c}"]) for c in names] == expected.tolist()
        assert r["prediction_names"] == ";".join(c for c, v in zip(names, expected) if v)
        assert r["threshold"] == "0.300000;0.500000;0.700000"
    # a missing file falls back to 0.5 for every label; a wrong count is an error
    writer, rows, probs = _run(tmp_path / "out2", "multilabel", tmp_path / "nowhere.json")
    assert writer.threshold_used == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="one per label"):
        _run(tmp_path / "out3", "multilabel", [0.2, 0.4])
    # the same resolver as evaluation and MONAI Label: a file chosen for other labels is refused, naming it
    other = save_threshold(tmp_path / "other.json", [0.3, 0.5, 0.7], method="youden", mode="multilabel",
                           class_names=["Edema", "Mass", "Effusion"])  # fmt: skip
    with pytest.raises(ValueError, match=r"other\.json is for the labels .*Effusion"):
        _run(tmp_path / "out4", "multilabel", other)


def test_multiclass_arg_max_and_mode_check(tmp_path):
    writer, rows, probs = _run(tmp_path, "multiclass", None)
    assert writer.threshold_used is None
    assert [int(r["prediction"]) for r in rows] == probs.argmax(1).tolist()
    with pytest.raises(ValueError, match="mode must be"):
        ClassificationPredictionWriter(tmp_path, mode="multi")
    empty = ClassificationPredictionWriter(tmp_path / "empty")  # an epoch without a batch: an error, no file
    with pytest.raises(RuntimeError, match="no predictions were collected"):
        empty(SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=torch.nn.Identity()))
    assert not (tmp_path / "empty").exists()


def _items(n):
    """``n`` 1x4x4 images of 4 volumes (``/d/vol_<v>/img_<i>.png``, 3 slices each, the last one shorter)."""
    x = torch.as_tensor(np.random.default_rng(3).random((n, 1, 4, 4)), dtype=torch.float32)
    return [{"image": MetaTensor(x[i], meta={"filename_or_obj": f"/d/vol_{i // 3}/img_{i}.png"})} for i in range(n)], x


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))


def _volume_ids(output, batch):
    return [str(Path(p).parent) for p in ids_from_output(output, batch)]


def _evaluator(items, handlers, sampler=None):
    return SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(items, batch_size=2, sampler=sampler, num_workers=0),
        network=_net(), postprocessing=Activationsd(keys="pred", softmax=True), val_handlers=handlers,
    )  # fmt: skip


def _writer_rank(rank, world_size, n, out_dir):
    """One gloo rank of :func:`test_two_ranks_sharded_inference_writes_every_case_once_from_rank0`."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    init = f"file://{Path(out_dir) / 'pg'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        items, _ = _items(n)
        writer = ClassificationPredictionWriter(Path(out_dir) / f"sharded{rank}", class_names=["neg", "pos"])
        volumes = VolumePredictionWriter(
            Path(out_dir) / f"volumes{rank}", class_names=["neg", "pos"], id_transform=_volume_ids
        )
        ev = _evaluator(items, [writer, volumes], DistributedSampler(items, even_divisible=False, shuffle=False))
        ev.run()
        res = {"sharded": data_sharded_across_ranks(ev), "n_local": len(ev.data_loader.sampler)}
        res["written"] = None if writer.last_path is None else str(writer.last_path)
        dist.barrier()
        if rank == 0:  # an evaluator over the whole split on rank 0 only must not gather (it would wait for rank 1)
            whole = ClassificationPredictionWriter(Path(out_dir) / "rank0_only", class_names=["neg", "pos"])
            ev0 = _evaluator(items, [whole])
            ev0.run()
            res["rank0_only_sharded"] = data_sharded_across_ranks(ev0)
        dist.barrier()
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_sharded_inference_writes_every_case_once_from_rank0(tmp_path):
    """2 gloo ranks, an inference evaluator over a ``DistributedSampler`` (11 images, 6 + 5): rank 0 writes ALL the
    cases once (in rank order), rank 1 writes nothing; the per-volume writer pools slices of both ranks."""
    n = 11
    torch.multiprocessing.spawn(_writer_rank, args=(2, n, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sharded"] for r in res] == [True, True]
    assert [r["n_local"] for r in res] == [6, 5]
    assert res[0]["written"] == str(tmp_path / "sharded0" / "predictions.csv") and res[1]["written"] is None
    assert not (tmp_path / "sharded1").exists() and not (tmp_path / "volumes1").exists()
    items, x = _items(n)
    with torch.no_grad():
        probs = torch.softmax(_net()(x), 1).numpy()
    rows = read_csv(tmp_path / "sharded0" / "predictions.csv")
    order = list(range(0, n, 2)) + list(range(1, n, 2))  # rank order of DistributedSampler(shuffle=False)
    assert [r["image"] for r in rows] == [f"/d/vol_{i // 3}/img_{i}.png" for i in order]
    np.testing.assert_allclose([float(r["prob_pos"]) for r in rows], probs[order, 1], atol=1e-6)
    assert [int(r["prediction"]) for r in rows] == (probs[order, 1] >= 0.5).astype(int).tolist()
    vol = {r["image"]: float(r["prob_pos"]) for r in read_csv(tmp_path / "volumes0" / "predictions.csv")}
    assert vol.keys() == {f"/d/vol_{v}" for v in range(4)}
    for v in range(4):
        np.testing.assert_allclose(vol[f"/d/vol_{v}"], probs[3 * v : 3 * v + 3, 1].mean(), atol=1e-6)
    whole = read_csv(tmp_path / "rank0_only" / "predictions.csv")
    assert res[0]["rank0_only_sharded"] is False
    assert [r["image"] for r in whole] == [f"/d/vol_{i // 3}/img_{i}.png" for i in range(n)]


def test_monai_classification_saver_falls_short_of_a_predictions_table(tmp_path):
    """Why :class:`ClassificationPredictionWriter` is kept (issue #27 reuse): MONAI's ``ClassificationSaver`` writes
    raw values without a header (no class names, no thresholded prediction, no threshold) and keys its rows by file
    name, so two cases of one path collapse into the last one; ours writes one named row per case."""
    import csv

    from ignite.engine import Engine
    from monai.handlers import ClassificationSaver

    batch = {"pred": torch.tensor([[0.3, 0.7], [0.9, 0.1]]), "meta": {"filename_or_obj": ["a/x.png", "a/x.png"]}}
    engine = Engine(lambda e, b: b["pred"])
    theirs = ClassificationSaver(str(tmp_path / "monai"), batch_transform=lambda b: b["meta"])
    theirs.attach(engine)
    engine.run([batch])
    rows = list(csv.reader((tmp_path / "monai" / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0][0] == "a/x.png"  # two cases, one row, no header
    assert [float(v) for v in rows[0][1:]] == pytest.approx([0.9, 0.1])

    engine = Engine(lambda e, b: b["pred"])
    ours = ClassificationPredictionWriter(
        tmp_path / "ours", class_names=["normal", "pneumonia"], threshold=0.5,
        pred_transform=lambda o: list(o), id_transform=lambda o, b: b["meta"]["filename_or_obj"],
    )  # fmt: skip
    ours.attach(engine)
    engine.run([batch])
    table = list(csv.DictReader(ours.last_path.open()))
    assert [r["prediction_name"] for r in table] == ["pneumonia", "normal"]
    assert {"prob_normal", "prob_pneumonia", "threshold"} <= set(table[0])
