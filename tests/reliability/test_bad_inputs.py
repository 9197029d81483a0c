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
"""Bad inputs of issue 10 not covered in tests/transforms/test_io.py and tests/data/test_datalist.py.

Each test checks that the error or warning names the file (or data list row) and the problem. The full table of
cases and the tests that cover them is in docs/reliability.md.
"""

from __future__ import annotations

import logging
import struct
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from monai_transfer.data import DatalistError, datalist_from_folder, validate_datalist
from monai_transfer.data.bundle_data import bundle_datalists
from monai_transfer.transforms import LoadMedicalImage, LoadMedicalImaged, MedicalImageLoadError
from tests.utils import REPO_ROOT

__all__: list[str] = []


def _ct_small() -> str:
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's CT_small.dcm is not installed")
    return str(path)


def _raises_naming(path, loader=None, match=""):
    with pytest.raises(MedicalImageLoadError, match=match) as exc:
        (loader or LoadMedicalImage())(path)
    assert str(path) in str(exc.value)
    return exc.value


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def _nifti(path, arr):
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), np.eye(4)), str(path))
    return path


# ----------------------------------------------------------------------------------------------- corrupted DICOM
def test_dicom_corrupted_rows_is_refused_not_silently_reshaped(tmp_path):
    """Halving Rows leaves enough bytes for 2 frames: pydicom returns them, the loader refuses the mismatch."""
    ds = pydicom.dcmread(_ct_small())
    ds.Rows = ds.Rows // 2
    p = tmp_path / "rows_halved.dcm"
    ds.save_as(p)
    _raises_naming(p, match=r"decoded pixel array of shape \(2, 64, 128\) disagrees with the header")


def test_dicom_flipped_bytes_in_header_and_pixels(tmp_path):
    src = _ct_small()
    data = bytearray(open(src, "rb").read())
    # a flip inside the 'DICM' marker and preamble-adjacent meta header: not a DICOM file any more
    bad_marker = bytearray(data)
    bad_marker[129] ^= 0xFF
    p = tmp_path / "flipped_marker.dcm"
    p.write_bytes(bytes(bad_marker))
    _raises_naming(p, match="not a DICOM file")
    # flips inside the pixel data cannot be detected (DICOM has no checksum): the image loads with its header's shape
    ds = pydicom.dcmread(src)
    start = len(data) - len(ds.PixelData)
    rng = np.random.default_rng(0)
    for pos in rng.integers(start, len(data), size=20):
        data[pos] ^= 0x5A
    p = tmp_path / "flipped_pixels.dcm"
    p.write_bytes(bytes(data))
    img = LoadMedicalImage()(p)
    clean = LoadMedicalImage()(src)
    assert img.shape == clean.shape == (1, 128, 128)
    assert 0 < int((img != clean).sum()) <= 20


def test_dicom_pixel_data_removed(tmp_path):
    ds = pydicom.dcmread(_ct_small())
    del ds.PixelData
    p = tmp_path / "no_pixels.dcm"
    ds.save_as(p)
    _raises_naming(p, match="Rows/Columns.*present but no pixel data")


def _with_transfer_syntax(src: str, uid: str, out) -> str:
    """Rewrite the Transfer Syntax UID bytes (pydicom refuses to write a file whose pixel data contradicts it)."""
    data = open(src, "rb").read()
    i = data.find(b"\x02\x00\x10\x00UI")
    length = struct.unpack("<H", data[i + 6 : i + 8])[0]
    new = uid.encode() + b"\0" * (len(uid) % 2)
    out.write_bytes(data[: i + 6] + struct.pack("<H", len(new)) + new + data[i + 8 + length :])
    return str(out)


def test_dicom_wrong_transfer_syntax(tmp_path):
    src = _ct_small()  # uncompressed explicit VR little endian
    # labelled JPEG 2000 (a decoder is installed here): the native bytes do not decode
    j2k = _with_transfer_syntax(src, "1.2.840.10008.1.2.4.90", tmp_path / "says_j2k.dcm")
    err = _raises_naming(j2k, match="1.2.840.10008.1.2.4.90")
    assert "corrupted compressed pixel data" in str(err) or "unsupported transfer syntax" in str(err)
    # labelled big endian: the data set itself is misread
    be = _with_transfer_syntax(src, "1.2.840.10008.1.2.2", tmp_path / "says_big_endian.dcm")
    _raises_naming(be, match=r"no pixel data .*TransferSyntaxUID='1.2.840.10008.1.2.2'.*wrong transfer syntax")
    # not a transfer syntax at all
    _raises_naming(_with_transfer_syntax(src, "1.2.3.4", tmp_path / "says_1234.dcm"), match="not a transfer syntax")


