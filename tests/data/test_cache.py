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
"""``monai_transfer.data.cache``: cache modes, keys that follow the preprocessing, ``auto``'s choice, exact uint8
storage, named errors, automatic ``num_workers``. Tiny 16-24 px PNGs."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, RandFlipd
from PIL import Image

from monai_transfer.data import cache as C
from monai_transfer.transforms.pipelines import backbone_input_transforms, image_loading_transforms


@pytest.fixture()
def datalist(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        arr = rng.integers(0, 256, size=(20 + i % 2 * 4, 24), dtype=np.uint8)
        path = tmp_path / "img" / f"case{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path)
        items.append({"image": str(path), "label": i % 2})
    return items


def _pipeline(size=16, backbone="resnet18", random=True):
    aug = [RandFlipd(keys="image", prob=0.5, spatial_axis=1)] if random else []
    return Compose(image_loading_transforms(size, expected_ndim=2) + aug + backbone_input_transforms(backbone))


def _items(ds, seed=0):
    ds_rand = getattr(ds, "transform", None)
    if ds_rand is not None:
        ds_rand.set_random_state(seed)
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cached_items_equal_uncached(datalist, tmp_path, mode):
    """A cached dataset gives the same tensors, metadata and labels as MONAI's plain ``Dataset``."""
    plain = _items(Dataset(datalist, _pipeline()))
    ds = C.build_dataset(datalist, _pipeline(), cache=mode, cache_dir=tmp_path / "c", num_workers=0, progress=False)
    assert isinstance(ds, C.RAMCachedDataset if mode == "ram" else C.DiskCachedDataset)
    for a, b in zip(plain, _items(ds)):
        assert torch.equal(a["image"].as_tensor(), b["image"].as_tensor())
        assert a["label"] == b["label"]
        assert isinstance(b["image"], MetaTensor)
        assert b["image"].meta["filename_or_obj"] == a["image"].meta["filename_or_obj"]
    assert isinstance(C.build_dataset(datalist, _pipeline(), cache="none"), Dataset)


def test_disk_cache_is_reused_and_keyed_by_preprocessing(datalist, tmp_path):
    root = tmp_path / "c"
    a = C.build_dataset(datalist, _pipeline(16), cache="disk", cache_dir=root, num_workers=0, progress=False)
    assert all(p.is_file() for p in a.paths) and len(list(a.folder.glob("*.item"))) == len(datalist)
    assert (a.folder / "preprocessing.json").is_file()
    stamp = {p: p.stat().st_mtime_ns for p in a.paths}
    again = C.build_dataset(datalist, _pipeline(16), cache="disk", cache_dir=root, num_workers=0, progress=False)
    assert again.folder == a.folder and {p: p.stat().st_mtime_ns for p in again.paths} == stamp  # nothing rewritten
    # a change of image size or of the intensity step is another folder; the normalisation after the random
    # flip is not cached, so it does not change the key
    bigger = C.build_dataset(datalist, _pipeline(20), cache="disk", cache_dir=root, num_workers=0, progress=False)
    assert bigger.folder != a.folder and bigger[0]["image"].shape[-1] == 20
    head = image_loading_transforms(16, expected_ndim=2)
    head[1].scaler.maxv = 2.0  # ScaleIntensityd's range
    assert C.preprocessing_key(head) != C.preprocessing_key(image_loading_transforms(16, expected_ndim=2))
    assert C.preprocessing_key(image_loading_transforms(16, expected_ndim=2)) == a.key
    # an image rewritten in place is a new item key
    before = C.item_key(datalist[0])
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(datalist[0]["image"])
    os.utime(datalist[0]["image"], ns=(1, 1))
    assert C.item_key(datalist[0]) != before


def test_corrupt_disk_item_is_recomputed(datalist, tmp_path):
    ds = C.build_dataset(datalist, _pipeline(), cache="disk", cache_dir=tmp_path, num_workers=0, progress=False)
    good = ds[1]["image"].as_tensor().clone()
    ds.transform.set_random_state(0)
    ds.paths[1].write_bytes(b"truncated")
    ds.transform.set_random_state(0)
    assert ds[1]["image"].shape == good.shape


