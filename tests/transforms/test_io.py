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
"""LoadMedicalImage(d) on real DICOM (pydicom, pydicom-data), NIfTI (nibabel) and PNG files; every bad input."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_voi_lut

from monai_transfer.data import datalist_from_npz, write_dicom_series, write_png
from monai_transfer.transforms import LoadMedicalImage, LoadMedicalImaged, MedicalImageLoadError, detect_image_format
from tests.utils import ADRENAL_NPZ, PNEUMONIA_NPZ, load_adrenal, requires_shared_data

NIB_DATA = os.path.join(os.path.dirname(pytest.importorskip("nibabel").__file__), "tests", "data")


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom / pydicom-data test files)")
    return str(path)


@pytest.fixture(scope="module")
def radiograph():
    """The 1955x1841 MONOCHROME1 CR chest radiograph, uncompressed and JPEG 2000 lossless, loaded once."""
    unc, j2k = _testfile("RG1_UNCR.dcm"), _testfile("RG1_J2KR.dcm")
    ds = pydicom.dcmread(unc)
    return {"ds": ds, "raw": ds.pixel_array, "unc": LoadMedicalImage()(unc), "j2k": LoadMedicalImage()(j2k)}


def test_ct_hounsfield_units_from_slope_intercept():
    path = _testfile("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = LoadMedicalImage()(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32 and img.shape == (1, 128, 128)
    np.testing.assert_array_equal(img[0].numpy(), expected.astype(np.float32))
    assert img.meta["Modality"] == "CT" and img.meta["rescale_applied"] and not img.meta["voi_applied"]
    assert img.meta["RescaleIntercept"] == -1024.0
    np.testing.assert_allclose(img.meta["spacing"], [0.661468, 0.661468])
    np.testing.assert_allclose(np.diag(img.affine.numpy())[:2], [0.661468, 0.661468])
    assert img.meta["filename_or_obj"] == path


def test_mr_voi_only_when_asked():
    path = _testfile("MR_small.dcm")
    ds = pydicom.dcmread(path)
    auto = LoadMedicalImage()(path)  # MR is not a radiograph: stays in stored units
    np.testing.assert_array_equal(auto[0].numpy(), ds.pixel_array.astype(np.float32))
    assert not auto.meta["voi_applied"] and auto.meta["WindowCenter"] == 600.0
    always = LoadMedicalImage(voi="always")(path)
    np.testing.assert_allclose(always[0].numpy(), apply_voi_lut(ds.pixel_array, ds).astype(np.float32))
    assert always.meta["voi_applied"]


def test_multiframe_layouts():
    path = _testfile("emri_small.dcm")
    raw = pydicom.dcmread(path).pixel_array  # (10, 64, 64)
    spatial = LoadMedicalImage()(path)
    assert spatial.shape == (1, 64, 64, 10) and spatial.meta["NumberOfFrames"] == 10
    np.testing.assert_array_equal(spatial[0, :, :, 3].numpy(), raw[3])
    channel = LoadMedicalImage(multiframe="channel")(path)
    assert channel.shape == (10, 64, 64)
    np.testing.assert_array_equal(channel[7].numpy(), raw[7])


def _enhanced_with_rescale(tmp_path, per_frame, shared=None, name="enh.dcm"):
    """The real Enhanced MR ``emri_small.dcm`` with Pixel Value Transformation functional groups added."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def group(slope_intercept):
        g = Dataset()
        if slope_intercept is not None:
            pvt = Dataset()
            pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = *slope_intercept, "US"
            g.PixelValueTransformationSequence = Sequence([pvt])
        return g

    ds = pydicom.dcmread(_testfile("emri_small.dcm"))
    ds.PerFrameFunctionalGroupsSequence = Sequence([group(si) for si in per_frame])
    if shared is not None:
        ds.SharedFunctionalGroupsSequence = Sequence([group(shared)])
    out = tmp_path / name
    ds.save_as(out)
    return out, ds.pixel_array.astype(np.float64)


