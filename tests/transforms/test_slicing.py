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
"""2D/2.5D slice extraction, neighbour order, per-slice provenance, aspect-preserving resize, grey to RGB."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from monai_transfer.data import write_nifti
from monai_transfer.transforms import (
    ExtractSlices,
    ExtractSlicesd,
    GreyToRGB,
    GreyToRGBd,
    LoadMedicalImaged,
    ResizeKeepAspect,
    Stack25D,
    Stack25Dd,
    grey_to_rgb,
)
from tests.utils import ADRENAL_NPZ, load_adrenal, requires_shared_data


def _volume(depth: int = 10) -> MetaTensor:
    """(1, 4, 5, depth) volume whose value is its axial index."""
    v = torch.arange(depth, dtype=torch.float32).reshape(1, 1, 1, depth).repeat(1, 4, 5, 1)
    return MetaTensor(
        v,
        affine=torch.diag(torch.tensor([0.5, 0.6, 2.0, 1.0], dtype=torch.float64)),
        meta={"filename_or_obj": "vol.nii.gz", "spacing": np.array([0.5, 0.6, 2.0])},
    )


def _indices(slices) -> list[int]:
    return [int(s.meta["slice_index"]) for s in slices]


def test_strategies_slice_counts():
    vol = _volume(10)
    assert _indices(ExtractSlices("axial", "all")(vol)) == list(range(10))
    assert _indices(ExtractSlices("axial", "every_k", k=3)(vol)) == [0, 3, 6, 9]
    assert _indices(ExtractSlices("axial", "central_n", n=4)(vol)) == [3, 4, 5, 6]
    assert len(ExtractSlices("axial", "central_n", n=50)(vol)) == 10
    mask = torch.zeros(1, 4, 5, 10)
    mask[0, 1, 2, 2:5] = 1
    assert _indices(ExtractSlices("axial", "foreground")(vol, mask)) == [2, 3, 4]
    # without a mask the image itself: index 0 has value 0 everywhere
    assert _indices(ExtractSlices("axial", "foreground")(vol)) == list(range(1, 10))


def test_slice_values_axes_and_meta():
    vol = _volume(10)
    s = ExtractSlices("axial", "central_n", n=1)(vol)[0]
    assert s.shape == (1, 4, 5) and float(s.min()) == float(s.max()) == 5.0
    assert s.meta["slice_axis"] == "axial" and s.meta["slice_index"] == 5
    np.testing.assert_allclose(s.meta["spacing"], [0.5, 0.6])
    np.testing.assert_allclose(np.diag(s.affine.numpy())[:2], [0.5, 0.6])
    assert ExtractSlices("sagittal")(vol)[0].shape == (1, 5, 10)
    assert len(ExtractSlices(1)(vol)) == 5 and ExtractSlices("coronal")(vol)[0].shape == (1, 4, 10)


def test_random_n_seeded():
    vol = _volume(20)
    a = ExtractSlices("axial", "random_n", n=5)
    a.set_random_state(42)
    first = _indices(a(vol))
    assert len(first) == 5 and len(set(first)) == 5 and first == sorted(first)
    b = ExtractSlices("axial", "random_n", n=5)
    b.set_random_state(42)
    assert _indices(b(vol)) == first
    assert any(_indices(a(vol)) != first for _ in range(5))  # new draws on later calls
    mask = torch.zeros(1, 4, 5, 20)
    mask[..., 12:15] = 1
    c = ExtractSlices("axial", "random_n", n=2, random_pool="foreground").set_random_state(0)
    for _ in range(5):
        assert set(_indices(c(vol, mask))) <= {12, 13, 14}


def test_empty_foreground(caplog):
    vol = MetaTensor(torch.zeros(1, 3, 3, 7), meta={"filename_or_obj": "empty.nii"})
    with caplog.at_level(logging.WARNING):
        assert _indices(ExtractSlices(strategy="foreground")(vol)) == [3]
    assert "empty.nii" in caplog.text and "central slice" in caplog.text
    assert ExtractSlices(strategy="foreground", on_empty="empty")(vol) == []
    with pytest.raises(ValueError, match="no axial slice has foreground.*empty.nii"):
        ExtractSlices(strategy="foreground", on_empty="raise")(vol)


def test_stack25d_neighbour_order_and_edges():
    vol = _volume(10)
    st = Stack25D("axial", offsets=(-1, 0, 1))(vol)
    assert st.shape == (3, 4, 5, 10)
    assert st[:, 0, 0, 5].tolist() == [4.0, 5.0, 6.0]
    assert st[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0]  # clamped at the first slice
    assert st[:, 0, 0, 9].tolist() == [8.0, 9.0, 9.0]  # and at the last
    wide = Stack25D("axial", offsets=(-2, 0, 2))(vol)
    assert wide[:, 0, 0, 1].tolist() == [0.0, 1.0, 3.0]
    # inline 2.5D in ExtractSlices gives the same channels
    slices = ExtractSlices("axial", "all", offsets=(-1, 0, 1))(vol)
    assert slices[0].shape == (3, 4, 5)
    assert [float(c[0, 0]) for c in slices[0]] == [0.0, 0.0, 1.0]
    assert [float(c[0, 0]) for c in slices[9]] == [8.0, 9.0, 9.0]
    for i, s in enumerate(slices):
        torch.testing.assert_close(s.as_tensor(), st[..., i].as_tensor())


def test_extract_slicesd_provenance():
    vol = _volume(6)
    mask = MetaTensor(torch.zeros(1, 4, 5, 6))
    mask[0, 0, 0, 1:3] = 1
    data = {"image": vol, "mask": mask, "label": 1, "patient_id": "p7"}
    out = ExtractSlicesd("image", strategy="foreground", mask_key="mask", offsets=(-1, 0, 1))(data)
    assert isinstance(out, list) and len(out) == 2
    for d, idx in zip(out, [1, 2]):
        assert d["source_id"] == "vol.nii.gz" and d["slice_index"] == idx and d["slice_axis"] == "axial"
        assert d["label"] == 1 and d["patient_id"] == "p7"
        assert d["image"].shape == (3, 4, 5) and d["mask"].shape == (1, 4, 5)
        assert [float(c[0, 0]) for c in d["image"]] == [idx - 1, idx, idx + 1]
    ids = ExtractSlicesd("image", strategy="central_n", n=1, source_id_key="patient_id")(data)
    assert ids[0]["source_id"] == "p7"
    with pytest.raises(ValueError, match="source_id_key"):
        ExtractSlicesd("image")({"image": torch.zeros(1, 2, 2, 2)})


def test_argument_errors():
    with pytest.raises(ValueError, match="slice axis"):
        ExtractSlices("oblique")
    with pytest.raises(ValueError, match="strategy"):
        ExtractSlices(strategy="best")
    with pytest.raises(ValueError, match=r"\(C, x, y, z\)"):
        ExtractSlices()(torch.zeros(1, 4, 4))


def test_resize_keep_aspect():
    img = torch.ones(1, 20, 10)
    out = ResizeKeepAspect(32)(img)
    assert out.shape == (1, 32, 32)
    assert float(out[0, :, :8].abs().sum()) == 0 and float(out[0, :, 24:].abs().sum()) == 0  # padding
    np.testing.assert_allclose(out[0, :, 8:24].numpy(), 1.0, atol=1e-5)  # image, 32x16
    stretched = ResizeKeepAspect(32, keep_aspect=False)(img)
    assert stretched.shape == (1, 32, 32) and float(stretched.min()) > 0.99
    assert ResizeKeepAspect((16, 32))(img).shape == (1, 16, 32)
    assert ResizeKeepAspect(8)(torch.ones(1, 4, 4, 2)).shape == (1, 8, 8, 8)


def test_grey_to_rgb():
    grey = torch.rand(1, 5, 5)
    rgb = GreyToRGB()(grey)
    assert rgb.shape == (3, 5, 5) and all(torch.equal(rgb[i], grey[0]) for i in range(3))
    assert GreyToRGB()(rgb) is rgb  # idempotent
    assert GreyToRGBd("image")({"image": grey})["image"].shape == (3, 5, 5)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        GreyToRGB()(torch.zeros(2, 5, 5))
    arr = GreyToRGB()(grey.numpy())  # numpy in: a tensor out, as MONAI's RepeatChannel
    assert isinstance(arr, torch.Tensor) and torch.equal(arr, rgb)
    meta = GreyToRGB()(MetaTensor(grey, meta={"filename_or_obj": "g.png"}))
    assert isinstance(meta, MetaTensor) and meta.meta["filename_or_obj"] == "g.png"


def test_grey_to_rgb_function():
    """The one grey -> RGB replication: copies by default, a read-only view with ``copy=False``, any channel dim,
    and TorchScript-compatible (``Pretrained2DNet.forward`` calls it)."""
    batch = torch.rand(2, 1, 4, 5)
    rgb = grey_to_rgb(batch, dim=1)
    assert rgb.shape == (2, 3, 4, 5) and torch.equal(rgb, batch.repeat(1, 3, 1, 1))
    kept = batch.clone()
    rgb[:, 0] = 0  # a copy: writing to it leaves the input untouched
    assert torch.equal(batch, kept)
    view = grey_to_rgb(batch, dim=1, copy=False)
    assert torch.equal(view, batch.repeat(1, 3, 1, 1)) and view.data_ptr() == batch.data_ptr()
    rgb = grey_to_rgb(batch, dim=1)
    assert grey_to_rgb(rgb, dim=1) is rgb and grey_to_rgb(batch, 1, dim=1) is batch
    assert torch.equal(grey_to_rgb(batch[0], 4), batch[0].repeat(4, 1, 1))
    with pytest.raises(ValueError, match=r"1 or 3 channels along dim 1, got shape \[2, 2, 4, 5\]"):
        grey_to_rgb(torch.zeros(2, 2, 4, 5), dim=1)
    scripted = torch.jit.script(grey_to_rgb)
    assert torch.equal(scripted(batch, 3, 1, False), view)


@requires_shared_data(ADRENAL_NPZ)
def test_real_volume_pipeline(tmp_path):
    vols, labels = load_adrenal("val", n=2)
    items = []
    for i, (v, y) in enumerate(zip(vols, labels)):
        path = str(write_nifti(tmp_path / f"v{i}.nii.gz", v))
        items.append({"image": path, "mask": path, "label": int(y)})
    expected = [int(((v > 0).sum(axis=(0, 1)) > 0).sum()) for v in vols]  # axial = last axis
    tf = Compose(
        [
            LoadMedicalImaged(["image", "mask"], expected_ndim=3),
            Stack25Dd("image", axis="axial", offsets=(-1, 0, 1)),  # the mask stays one channel
            ExtractSlicesd("image", axis="axial", strategy="foreground", mask_key="mask"),
        ]
    )
    loader = DataLoader(Dataset(items, tf), batch_size=1000, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (sum(expected), 3, 64, 64) and batch["mask"].shape == (sum(expected), 1, 64, 64)
    assert float(batch["mask"].flatten(1).amax(1).min()) > 0  # every slice has foreground
    counts = [sum(1 for s in batch["source_id"] if s == it["image"]) for it in items]
    assert counts == expected
    assert sorted(set(batch["slice_axis"])) == ["axial"]
    for it, y in zip(items, labels):
        sel = [j for j, s in enumerate(batch["source_id"]) if s == it["image"]]
        assert set(batch["label"][sel].tolist()) == {int(y)}


def test_resize_keep_aspect_auto_mode_averages_when_shrinking_and_interpolates_when_enlarging():
    img = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    small = ResizeKeepAspect(4)(img)  # "auto" -> area: each output pixel is the mean of a 2x2 block
    expected = torch.nn.functional.avg_pool2d(img[None], 2)[0]
    assert torch.allclose(torch.as_tensor(small), expected)
    big = torch.as_tensor(ResizeKeepAspect(16)(img))
    bilinear = torch.as_tensor(ResizeKeepAspect(16, mode="bilinear")(img))
    assert big.shape == (1, 16, 16) and torch.allclose(big, bilinear)


@pytest.mark.parametrize("shape", [(1, 40, 33), (2, 12, 14, 10)])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_fast_rand_affined_draws_and_resamples_as_monai(shape, padding_mode):
    """``FastRandAffined`` on plain tensors: the same random draws as MONAI's ``RandAffined`` (seeded alike, over
    several calls, with two keys and ``prob < 1``) and the same values to float32 rounding; tracked ``MetaTensor``
    inputs run MONAI's own code (metadata and ``inverse`` kept)."""
    from monai.data import get_track_meta, set_track_meta
    from monai.transforms import RandAffined

    from monai_transfer.transforms.slicing import FastRandAffined

    kw = dict(keys=["image", "mask"], prob=0.7, rotate_range=0.3, shear_range=0.1, translate_range=3,
              scale_range=(0.1, 0.2), padding_mode=padding_mode)  # fmt: skip
    if len(shape) == 4:
        kw["rotate_range"] = (0.3, 0.2, 0.1)
    ref, fast = RandAffined(**kw).set_random_state(4), FastRandAffined(**kw).set_random_state(4)
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(shape, generator=gen)
    mask = (torch.rand(shape, generator=gen) > 0.5).float()
    previous = get_track_meta()
    set_track_meta(False)
    try:
        changed = 0
        for _ in range(8):
            a, b = ref({"image": img, "mask": mask}), fast({"image": img, "mask": mask})
            for k in ("image", "mask"):
                assert type(b[k]) is torch.Tensor and b[k].dtype == torch.float32 and b[k].shape == img.shape
                torch.testing.assert_close(b[k], a[k].as_tensor() if isinstance(a[k], MetaTensor) else a[k],
                                           rtol=0, atol=1e-4)  # fmt: skip
            changed += int(not torch.equal(b["image"], img))
        assert 0 < changed < 8  # prob 0.7: some calls transform, some do not
    finally:
        set_track_meta(previous)
    tracked = FastRandAffined(**{**kw, "prob": 1.0}).set_random_state(1)
    meta = tracked({"image": MetaTensor(img), "mask": MetaTensor(mask)})
    assert isinstance(meta["image"], MetaTensor) and meta["image"].applied_operations  # MONAI's path
    inverted = tracked.inverse(meta)
    assert inverted["image"].shape == img.shape
