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
"""LoadMedicalImage on the inputs that gave silent wrong answers (issue #19, round 2): MONOCHROME1 range, PALETTE
COLOR, DICOM series folders (mixed series, duplicate positions, gaps), truncated PNG, JPEG EXIF orientation and
complex NIfTI. Every input is built by the test (from pydicom / pydicom-data files or from scratch)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile, ImageOps
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_voi_lut
from pydicom.uid import generate_uid

from monai_transfer.data import write_dicom, write_dicom_series, write_nifti, write_png
from monai_transfer.transforms import LoadMedicalImage, LoadMedicalImaged, MedicalImageLoadError


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom / pydicom-data test files)")
    return str(path)


def _raises_naming(path, loader=None, match: str | None = None) -> MedicalImageLoadError:
    with pytest.raises(MedicalImageLoadError, match=match) as info:
        (loader or LoadMedicalImage())(path)
    assert str(path) in str(info.value)
    return info.value


def _with_pixels(ds: pydicom.Dataset, stored: np.ndarray, out, **attrs) -> str:
    """Save a copy of ``ds`` (uncompressed explicit VR little endian) holding ``stored`` as its pixel data."""
    ds = ds.copy()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Rows, ds.Columns = (int(s) for s in stored.shape[-2:])
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return str(out)


# ------------------------------------------------------------------------------------------------- MONOCHROME1
@pytest.mark.parametrize("voi", ["auto", "none"])
def test_monochrome1_crop_of_a_real_film_keeps_pixel_values(tmp_path, voi):
    """RG3_UNCR (real 10-bit CR, MONOCHROME1, window 550/1024): a crop loads with the full film's values there.

    Old code inverted over each image's own min/max, so the crop (a smaller range) got other values.
    """
    src = _testfile("RG3_UNCR.dcm")
    ds = pydicom.dcmread(src)
    raw = ds.pixel_array
    crop = raw[800:864, 700:780].copy()
    assert crop.min() > raw.min() and crop.max() < raw.max()  # the crop misses the film's extremes
    path = _with_pixels(ds, crop, tmp_path / "crop.dcm")
    full = LoadMedicalImage(voi=voi)(src)
    part = LoadMedicalImage(voi=voi)(path)
    assert part.meta["inverted"] and part.shape == (1, 64, 80)
    np.testing.assert_array_equal(part[0].numpy(), full[0, 800:864, 700:780].numpy())
    if voi == "none":  # stored range of a 10-bit unsigned image: [0, 1023]
        np.testing.assert_array_equal(full[0].numpy(), (1023 - raw).astype(np.float32))
    else:  # window output range: pydicom maps the window to [0, 1023] too
        np.testing.assert_allclose(full[0].numpy(), 1023 - apply_voi_lut(raw, ds).astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize(
    "signed, slope, intercept", [(False, 1.0, 0.0), (False, 2.0, -100.0), (True, 0.5, 10.0), (True, 1.0, 0.0)]
)
def test_monochrome1_equals_monochrome2_of_the_inverted_stored_values(tmp_path, signed, slope, intercept):
    """MONOCHROME1 of stored ``x`` loads as MONOCHROME2 of ``lowest + highest - x`` (12-bit, with a rescale)."""
    rng = np.random.default_rng(0)
    lo, hi = (-2048, 2047) if signed else (0, 4095)
    x = rng.integers(lo + 300, hi - 500, size=(24, 20)).astype(np.int16 if signed else np.uint16)
    base = pydicom.dcmread(_testfile("RG3_UNCR.dcm"), stop_before_pixels=True)
    attrs = dict(
        BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=int(signed), Modality="DX",
        RescaleSlope=f"{slope:g}", RescaleIntercept=f"{intercept:g}",
    )  # fmt: skip
    for kw in ("WindowCenter", "WindowWidth"):
        if kw in base:
            del base[kw]
    m1 = _with_pixels(base, x, tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1", **attrs)
    mirrored = (lo + hi - x.astype(np.int32)).astype(x.dtype)
    m2 = _with_pixels(base, mirrored, tmp_path / "m2.dcm", PhotometricInterpretation="MONOCHROME2", **attrs)
    a, b = LoadMedicalImage()(m1), LoadMedicalImage()(m2)
    assert a.meta["inverted"] and not b.meta["inverted"]
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(b[0].numpy(), mirrored * slope + intercept, atol=1e-4)


def test_monochrome1_voi_lut_sequence_inverted_over_the_lut_output_range(tmp_path):
    """A VOI LUT Sequence (16-bit entries) maps to [0, 65535]: MONOCHROME1 is ``65535 - LUT(x)``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(_testfile("RG3_UNCR.dcm"))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [1024, 0, 16])
    item.add_new("LUTData", "US", [1000 + 3 * k for k in range(1024)])  # 1000..4069, far from the 16-bit limits
    ds.VOILUTSequence = Sequence([item])
    del ds.WindowCenter, ds.WindowWidth
    raw = ds.pixel_array[:40, :50].copy()
    path = _with_pixels(ds, raw, tmp_path / "voilut.dcm")
    img = LoadMedicalImage()(path)  # CR: VOI applied by default
    assert img.meta["voi_applied"] and img.meta["inverted"]
    np.testing.assert_array_equal(img[0].numpy(), (65535 - (1000 + 3 * raw.astype(np.int64))).astype(np.float32))