def test_enhanced_multiframe_rescale_per_frame_and_shared(tmp_path):
    per_frame = [(0.5 * (k + 1), -100.0 * k) for k in range(10)]
    path, raw = _enhanced_with_rescale(tmp_path, per_frame)
    img = LoadMedicalImage()(path)  # (1, 64, 64, frames)
    for k, (slope, intercept) in enumerate(per_frame):
        np.testing.assert_allclose(img[0, :, :, k].numpy(), raw[k] * slope + intercept, rtol=1e-6)
    assert img.meta["rescale_applied"] and np.isnan(img.meta["RescaleSlope"])  # varies per frame
    # frames without their own group take the shared one
    path, raw = _enhanced_with_rescale(tmp_path, [None] * 9 + [(1.0, 5.0)], shared=(2.0, -1024.0), name="mix.dcm")
    img = LoadMedicalImage(multiframe="channel")(path)
    np.testing.assert_allclose(img[0].numpy(), raw[0] * 2.0 - 1024.0)
    np.testing.assert_allclose(img[9].numpy(), raw[9] + 5.0)
    # a rescale on some frames only would give inconsistent units: refused, naming the file
    path, _ = _enhanced_with_rescale(tmp_path, [(1.0, -1024.0)] * 9 + [None], name="partial.dcm")
    err = _raises_naming(path, match="for 1 of 10")
    assert "frame 9" in str(err)


def test_monochrome1_radiograph_voi_and_inversion(radiograph):
    ds, raw, img = radiograph["ds"], radiograph["raw"], radiograph["unc"]
    assert ds.PhotometricInterpretation == "MONOCHROME1" and img.shape == (1, 1955, 1841)
    assert img.meta["voi_applied"] and img.meta["inverted"] and img.meta["Modality"] == "CR"
    windowed = apply_voi_lut(raw, ds).astype(np.float64)
    expected = (2**15 - 1) - windowed  # inverted over the window's output range (15-bit unsigned, no rescale)
    np.testing.assert_allclose(img[0].numpy(), expected, rtol=1e-6)
    # inversion reverses the order of grey levels: the brightest raw pixel becomes the darkest
    flat = img[0].numpy().ravel()
    assert flat[np.argmax(raw.ravel())] == flat.min() and flat[np.argmin(raw.ravel())] == flat.max()


def test_monochrome1_raw_without_processing():
    path = _testfile("RG3_UNCR.dcm")  # 1760x1760 CR, 10-bit, MONOCHROME1
    raw = pydicom.dcmread(path).pixel_array
    img = LoadMedicalImage(voi="none", invert_monochrome1=False)(path)
    np.testing.assert_array_equal(img[0].numpy(), raw.astype(np.float32))
    assert not img.meta["inverted"] and not img.meta["voi_applied"]


def test_jpeg2000_twin_decodes_to_the_same_pixels(radiograph):
    unc, j2k = radiograph["unc"], radiograph["j2k"]
    assert j2k.meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.90"
    assert torch.equal(unc.as_tensor(), j2k.as_tensor())


def test_nifti_4d_and_orientation():
    path4d = os.path.join(NIB_DATA, "example4d.nii.gz")
    img = LoadMedicalImage()(path4d)
    assert img.shape == (2, 128, 96, 24)  # 4th dimension becomes the channels
    np.testing.assert_allclose(img.meta["spacing"], [2.0, 2.0, 2.2], atol=1e-5)
    anat = LoadMedicalImage(axcodes="RAS", expected_ndim=3)(os.path.join(NIB_DATA, "anatomical.nii"))
    assert anat.shape == (1, 33, 41, 25) and anat.meta["source_format"] == "nifti"
    np.testing.assert_allclose(anat.meta["spacing"], [2.0, 2.0, 2.0])
    assert (np.diag(anat.affine.numpy())[:3] > 0).all()  # RAS: positive axis directions


def test_dictionary_version_keeps_other_keys():
    path = _testfile("CT_small.dcm")
    out = LoadMedicalImaged(keys="image")({"image": path, "label": 1, "patient_id": "p1"})
    assert out["label"] == 1 and out["patient_id"] == "p1" and out["image"].shape == (1, 128, 128)
    assert out["image"].meta["filename_or_obj"] == path


def test_png_grey_and_16bit(tmp_path):
    arr8 = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    arr16 = (np.arange(12 * 10) * 300).astype(np.uint16).reshape(12, 10)
    img8 = LoadMedicalImage()(write_png(tmp_path / "a.png", arr8))
    img16 = LoadMedicalImage()(write_png(tmp_path / "b.png", arr16))
    assert img8.shape == (1, 12, 10)  # (C, rows, cols): display orientation, not transposed
    np.testing.assert_array_equal(img8[0].numpy(), arr8)
    np.testing.assert_array_equal(img16[0].numpy(), arr16)
    assert LoadMedicalImage(grey=False)(tmp_path / "a.png").shape == (3, 12, 10)


