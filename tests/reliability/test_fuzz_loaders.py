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
"""Seeded fuzz test of ``LoadMedicalImage`` on randomly mutated copies of real DICOM and NIfTI files.

Sources: pydicom's ``CT_small.dcm`` (CT, HU rescale), ``MR_small.dcm``, ``MR_small_RLE.dcm`` (RLE compressed),
``emri_small.dcm`` (10-frame MR) and nibabel's ``anatomical.nii`` (big-endian int16 volume, also gzipped).
Mutations: random byte flips, truncations, header field corruptions (Rows, Columns, BitsAllocated, BitsStored,
SamplesPerPixel, NumberOfFrames, PixelRepresentation, RescaleSlope, PhotometricInterpretation, deleted elements,
wrong TransferSyntaxUID; NIfTI dim, datatype, bitpix, vox_offset, scl_slope, pixdim), and combinations.

Every case must end in a loaded image that agrees with its header (shape = Rows/Columns/frames, or the NIfTI dims),
is float32 and finite, or in a ``MedicalImageLoadError`` naming the file. Any other exception, a crash of the worker
process or a case running longer than ``CASE_TIMEOUT_S`` fails the test. Cases run in one spawned worker process so
that a segfault or a hang is caught instead of taking pytest down. Seed and case count: environment variables
``MONAI_TRANSFER_FUZZ_SEED`` (default 0) and ``MONAI_TRANSFER_FUZZ_CASES`` (default 150).
"""

from __future__ import annotations

import collections
import gzip
import logging
import multiprocessing
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

__all__: list[str] = []

logger = logging.getLogger(__name__)

SEED = int(os.environ.get("MONAI_TRANSFER_FUZZ_SEED", "0"))
N_CASES = int(os.environ.get("MONAI_TRANSFER_FUZZ_CASES", "150"))
CASE_TIMEOUT_S = 20.0
TOTAL_BUDGET_S = 60.0
DICOM_SOURCES = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm")
TS_UIDS = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.3.4",  # not a transfer syntax
)


# ------------------------------------------------------------------------------------------ worker (spawned process)
def _expected_shape(path: str) -> tuple[int, ...]:
    """The channel-first shape the file's own header promises (what a correct load must give)."""
    if path.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(path).shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) == 4:
            return (shape[3], *shape[:3])
        return (1, *shape)
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return (samples, rows, cols) if frames == 1 else (samples, rows, cols, frames)


def _load_case(path: str) -> tuple[str, str]:
    """Load one mutated file; returns ``(outcome, detail)`` with outcome ``loaded``, ``error`` or ``bad``."""
    import warnings

    import torch

    from monai_transfer.transforms import LoadMedicalImage, MedicalImageLoadError

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    try:
        img = LoadMedicalImage()(path)
    except MedicalImageLoadError as e:
        if path not in str(e):
            return "bad", f"MedicalImageLoadError does not name the file: {e}"
        return "error", e.reason.split("(")[0].split(":")[0].strip()[:60]
    except BaseException as e:  # noqa: B036 - any other exception type is a finding
        return "bad", f"{type(e).__name__} escaped the loader: {e}"
    want = _expected_shape(path)
    if tuple(img.shape) != want:
        return "bad", f"wrong-but-silent image: shape {tuple(img.shape)}, header says {want}"
    if img.dtype != torch.float32:
        return "bad", f"dtype {img.dtype}"
    if not bool(torch.isfinite(img).all()):
        return "bad", "non-finite values passed on"
    return "loaded", "ok"