def test_uint8_storage_is_exact():
    rng = np.random.default_rng(1)
    q = torch.as_tensor(rng.integers(3, 200, size=(1, 16, 16)), dtype=torch.float32)
    for x in (q / 255.0, (q - q.min()) / (q.max() - q.min()), q):  # 8-bit scaled as ScaleIntensityd does, raw
        packed = C.pack_item({"image": MetaTensor(x, meta={"filename_or_obj": "a.png", "spacing": np.ones(2)})})
        assert packed["image"]["data"].dtype == torch.uint8
        back = C.unpack_item(packed)["image"]
        assert torch.equal(back.as_tensor(), x) and back.dtype == torch.float32
        assert back.meta["filename_or_obj"] == "a.png" and isinstance(back.meta["spacing"], np.ndarray)
    smooth = torch.linspace(0, 1, 256 * 3).reshape(1, 3, 256) ** 1.5  # interpolated: not 8-bit
    packed = C.pack_item({"image": smooth})
    assert packed["image"]["data"].dtype == torch.float32
    assert torch.equal(C.unpack_item(packed)["image"], smooth)
    assert C.packed_nbytes(C.pack_item({"image": q / 255.0})) == 256


def test_auto_chooses_by_memory_budget(datalist, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="monai_transfer.data.cache"):
        mode, numbers, probed = C.choose_cache(datalist, _pipeline(), memory_budget=10**9, probe_items=2)
    assert mode == "ram" and len(probed) == 2 and numbers["items"] == len(datalist)
    assert numbers["estimate_bytes"] == numbers["bytes_per_item"] * len(datalist)
    assert "cache=auto" in caplog.text and "RAM" in caplog.text
    mode, numbers, _ = C.choose_cache(datalist, _pipeline(), memory_budget=1000, probe_items=2)
    assert mode == "disk" and numbers["budget_bytes"] == 1000
    ds = C.build_dataset(datalist, _pipeline(), cache="auto", cache_dir=tmp_path, memory_budget=1000, num_workers=0,
                         progress=False)  # fmt: skip
    assert isinstance(ds, C.DiskCachedDataset)
    ds = C.build_dataset(datalist, _pipeline(), cache="auto", memory_budget=10**9, num_workers=0, progress=False)
    assert isinstance(ds, C.RAMCachedDataset) and ds.nbytes > 0
    assert C.available_memory_bytes() > 0


def test_parallel_first_pass_equals_serial(datalist, tmp_path):
    serial = C.build_dataset(datalist, _pipeline(random=False), cache="ram", num_workers=0, progress=False)
    parallel = C.build_dataset(datalist, _pipeline(random=False), cache="ram", num_workers=2, progress=True)
    disk = C.build_dataset(datalist, _pipeline(random=False), cache="disk", cache_dir=tmp_path, num_workers=2)
    for i in range(len(datalist)):
        assert torch.equal(serial[i]["image"], parallel[i]["image"]) and torch.equal(
            serial[i]["image"], disk[i]["image"]
        )


