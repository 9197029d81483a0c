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
"""Files written from the real MedMNIST npz: PNG/DICOM/NIfTI datalists and DICOM writer round trips."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from monai_transfer.data import datalist_from_npz, write_dicom
from monai_transfer.transforms import LoadMedicalImage
from tests.utils import ADRENAL_NPZ, PNEUMONIA_NPZ, load_pneumonia, requires_shared_data


@requires_shared_data(PNEUMONIA_NPZ)
def test_datalist_from_npz_balanced_png(tmp_path):
    items = datalist_from_npz(PNEUMONIA_NPZ, "val", tmp_path, fmt="png", n=6, seed=1)
    assert len(items) == 6 and sorted(it["label"] for it in items) == [0, 0, 0, 1, 1, 1]
    assert all((tmp_path / f"val_{it['npz_index']:05d}.png").is_file() for it in items)
    assert len({it["patient_id"] for it in items}) == 6
    assert datalist_from_npz(PNEUMONIA_NPZ, "val", tmp_path, fmt="png", n=6, seed=1) == items


@requires_shared_data(PNEUMONIA_NPZ)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "CR", "monochrome1": True},
        {"modality": "CT", "rescale_slope": 1.0, "rescale_intercept": -1024.0},  # unsigned stored values
        {"modality": "CT", "rescale_slope": 1.0, "rescale_intercept": 0.0},  # signed 16-bit stored values
        {"modality": "DX", "monochrome1": True, "rescale_slope": 0.5, "rescale_intercept": 10.0},
    ],
)
def test_dicom_round_trip(tmp_path, kwargs):
    x = load_pneumonia("val", n=2)[0][0]
    values = x.astype(np.float64) - 1024 if kwargs["modality"] == "CT" else x.astype(np.float64)
    path = write_dicom(tmp_path / "x.dcm", values, spacing=(0.2, 0.3), **kwargs)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.Modality == kwargs["modality"]
    stored = ds.pixel_array
    if kwargs.get("monochrome1"):
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        assert np.corrcoef(stored.ravel().astype(float), values.ravel())[0, 1] < -0.99  # stored inverted
    img = LoadMedicalImage()(path)
    np.testing.assert_allclose(img[0].numpy(), values, atol=0)
    assert img.meta["inverted"] == bool(kwargs.get("monochrome1"))
    np.testing.assert_allclose(img.meta["spacing"], [0.2, 0.3])
    if kwargs["modality"] == "CT":
        assert float(img.min()) < 0 and img.meta["rescale_applied"]
        assert ds.PixelRepresentation == int(kwargs["rescale_intercept"] == 0.0)
        np.testing.assert_array_equal(stored * ds.RescaleSlope + ds.RescaleIntercept, values)


@requires_shared_data(ADRENAL_NPZ)
def test_npz_3d_formats(tmp_path):
    nii = datalist_from_npz(ADRENAL_NPZ, "val", tmp_path / "nii", fmt="nii.gz", n=2)
    with np.load(ADRENAL_NPZ) as z:
        vol = z["val_images"][nii[0]["npz_index"]]
    img = LoadMedicalImage(expected_ndim=3)(nii[0]["image"])
    np.testing.assert_array_equal(img[0].numpy(), vol.astype(np.float32))
    with pytest.raises(ValueError, match="use fmt='nii.gz' or 'dcm'"):
        datalist_from_npz(ADRENAL_NPZ, "val", tmp_path / "png", fmt="png", n=1)


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="2D"):
        write_dicom(tmp_path / "a.dcm", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        write_dicom(tmp_path / "a.dcm", np.full((2, 2), 1e6))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        datalist_from_npz(tmp_path / "missing.npz", "val", tmp_path)