# --------------------------------------------------------------------------------------------------- folders
def test_fake_png_in_class_folder_named_by_validate_datalist(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(2):
            _png(tmp_path / c / f"{i}.png", rng.integers(0, 255, (8, 8)))
    (tmp_path / "b" / "report.png").write_text("a text file with an image extension")
    items = datalist_from_folder(tmp_path)  # accepted by extension; only reading it shows the problem
    with pytest.raises(MedicalImageLoadError, match=r"report.png'.*unreadable"):
        validate_datalist(items)


def test_single_class_csv_refused_by_bundle_datalists(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        _png(tmp_path / f"{i}.png", rng.integers(0, 255, (8, 8)))
        rows.append(f"{i}.png,normal")
    (tmp_path / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatalistError, match=r"labels.csv: the 'train' split holds a single class .*normal"):
        bundle_datalists(tmp_path / "labels.csv", class_names=["normal", "pneumonia"])


@pytest.mark.parametrize("where", ["../outside.png", "/etc/hostname", "sub/../../outside.png"])
def test_csv_path_escaping_dataset_dir(tmp_path, where):
    rng = np.random.default_rng(0)
    _png(tmp_path / "outside.png", rng.integers(0, 255, (8, 8)))
    data = tmp_path / "data"
    _png(data / "in.png", rng.integers(0, 255, (8, 8)))
    (data / "labels.csv").write_text(f"image,label\nin.png,0\n{where},1\n")
    with pytest.raises(DatalistError, match=rf"labels.csv' line 3: image path '{where}' escapes the data root"):
        bundle_datalists(data / "labels.csv")


def test_json_path_escaping_dataset_dir(tmp_path):
    _png(tmp_path / "outside.png", np.zeros((4, 4)))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "list.json").write_text('{"training": [{"image": "../outside.png", "label": 0}]}')
    with pytest.raises(DatalistError, match=r"list.json' item 0: image path '../outside.png' escapes the data root"):
        bundle_datalists(tmp_path / "data" / "list.json")


# ----------------------------------------------------------------------------------------------- image content
def test_nan_inf_in_nifti(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    arr[0, 0, 0], arr[1, 1, 1], arr[2, 2, 2] = np.nan, np.inf, -np.inf
    p = _nifti(tmp_path / "nan.nii.gz", arr)
    _raises_naming(p, match=r"image holds 1 NaN and 2 infinite value\(s\) among 120")
    _raises_naming(p, LoadMedicalImaged("image").loader, match="NaN")  # the dictionary version's default too
    with pytest.warns(UserWarning, match=r"nan.nii.gz'.*1 NaN and 2 infinite.*NaN and -inf by 1 and \+inf by 119"):
        img = LoadMedicalImage(nan_policy="warn")(p)
    assert bool(torch.isfinite(img).all()) and float(img[0, 1, 1, 1]) == 119.0
    assert float(img[0, 0, 0, 0]) == float(img[0, 2, 2, 2]) == 1.0  # the smallest finite value
    kept = LoadMedicalImage(nan_policy="ignore")(p)
    assert int(torch.isnan(kept).sum()) == 1 and int(torch.isinf(kept).sum()) == 2
    with pytest.raises(ValueError, match="nan_policy"):
        LoadMedicalImage(nan_policy="drop")


def test_rescale_overflow_in_dicom_is_caught(tmp_path):
    ds = pydicom.dcmread(_ct_small())
    ds.RescaleSlope = "1e39"  # overflows float32
    p = tmp_path / "overflow.dcm"
    ds.save_as(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _raises_naming(p, match="infinite value")


def test_zero_variance_images_warn_naming_the_file(tmp_path):
    png = _png(tmp_path / "blank.png", np.full((16, 16), 7))
    nii = _nifti(tmp_path / "flat.nii.gz", np.zeros((4, 4, 4)))
    with pytest.warns(UserWarning, match=r"blank.png'.*constant \(every value is 7, zero variance\)"):
        img = LoadMedicalImage()(png)
    assert float(img.min()) == float(img.max()) == 7.0
    with pytest.warns(UserWarning, match=r"flat.nii.gz'.*constant"):
        LoadMedicalImage()(nii)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a normal image gives no warning
        LoadMedicalImage()(_png(tmp_path / "ok.png", np.arange(256).reshape(16, 16)))


def test_5d_nifti_refused_and_trailing_singletons_squeezed(tmp_path):
    p5 = _nifti(tmp_path / "five.nii", np.random.default_rng(0).random((4, 5, 6, 1, 3)))
    _raises_naming(p5, match=r"NIfTI image has 5 dimensions \(shape \(4, 5, 6, 1, 3\)\)")
    p1 = _nifti(tmp_path / "singleton.nii", np.random.default_rng(0).random((4, 5, 6, 1, 1)))
    assert tuple(LoadMedicalImage(expected_ndim=3)(p1).shape) == (1, 4, 5, 6)


def test_wildly_different_sizes_through_the_xray_bundle_transforms(tmp_path):
    """The bundle's own load + final transforms give the network input size for any image size and aspect."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"))
    parser["image_size"] = 32
    tfm = Compose(parser.get_parsed_content("load_transforms") + parser.get_parsed_content("final_transforms"))
    rng = np.random.default_rng(0)
    sizes = [(3, 700), (900, 2), (1, 1), (32, 32), (1200, 1100)]
    for h, w in sizes:
        p = _png(tmp_path / f"img_{h}x{w}.png", rng.integers(0, 255, (h, w)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the 1x1 image is constant
            out = tfm({"image": str(p), "label": 0})["image"]
        assert tuple(out.shape) == (3, 32, 32), (h, w, tuple(out.shape))
        assert bool(torch.isfinite(out).all())
        assert out.meta["filename_or_obj"] == str(p)


# ------------------------------------------------------------------------------ reliability round 2 (issue 19)
def test_split_folders_with_different_class_sets_share_label_numbers(tmp_path, caplog):
    """train/{a,b,c} and val/{a,c}: 'c' is label 2 in both splits (sorted union), with a warning naming val and b."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", "abc"), ("val", "ac"), ("test", "bc")):
        for c in classes:
            for i in range(2):
                _png(tmp_path / split / c / f"{i}.png", rng.integers(0, 255, (8, 8)))
    with caplog.at_level("WARNING", logger="monai_transfer.data.bundle_data"):
        out = bundle_datalists(tmp_path)
    numbers = {s: {x["class_name"]: x["label"] for x in v} for s, v in out.items()}
    assert numbers == {"train": {"a": 0, "b": 1, "c": 2}, "val": {"a": 0, "c": 2}, "test": {"b": 1, "c": 2}}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'val'" in m and "['b']" in m for m in warned), warned
    assert any("'test'" in m and "['a']" in m for m in warned), warned
    assert not any("'train'" in m for m in warned), warned