# ------------------------------------------------------------------------------------------------- mutations
def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    n = int(rng.integers(1, 9))
    # half of the flips land in the first 1 KiB (the header), the rest anywhere
    hi = np.where(rng.random(n) < 0.5, min(1024, len(buf)), len(buf))
    for pos in (rng.random(n) * hi).astype(int):
        buf[pos] ^= int(rng.integers(1, 256))
    return bytes(buf)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _replace_ts(data: bytes, old: str, new: str) -> bytes:
    """Rewrite the (0002,0010) Transfer Syntax UID at byte level (pydicom refuses to write inconsistent files)."""
    old_b = old.encode() + b"\0" * (len(old) % 2)
    i = data.find(b"\x02\x00\x10\x00UI")
    if i < 0:
        return data
    length = struct.unpack("<H", data[i + 6 : i + 8])[0]
    new_b = new.encode() + b"\0" * (len(new) % 2)
    assert data[i + 8 : i + 8 + length].rstrip(b"\0") == old_b.rstrip(b"\0")
    return data[: i + 6] + struct.pack("<H", len(new_b)) + new_b + data[i + 8 + length :]


def _dicom_header(src: str, data: bytes, rng: np.random.Generator, out: Path) -> tuple[bytes, str]:
    import pydicom

    ds = pydicom.dcmread(src)
    field = str(
        rng.choice(
            [
                "Rows",
                "Columns",
                "BitsAllocated",
                "BitsStored",
                "SamplesPerPixel",
                "NumberOfFrames",
                "PixelRepresentation",
                "RescaleSlope",
                "PhotometricInterpretation",
                "delete",
                "TransferSyntaxUID",
            ]
        )
    )
    if field == "TransferSyntaxUID":
        new = str(rng.choice([u for u in TS_UIDS if u != str(ds.file_meta.TransferSyntaxUID)]))
        return _replace_ts(data, str(ds.file_meta.TransferSyntaxUID), new), f"TransferSyntaxUID={new}"
    if field in ("Rows", "Columns"):
        n = int(ds[field].value)
        v = int(rng.choice([0, 1, n // 2, n * 2, n - 1, 65535]))
    elif field == "BitsAllocated":
        v = int(rng.choice([1, 8, 12, 32, 64]))
    elif field == "BitsStored":
        v = int(rng.choice([0, 1, 7, 17, 40]))
    elif field == "SamplesPerPixel":
        v = int(rng.choice([0, 2, 3, 4]))
    elif field == "NumberOfFrames":
        v = str(rng.choice(["0", "2", "5", "1000", "-1"]))
    elif field == "PixelRepresentation":
        v = int(rng.choice([0, 1, 2]))
    elif field == "RescaleSlope":
        v = str(rng.choice(["0", "-1", "1e39", "NaN", "3.5e38"]))
    elif field == "PhotometricInterpretation":
        v = str(rng.choice(["RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME1", "BOGUS"]))
    else:
        field = str(rng.choice(["Rows", "Columns", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel"]))
        del ds[field]
        v = "<deleted>"
    if v != "<deleted>":
        setattr(ds, field, v)
    tmp = out.with_suffix(".tmp")
    ds.save_as(tmp, enforce_file_format=False)
    mutated = tmp.read_bytes()
    tmp.unlink()
    return mutated, f"{field}={v}"


def _nifti_header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    fields = {  # name: (offset, struct format, candidate values)
        "dim0": (40, "h", [0, 2, 5, 8, 9, -1]),
        "dim1": (42, "h", [0, -1, 1, 16, 32767]),
        "dim3": (46, "h", [0, -3, 2, 100, 32767]),
        "datatype": (70, "h", [0, 1, 2, 16, 64, 128, 999]),
        "bitpix": (72, "h", [0, 1, 8, 64]),
        "pixdim1": (80, "f", [0.0, -1.0, float("nan"), float("inf")]),
        "vox_offset": (108, "f", [0.0, -1.0, 1e9, 351.0, float("nan")]),
        "scl_slope": (112, "f", [float("nan"), float("inf"), 0.0, -1.0, 1e38]),
        "scl_inter": (116, "f", [float("nan"), 1e38]),
    }
    name = str(rng.choice(sorted(fields)))
    off, fmt, values = fields[name]
    v = values[int(rng.integers(len(values)))]
    packed = struct.pack(endian + fmt, v)
    return data[:off] + packed + data[off + len(packed) :], f"{name}={v}"


def _make_cases(tmp: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` mutated files under ``tmp``; returns ``[(path, description)]``."""
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(seed)
    sources: list[tuple[str, bytes, str]] = []
    for name in DICOM_SOURCES:
        p = get_testdata_file(name, download=False)
        if p is not None:
            sources.append((str(p), Path(p).read_bytes(), "dicom"))
    nib_dir = Path(pytest.importorskip("nibabel").__file__).parent / "tests" / "data"
    anat = nib_dir / "anatomical.nii"
    if anat.is_file():
        sources.append((str(anat), anat.read_bytes(), "nifti"))
        sources.append((str(anat) + ".gz", gzip.compress(anat.read_bytes(), mtime=0), "nifti_gz"))
    if not sources:
        pytest.skip("no DICOM/NIfTI test files installed (pydicom / nibabel test data)")
    cases = []
    for i in range(n):
        src, data, kind = sources[i % len(sources)]
        ext = ".dcm" if kind == "dicom" else (".nii" if kind == "nifti" else ".nii.gz")
        out = tmp / f"case{i:04d}_{Path(src).name.split('.')[0]}{ext}"
        how = str(rng.choice(["flip", "truncate", "header", "header+flip"]))
        if kind == "nifti_gz":  # mutate the NIfTI bytes, then gzip (gzip's CRC would reject most raw flips)
            raw = gzip.decompress(data)
            raw, desc = _nifti_header(raw, rng) if "header" in how else (raw, "")
            raw = _flip(raw, rng) if "flip" in how else raw
            raw = _truncate(raw, rng) if how == "truncate" else raw
            mutated = gzip.compress(raw, mtime=0)
        elif how == "flip":
            mutated, desc = _flip(data, rng), ""
        elif how == "truncate":
            mutated, desc = _truncate(data, rng), ""
        else:
            mutated, desc = _dicom_header(src, data, rng, out) if kind == "dicom" else _nifti_header(data, rng)
            if how == "header+flip":
                mutated = _flip(mutated, rng)
        out.write_bytes(mutated)
        cases.append((str(out), f"{Path(src).name} {how} {desc}".strip()))
    return cases


# ------------------------------------------------------------------------------------------------------- test
def test_fuzz_mutated_dicom_and_nifti(tmp_path, capsys):
    start = time.monotonic()
    cases = _make_cases(tmp_path, N_CASES, SEED)
    outcomes: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    failures: list[str] = []
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(1)
    try:
        for path, desc in cases:
            try:
                outcome, detail = pool.apply_async(_load_case, (path,)).get(timeout=CASE_TIMEOUT_S)
            except multiprocessing.TimeoutError:
                failures.append(f"{desc} ({path}): no result within {CASE_TIMEOUT_S:.0f} s (hang or worker crash)")
                break  # the worker is stuck or dead: stop here, the test fails
            outcomes[outcome] += 1
            if outcome == "error":
                reasons[detail] += 1
            elif outcome == "bad":
                failures.append(f"{desc} ({path}): {detail}")
            if time.monotonic() - start > TOTAL_BUDGET_S:
                failures.append(f"time budget of {TOTAL_BUDGET_S:.0f} s exceeded after {sum(outcomes.values())} cases")
                break
    finally:
        pool.terminate()
        pool.join()
    duration = time.monotonic() - start
    summary = (
        f"fuzz (seed {SEED}): {sum(outcomes.values())} of {len(cases)} cases in {duration:.1f} s; "
        f"outcomes {dict(outcomes)}; errors by reason {dict(reasons.most_common())}"
    )
    with capsys.disabled():  # shown in the CI log even when the test passes
        print("\n" + summary)
    logger.info(summary)
    assert not failures, f"{len(failures)} fuzz finding(s):\n" + "\n".join(failures[:20])
    assert sum(outcomes.values()) == len(cases) == N_CASES
    # the mutations must exercise both outcomes, or the fuzz is testing nothing
    assert outcomes["loaded"] > 0 and outcomes["error"] > 0