def test_errors_name_the_value_and_the_folder(datalist, tmp_path):
    with pytest.raises(ValueError, match="cache must be one of auto, ram, disk, none, got 'memory'"):
        C.build_dataset(datalist, _pipeline(), cache="memory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(C.CacheDirError, match=str(blocker / "sub")):
        C.build_dataset(datalist, _pipeline(), cache="disk", cache_dir=blocker / "sub", num_workers=0)
    with pytest.raises(ValueError, match="num_workers must be 'auto' or an integer >= 0, got -3"):
        C.resolve_num_workers(-3)
    with pytest.raises(ValueError, match="loader must be 'torch' or 'thread'"):
        C.build_dataloader([], loader="process")


def test_auto_num_workers(monkeypatch):
    assert C.auto_num_workers(cores=2, local_ranks=1) == 2
    assert C.auto_num_workers(cores=1, local_ranks=1) == 1
    assert C.auto_num_workers(cores=16, local_ranks=1) == 15
    assert C.auto_num_workers(cores=16, local_ranks=4) == 4
    assert C.auto_num_workers(cores=64, local_ranks=1) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert C.resolve_num_workers("auto") == C.auto_num_workers(local_ranks=2)
    assert C.resolve_num_workers(0) == 0 and C.resolve_num_workers("3") == 3


def test_dataloader_settings():
    loader = C.build_dataloader(list(range(8)), batch_size=4, shuffle=True, num_workers=0, device="cpu")
    assert loader.num_workers == 0 and not loader.pin_memory and len(loader) == 2
    sampler = torch.utils.data.SequentialSampler(range(8))
    loader = C.build_dataloader(list(range(8)), batch_size=4, shuffle=True, sampler=sampler, num_workers=0)
    assert loader.sampler is sampler  # a sampler turns shuffling off instead of failing
    thread = C.build_dataloader(list(range(8)), batch_size=4, num_workers=0, loader="thread")
    assert [b.tolist() for b in thread] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_random_transforms_without_metadata_tracking_give_the_same_item(datalist, tmp_path):
    """``track_meta=False``: the same values, as plain tensors (no metadata from the cache to the batch), from the RAM
    and the disk cache; the process-wide switch and the pipeline's ``EnsureTyped`` are restored."""
    from monai.data import get_track_meta
    from monai.transforms import EnsureTyped

    pipe = _pipeline()
    tracked = C.build_dataset(datalist, pipe, cache="ram", num_workers=0, progress=False)
    for mode in ("ram", "disk"):
        plain = C.build_dataset(datalist, pipe, cache=mode, cache_dir=tmp_path, num_workers=0, progress=False,
                                track_meta=False)  # fmt: skip
        for a, b in zip(_items(tracked, 3), _items(plain, 3)):
            assert isinstance(a["image"], MetaTensor) and a["image"].meta["filename_or_obj"]
            assert type(b["image"]) is torch.Tensor
            torch.testing.assert_close(b["image"], a["image"].as_tensor(), rtol=0, atol=1e-6)
    assert get_track_meta()  # the process-wide switch is restored
    assert all(t.converter.track_meta for t in pipe.transforms if isinstance(t, EnsureTyped))


def _xray_pipelines(size=32, backbone=None):
    from monai.bundle import ConfigParser

    from scripts.bench.scale_memory import TRAIN_JSON

    parser = ConfigParser()
    parser.read_config(str(TRAIN_JSON))
    parser["image_size"] = size
    if backbone is not None:
        parser["backbone"] = backbone
    return parser, parser.get_parsed_content("train#preprocessing"), parser.get_parsed_content("validate#preprocessing")


def _batches(ds, workers, loader="torch"):
    from monai.utils import set_determinism

    set_determinism(7)
    try:
        dl = C.build_dataloader(ds, batch_size=4, shuffle=True, num_workers=workers, drop_last=True, loader=loader,
                                generator=torch.Generator().manual_seed(5))  # fmt: skip
        return list(dl)
    finally:
        set_determinism(None)


@pytest.mark.parametrize("workers, backbone", [(0, None), (2, None), (0, "resnet50")])
def test_xray_batch_normalisation_gives_the_per_item_values(datalist, workers, backbone):
    """xray's ``train#dataset`` (``batch_normalise``): grey items, normalised per batch in the training process, with
    the values of the per-item pipeline; ``validate#dataset`` (shared with evaluation, inference and MONAI Label)
    keeps the per-item normalisation. The shipped backbone (shared 0.5/0.5 statistics) and ResNet-50 (ImageNet
    per-channel statistics, where replicating before normalising matters)."""
    parser, train_pre, val_pre = _xray_pipelines(backbone=backbone)
    assert parser["train#dataset"]["batch_normalise"] is True and "batch_normalise" not in parser["validate#dataset"]
    data = datalist * 2
    per_item = C.build_dataset(data, train_pre, cache="ram", num_workers=0, progress=False, track_meta=False)
    exact = C.build_dataset(data, train_pre, cache="ram", num_workers=0, progress=False, track_meta=False,
                            batch_normalise=True, item_dtype=None)  # fmt: skip
    half = C.build_dataset(data, train_pre, cache="ram", num_workers=0, progress=False, track_meta=False,
                           batch_normalise=True)  # fmt: skip
    assert per_item.batch_transform is None and isinstance(half.batch_transform, C.BatchNormalize)
    assert per_item[0]["image"].shape[0] == 3 and exact[0]["image"].dtype == torch.float32
    assert half[0]["image"].shape[0] == 1 and half[0]["image"].dtype == torch.float16  # grey, float16: 1/6 the bytes
    for loader in ("torch", "thread") if workers == 0 else ("torch",):
        a, b, h = _batches(per_item, workers, loader), _batches(exact, workers, loader), _batches(half, workers, loader)
        assert len(a) == len(b) == len(h) == 3
        for x, y, z in zip(a, b, h):
            assert y["image"].shape == z["image"].shape == x["image"].shape == (4, 3, 32, 32)
            assert y["image"].dtype == z["image"].dtype == torch.float32 and type(y["image"]) is torch.Tensor
            torch.testing.assert_close(y["image"], x["image"], rtol=0, atol=1e-6)
            # float16 rounding of the grey value v before normalising: at most 2**-11 |v| (the acquisition-shift
            # augmentation's bias field takes values above 1), divided by the channel's std
            mean_c, std_c = (torch.tensor(v).float().view(1, -1, 1, 1) for v in half.batch_transform.t.stats)
            bound = (2**-11 * (x["image"] * std_c + mean_c).abs() + 2**-24) / std_c
            assert bool(((z["image"] - x["image"]).abs() <= bound + 1e-6).all())
            assert not torch.equal(z["image"], x["image"]) or backbone is not None
            assert torch.equal(y["label"], x["label"]) and torch.equal(z["label"], x["label"])
    assert not torch.equal(b[0]["image"][:, 0], b[0]["image"][:, 1]) or backbone is None  # per-channel stats
    val = C.build_dataset(datalist, val_pre, cache="ram", num_workers=0, progress=False, batch_normalise=True)
    assert val.batch_transform is None and val[0]["image"].shape[0] == 3  # nothing random: normalised per item


def test_batch_normalise_keeps_pipelines_it_cannot_split(datalist):
    """No split when anything but ``EnsureTyped`` follows the normalisation; the given ``Compose`` is not changed."""
    from monai.transforms import Lambdad

    pipe = _pipeline()
    kept, batch = C.split_batch_normalisation(pipe)
    assert batch is not None and len(kept.transforms) == len(pipe.transforms) - 1 == 5
    odd = Compose(list(pipe.transforms) + [Lambdad("image", lambda x: x * 2)])
    assert C.split_batch_normalisation(odd) == (odd, None)
    with pytest.raises(ValueError, match="channels"):
        batch({"image": torch.zeros(2, 2, 4, 4)})


def test_disk_file_format_round_trip(tmp_path):
    """``save_packed``/``load_packed``: tensors of any dtype and rank (0-d, bool, ``uint8`` images), NumPy arrays,
    tuples and metadata come back equal; ``meta=False`` leaves the metadata out; nothing else is stored, and a
    truncated or foreign file is refused (named)."""
    image = MetaTensor(torch.arange(12, dtype=torch.float32).reshape(1, 3, 4) / 255.0,
                       meta={"filename_or_obj": "a.png", "affine": torch.eye(3, dtype=torch.float64),
                             "spatial_shape": np.array([3, 4]), "flags": (True, None)})  # fmt: skip
    item = {"image": image, "label": torch.tensor(1), "multi": np.array([0, 1, 1], dtype=np.int8),
            "mask": torch.tensor([True, False]), "pid": "p1", "w": 0.5, "pair": (1, "x")}  # fmt: skip
    path = C.save_packed(C.pack_item(item), tmp_path / "x.item")
    back = C.unpack_item(C.load_packed(path))
    assert (
        torch.equal(back["image"].as_tensor(), image.as_tensor()) and back["image"].meta["filename_or_obj"] == "a.png"
    )
    assert torch.equal(torch.as_tensor(back["image"].meta["affine"]), torch.eye(3, dtype=torch.float64))
    assert back["image"].meta["spatial_shape"].tolist() == [3, 4]
    assert back["image"].meta["flags"] == [True, None]  # metadata tuples come back as lists (as from the RAM cache)
    assert torch.equal(back["label"], item["label"]) and back["label"].shape == ()
    assert back["multi"].dtype == np.int8 and back["multi"].tolist() == [0, 1, 1]
    assert back["mask"].dtype == torch.bool and back["mask"].tolist() == [True, False]
    assert (back["pid"], back["w"], back["pair"]) == ("p1", 0.5, (1, "x"))
    plain = C.unpack_item(C.load_packed(path, meta=False), meta=False)
    assert type(plain["image"]) is torch.Tensor and torch.equal(plain["image"], image.as_tensor())
    with pytest.raises(TypeError, match=r"item\.obj"):
        C.save_packed({"obj": object()}, tmp_path / "y.item")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="x.item"):
        C.load_packed(path)
    (tmp_path / "z.item").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match="z.item"):
        C.load_packed(tmp_path / "z.item")
