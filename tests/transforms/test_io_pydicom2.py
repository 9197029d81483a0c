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
"""The DICOM loader with pydicom 2.4 (MONAI Label's environment) gives what it gives with pydicom 3 (this one).

``setup.cfg`` states ``pydicom>=2.4``: MONAI Label's environment must keep pydicom 2 (its ``pydicom-seg`` fails with
pydicom 3), and it serves DICOM studies through this loader. The label environment's python
(``$MONAI_TRANSFER_LABEL_PYTHON``, see ``scripts/setup_label_env.sh``) loads real DICOM files of every decoding
path (rescale to HU, Modality LUT, VOI LUT sequence, window, MONOCHROME1, multi-frame, RLE, JPEG baseline, JPEG 2000,
RGB, PALETTE COLOR) and a file written there by :func:`monai_transfer.data.write_dicom`; this process loads the same
files with pydicom 3, and the arrays and metadata must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from monai_transfer.transforms import LoadMedicalImage
from tests.label.test_monailabel_app import LABEL_PYTHON

pytestmark = [
    pytest.mark.label,
    pytest.mark.skipif(
        LABEL_PYTHON is None,
        reason="the pydicom 2 environment is MONAI Label's: run `bash scripts/setup_label_env.sh .venv-label` or set "
        "MONAI_TRANSFER_LABEL_PYTHON to its python",
    ),
]

#: (pydicom / pydicom-data test file, loader options): one of each decoding path of the loader.
CASES = [
    ("CT_small.dcm", {}),  # CT: rescale slope/intercept to HU
    ("MR_small.dcm", {"voi": "always"}),  # window centre/width
    ("RG1_UNCI.dcm", {}),  # CR chest, MONOCHROME1, 15-bit, window applied (radiograph)
    ("RG1_J2KR.dcm", {}),  # the same film, JPEG 2000 lossless
    ("RG3_UNCI.dcm", {"voi": "none"}),  # MONOCHROME1 inverted over the stored range
    ("vlut_04.dcm", {"voi": "always"}),  # VOI LUT sequence
    ("mlut_18.dcm", {}),  # Modality LUT sequence
    ("emri_small.dcm", {}),  # 10-frame MR
    ("MR_small_RLE.dcm", {}),  # RLE lossless
    ("SC_rgb_jpeg_dcmtk.dcm", {"grey": False}),  # JPEG baseline, YBR_FULL colour
    ("SC_rgb.dcm", {"grey": False}),  # uncompressed RGB
    ("OBXXXX1A.dcm", {"grey": False}),  # PALETTE COLOR
]
META_KEYS = ("Modality", "PhotometricInterpretation", "rescale_applied", "voi_applied", "inverted", "palette_applied")

_SCRIPT = """
import json, sys
import numpy as np
import pydicom
from monai_transfer.data import write_dicom
from monai_transfer.transforms import LoadMedicalImage

cases, out, KEYS = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
image = np.arange(24 * 20, dtype=np.float64).reshape(24, 20) * 3.0 - 700.0
written = write_dicom(out + "/written_by_pydicom2.dcm", image, modality="CT", monochrome1=True, rescale_slope=0.5,
                      rescale_intercept=-1024.0, window=(40, 400))
report = {"pydicom": pydicom.__version__, "meta": {}}
arrays = {}
for i, (path, options) in enumerate(cases + [[str(written), {}]]):
    img = LoadMedicalImage(**options)(path)
    arrays[f"a{i}"] = img.numpy()
    report["meta"][path] = {k: (v.item() if hasattr(v, "item") else v) for k, v in img.meta.items() if k in KEYS}
np.savez(out + "/arrays.npz", **arrays)
print(json.dumps(report))
"""


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path, f"{name}: not installed (pydicom's test files and pydicom-data, the [test] extra)"
    return str(path)


def test_loader_agrees_between_pydicom_2_and_3(tmp_path):
    assert int(pydicom.__version__.split(".")[0]) >= 3, "this side of the comparison runs pydicom 3"
    cases = [[_testfile(name), options] for name, options in CASES]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(LABEL_PYTHON), "-c", _SCRIPT, json.dumps(cases), str(tmp_path), json.dumps(META_KEYS)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["pydicom"].startswith("2."), f"the label environment has pydicom {report['pydicom']}, not 2.x"
    written = tmp_path / "written_by_pydicom2.dcm"
    with np.load(tmp_path / "arrays.npz") as z:
        theirs = [z[f"a{i}"] for i in range(len(cases) + 1)]
    for (path, options), other in zip(cases + [[str(written), {}]], theirs):
        img = LoadMedicalImage(**options)(path)
        ours = img.numpy()
        name = Path(path).name
        assert ours.shape == other.shape, f"{name}: shape {ours.shape} with pydicom 3, {other.shape} with pydicom 2"
        np.testing.assert_allclose(ours, other, rtol=1e-6, atol=1e-4, err_msg=f"{name} ({options})")
        meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in img.meta.items() if k in META_KEYS}
        assert meta == report["meta"][path], name
    # the file written with pydicom 2 holds what write_dicom was given (HU, MONOCHROME1 inverted back)
    image = np.arange(24 * 20, dtype=np.float64).reshape(24, 20) * 3.0 - 700.0
    np.testing.assert_allclose(LoadMedicalImage(voi="none")(str(written)).numpy()[0], image)
    ds = pydicom.dcmread(written)
    assert (ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID) == ("MONOCHROME1", "1.2.840.10008.1.2.1")