@requires_shared_data(PNEUMONIA_NPZ)
@pytest.mark.parametrize("fmt", ["png", "dcm", "nii.gz"])
def test_round_trip_real_xrays(tmp_path, fmt):
    items = datalist_from_npz(PNEUMONIA_NPZ, "val", tmp_path, fmt=fmt, n=4)
    with np.load(PNEUMONIA_NPZ) as z:
        images = z["val_images"]
    for it in items:
        img = LoadMedicalImage(expected_ndim=2)(it["image"])
        assert img.shape == (1, 28, 28)
        np.testing.assert_array_equal(img[0].numpy(), images[it["npz_index"]].astype(np.float32))


@requires_shared_data(ADRENAL_NPZ)
def test_dicom_series_folder(tmp_path):
    vol = load_adrenal("val", n=2)[0][0][:16]  # 16 slices of a real 64x64 mask volume
    hu = vol.astype(np.int16) * 4 - 1000
    folder = write_dicom_series(tmp_path / "series", hu, spacing=(2.5, 0.8, 0.8))
    img = LoadMedicalImage(expected_ndim=3)(folder)
    assert img.shape == (1, 64, 64, 16) and img.meta["Modality"] == "CT" and img.meta["source_format"] == "dicom_series"
    np.testing.assert_array_equal(img[0].numpy(), np.transpose(hu, (2, 1, 0)).astype(np.float32))  # swap_ij
    np.testing.assert_allclose(img.meta["spacing"], [0.8, 0.8, 2.5], atol=1e-5)


def test_detect_format_by_magic(tmp_path):
    no_ext = tmp_path / "IM0001"
    no_ext.write_bytes(open(_testfile("CT_small.dcm"), "rb").read())
    assert detect_image_format(no_ext) == "dicom"
    assert LoadMedicalImage()(no_ext).shape == (1, 128, 128)


# ----------------------------------------------------------------------------------------- one test per bad input
def _raises_naming(path, loader=None, match=""):
    with pytest.raises(MedicalImageLoadError, match=match) as exc:
        (loader or LoadMedicalImage())(path)
    assert str(path) in str(exc.value)
    return exc.value


def test_error_missing_file(tmp_path):
    _raises_naming(tmp_path / "nope.dcm", match="file not found")


def test_error_not_dicom(tmp_path):
    p = tmp_path / "fake.dcm"
    p.write_text("this is a text file, not DICOM")
    _raises_naming(p, match="not a DICOM file")


def test_error_truncated_dicom(tmp_path):
    data = open(_testfile("CT_small.dcm"), "rb").read()
    p = tmp_path / "truncated.dcm"
    p.write_bytes(data[: len(data) // 2])
    _raises_naming(p, match="truncated")
    p.write_bytes(data[:1000])  # cut inside the header, before the pixel data
    _raises_naming(p, match="truncated")


def test_error_no_pixel_data():
    _raises_naming(_testfile("rtplan.dcm"), match="no pixel data")


def test_error_unsupported_transfer_syntax():
    path = _testfile("JPEG-LL.dcm")  # JPEG Lossless SV1: needs pylibjpeg-libjpeg or gdcm
    try:
        _ = pydicom.dcmread(path).pixel_array
    except Exception:
        pass
    else:
        pytest.skip("a JPEG lossless decoder is installed here")
    err = _raises_naming(path, match="unsupported transfer syntax")
    assert "1.2.840.10008.1.2.4.70" in str(err) and "pylibjpeg-libjpeg" in str(err)


def test_error_4d_where_3d_expected():
    path = os.path.join(NIB_DATA, "example4d.nii.gz")
    _raises_naming(path, LoadMedicalImage(expected_ndim=3), match="4 dimensions")


def test_error_2d_where_3d_expected():
    _raises_naming(_testfile("CT_small.dcm"), LoadMedicalImage(expected_ndim=3), match="2 dimensions")


def test_error_unreadable_png(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    _raises_naming(p, match="unreadable")


def test_error_unsupported_extension(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    _raises_naming(p, match="unsupported file type")


def test_error_is_picklable_and_public():
    err = MedicalImageLoadError("/x/y.dcm", "reason here")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, RuntimeError) and str(again) == str(err) and again.path == "/x/y.dcm"


def test_bad_options():
    with pytest.raises(ValueError, match="voi"):
        LoadMedicalImage(voi="sometimes")
    with pytest.raises(ValueError, match="expected_ndim"):
        LoadMedicalImage(expected_ndim=4)