def test_monochrome1_enhanced_multiframe_per_frame_rescale(tmp_path):
    """Per-frame rescale (enhanced MR, real pixels): each frame is inverted over its own rescaled stored range."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(_testfile("emri_small.dcm"))
    per_frame = [(0.5 * (k + 1), -10.0 * k) for k in range(10)]
    groups = []
    for slope, intercept in per_frame:
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, intercept, "US"
        g = Dataset()
        g.PixelValueTransformationSequence = Sequence([pvt])
        groups.append(g)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "enh.dcm")
    raw = ds.pixel_array.astype(np.float64)
    top = 2 ** int(ds.BitsStored) - 1
    img = LoadMedicalImage(multiframe="channel")(tmp_path / "enh.dcm")
    for k, (slope, intercept) in enumerate(per_frame):
        np.testing.assert_allclose(img[k].numpy(), (top - raw[k]) * slope + intercept, rtol=1e-6)


def test_write_dicom_monochrome1_round_trip_with_fixed_range(tmp_path):
    values = np.arange(40 * 30, dtype=np.float64).reshape(40, 30) % 700 + 50
    path = write_dicom(tmp_path / "m1.dcm", values, monochrome1=True)
    stored = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(stored, 65535 - values)  # inverted over the uint16 range, not the image's
    np.testing.assert_array_equal(LoadMedicalImage()(path)[0].numpy(), values.astype(np.float32))


# ------------------------------------------------------------------------------------------------ PALETTE COLOR
@pytest.mark.parametrize("name", ["OBXXXX1A_rle.dcm", "OBXXXX1A_2frame.dcm"])
def test_palette_color_is_rgb_not_indices(name):
    path = _testfile(name)
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float32)  # (rows, cols, 3) or (frames, rows, cols, 3)
    img = LoadMedicalImage()(path)
    assert float(img.max()) > 255  # 16-bit palette entries, not the 8-bit indices
    if rgb.ndim == 3:
        assert img.shape == (3, 600, 800)
        np.testing.assert_array_equal(img.numpy(), np.moveaxis(rgb, -1, 0))
    else:
        assert img.shape == (3, 600, 800, 2)
        np.testing.assert_array_equal(img.numpy(), np.moveaxis(rgb, (0, 3), (3, 0)))
    assert img.meta["palette_applied"] and img.meta["PhotometricInterpretation"] == "PALETTE COLOR"


def test_palette_color_without_a_palette_is_refused(tmp_path):
    ds = pydicom.dcmread(_testfile("OBXXXX1A_rle.dcm"))
    for kw in ("RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData"):
        delattr(ds, kw)
    ds.save_as(tmp_path / "nopalette.dcm")
    _raises_naming(tmp_path / "nopalette.dcm", match="PALETTE COLOR image whose palette cannot be applied")


def test_one_sample_image_with_a_colour_photometric_is_refused(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", np.arange(64, dtype=np.uint8).reshape(8, 8))
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "RGB"
    ds.save_as(path)
    _raises_naming(path, match="'RGB' does not describe a one-sample image")


# ------------------------------------------------------------------------------------------- DICOM series folders
def _series(folder, n=5, spacing=2.5, seed=0, patient="P1"):
    vol = np.random.default_rng(seed).integers(-1000, 1000, size=(n, 12, 10)).astype(np.int16)
    return write_dicom_series(folder, vol, spacing=(spacing, 0.8, 0.7), patient_id=patient), vol


def test_series_folder_mixing_series_is_refused_or_one_is_picked(tmp_path):
    a, vol_a = _series(tmp_path / "a", n=4, patient="PA")
    b, _ = _series(tmp_path / "b", n=3, seed=1, patient="PB")
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    for f in sorted(b.iterdir()):
        shutil.copy(f, mixed / f"b_{f.name}")
    uid_a = str(pydicom.dcmread(next(a.iterdir())).SeriesInstanceUID)
    uid_b = str(pydicom.dcmread(next(b.iterdir())).SeriesInstanceUID)
    err = _raises_naming(mixed, match="folder mixes 2 DICOM series")
    assert f"{uid_a} (4 files)" in str(err) and f"{uid_b} (3 files)" in str(err)
    picked = LoadMedicalImaged("image", series_uid=uid_a)({"image": str(mixed)})["image"]
    assert picked.shape == (1, 10, 12, 4)
    np.testing.assert_array_equal(picked[0].numpy(), np.transpose(vol_a, (2, 1, 0)).astype(np.float32))
    _raises_naming(mixed, LoadMedicalImage(series_uid="1.2.3"), match="no file of series_uid='1.2.3'")


def test_series_missing_slice_is_refused_naming_the_gap(tmp_path):
    folder, _ = _series(tmp_path / "s", n=6, spacing=2.5)
    (folder / "slice_0003.dcm").unlink()
    err = _raises_naming(folder, match="gap")
    assert "5 -> 10 mm" in str(err) and "slice_0002.dcm" in str(err) and "slice_0004.dcm" in str(err)


def test_series_two_slices_at_one_position_are_refused_naming_both(tmp_path):
    folder, _ = _series(tmp_path / "s", n=5)
    ds = pydicom.dcmread(folder / "slice_0002.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(folder / "zz_copy.dcm")
    err = _raises_naming(folder, match="duplicate slice position")
    assert "'slice_0002.dcm' and 'zz_copy.dcm' at 5 mm" in str(err)


def test_series_instance_numbers_out_of_position_order_are_refused(tmp_path):
    folder, _ = _series(tmp_path / "s", n=4)
    for name, number in (("slice_0001.dcm", 3), ("slice_0002.dcm", 2)):
        ds = pydicom.dcmread(folder / name)
        ds.InstanceNumber = number
        ds.save_as(folder / name)
    _raises_naming(folder, match="InstanceNumber order")  # 1, 3, 2, 4 by position: MONAI would stack 0, 2, 1, 3


def test_series_monochrome1_inverted_and_palette_refused(tmp_path):
    folder, vol = _series(tmp_path / "s", n=4)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(f)
    img = LoadMedicalImage()(folder)  # signed 16-bit stored, identity rescale: range [-32768, 32767]
    np.testing.assert_array_equal(img[0].numpy(), (-1 - np.transpose(vol, (2, 1, 0))).astype(np.float32))
    assert img.meta["inverted"]
    ds = pydicom.dcmread(folder / "slice_0001.dcm")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(folder / "slice_0001.dcm")
    _raises_naming(folder, match="Photometric Interpretation")


def test_clean_series_still_loads_with_its_spacing(tmp_path):
    folder, vol = _series(tmp_path / "s", n=5, spacing=3.0)
    img = LoadMedicalImage(expected_ndim=3)(folder)
    np.testing.assert_array_equal(img[0].numpy(), np.transpose(vol, (2, 1, 0)).astype(np.float32))
    np.testing.assert_allclose(img.meta["spacing"], [0.7, 0.8, 3.0], atol=1e-5)


# ------------------------------------------------------------------------------------------------------ PNG/JPEG
def test_png_truncated_inside_idat_is_refused_even_with_load_truncated_images(tmp_path, monkeypatch):
    arr = np.random.default_rng(0).integers(0, 256, size=(64, 48)).astype(np.uint8)
    data = write_png(tmp_path / "full.png", arr).read_bytes()
    idat = data.find(b"IDAT")
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: idat + 4 + 1500])  # inside the compressed rows
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some code bases set it process-wide
    _raises_naming(cut, match="truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the load
    np.testing.assert_array_equal(LoadMedicalImage()(tmp_path / "full.png")[0].numpy(), arr)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation):
    arr = np.zeros((20, 30), dtype=np.uint8)
    arr[:5, :10] = 255  # bright top-left block: where it ends up tells the orientation
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(arr).save(path, quality=100, exif=exif)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("L"), dtype=np.float32)
    img = LoadMedicalImage()(path)
    assert img.shape == (1, *expected.shape) == ((1, 20, 30) if orientation == 3 else (1, 30, 20))
    np.testing.assert_array_equal(img[0].numpy(), expected)
    assert img.meta["exif_orientation"] == orientation
    rgb = LoadMedicalImage(grey=False)(path)
    assert rgb.shape == (3, *expected.shape)


# --------------------------------------------------------------------------------------------------------- NIfTI
def test_complex_nifti_is_refused_naming_file_and_dtype(tmp_path):
    vol = (np.arange(24).reshape(2, 3, 4) + 1j * np.ones((2, 3, 4))).astype(np.complex64)
    path = write_nifti(tmp_path / "complex.nii.gz", vol)
    err = _raises_naming(path, match="complex values")
    assert "complex64" in str(err)
    write_nifti(tmp_path / "real.nii.gz", vol.real.astype(np.float32))
    assert LoadMedicalImage()(tmp_path / "real.nii.gz").shape == (1, 2, 3, 4)
