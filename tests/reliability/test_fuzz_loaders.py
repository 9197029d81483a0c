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
"""Seeded fuzz test of ``LoadMedicalImage`` on randomly mutated DICOM, NIfTI, PNG/JPEG files and DICOM series.

Sources (built in each worker): pydicom's ``CT_small.dcm`` (CT, HU rescale), ``MR_small.dcm``, ``MR_small_RLE.dcm``
(RLE), ``emri_small.dcm`` (10-frame MR), ``OBXXXX1A_rle.dcm`` (PALETTE COLOR), a 96x96 crop of pydicom-data's
``RG3_UNCR.dcm`` (CR, MONOCHROME1, window); nibabel's ``anatomical.nii`` (also gzipped) and a complex64 NIfTI;
PNGs (8-bit, 16-bit, RGB, palette mode), JPEGs (grey with EXIF orientation 6, RGB) and a 6-slice DICOM series.

Mutations: byte flips, truncation (anywhere, or inside the image data: PNG IDAT, JPEG scan), header corruptions
(DICOM: Rows, Columns, BitsAllocated, BitsStored, SamplesPerPixel, NumberOfFrames, PixelRepresentation,
RescaleSlope, PhotometricInterpretation, a palette table removed, deleted elements, a wrong TransferSyntaxUID;
NIfTI: dim, datatype, bitpix, pixdim, vox_offset, scl_slope, scl_inter; PNG IHDR; JPEG SOF size; EXIF orientation),
crops of single-frame DICOMs, and for series: a slice dropped, duplicated, another series mixed in, one slice
flipped or truncated.

A case passes when it ends in a ``MedicalImageLoadError`` naming the file (or folder), or in a loaded float32
image with only finite values whose shape is what its own header promises, and:

- truncations and crops that load give exactly the source's values (no zero-filled rows, no per-image range);
- a complex NIfTI, a PNG/JPEG cut inside its image data, and a series with a dropped middle slice, a duplicate
  position or a second series never load;
- an unmutated series loads with the source's values.

Anything else (another exception, a silent wrong image, a worker crash, a case over ``CASE_TIMEOUT_S``) fails the
test. The workers run with Pillow's ``LOAD_TRUNCATED_IMAGES`` on, as some training code sets it process-wide. Cases
run in ``MONAI_TRANSFER_FUZZ_WORKERS`` spawned worker processes (default 2) so that a segfault or a hang is caught
instead of taking pytest down. Seed and case count: ``MONAI_TRANSFER_FUZZ_SEED`` (default 0) and
``MONAI_TRANSFER_FUZZ_CASES`` (default 1000); case ``i`` depends only on the seed and ``i``.
"""

from __future__ import annotations

import collections
import gzip
import io
import logging
import multiprocessing
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np

__all__: list[str] = []

logger = logging.getLogger(__name__)

SEED = int(os.environ.get("MONAI_TRANSFER_FUZZ_SEED", "0"))
N_CASES = int(os.environ.get("MONAI_TRANSFER_FUZZ_CASES", "1000"))
N_WORKERS = max(1, int(os.environ.get("MONAI_TRANSFER_FUZZ_WORKERS", "2")))
CASE_TIMEOUT_S = 20.0
TOTAL_BUDGET_S = 240.0  # about 40-60 s on 2 idle cores; the budget only catches a runaway slowdown
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
# (name, kind); case i uses SOURCES[i % len(SOURCES)]
SOURCES = (
    ("CT_small.dcm", "dicom"),
    ("MR_small.dcm", "dicom"),
    ("MR_small_RLE.dcm", "dicom"),
    ("emri_small.dcm", "dicom"),
    ("OBXXXX1A_rle.dcm", "dicom"),
    ("rg3_crop_m1.dcm", "dicom"),
    ("anatomical.nii", "nifti"),
    ("anatomical.nii.gz", "nifti"),
    ("complex.nii", "nifti"),
    ("grey8.png", "png"),
    ("grey16.png", "png"),
    ("rgb.png", "png"),
    ("palette.png", "png"),
    ("exif6.jpg", "jpeg"),
    ("rgb.jpg", "jpeg"),
    ("series", "series"),
)
SERIES_SHAPE = (6, 12, 10)  # slices, rows, cols


# ------------------------------------------------------------------------------------- sources (in each worker)
_SRC: dict[str, dict] = {}


def _build_sources(root: Path) -> None:
    """Write/read every source once per worker: ``_SRC[name] = {"path", "bytes", "loaded", ...}``."""
    import nibabel as nib
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    from monai_transfer.data import write_dicom_series
    from monai_transfer.transforms import LoadMedicalImage

    # one folder per worker: the workers build their sources at the same time, and a file another worker is still
    # writing must never be read as a source (a half-written JPEG made cases unbuildable, at random)
    src_dir = root / f"sources_{os.getpid()}"
    src_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    paths: dict[str, Path | None] = {}
    for name, kind in SOURCES:
        if kind == "dicom" and name != "rg3_crop_m1.dcm":
            p = get_testdata_file(name, download=False)
            paths[name] = Path(p) if p is not None else None
    rg3 = get_testdata_file("RG3_UNCR.dcm", download=False)
    if rg3 is not None:  # a real MONOCHROME1 CR, cropped small (window 550/1024 kept)
        ds = pydicom.dcmread(rg3)
        crop = np.ascontiguousarray(ds.pixel_array[800:896, 700:796])
        ds.Rows, ds.Columns = crop.shape
        ds.PixelData = crop.tobytes()
        ds.save_as(src_dir / "rg3_crop_m1.dcm")
        paths["rg3_crop_m1.dcm"] = src_dir / "rg3_crop_m1.dcm"
    nib_dir = Path(nib.__file__).parent / "tests" / "data"
    anat = nib_dir / "anatomical.nii"
    if anat.is_file():
        paths["anatomical.nii"] = anat
        (src_dir / "anatomical.nii.gz").write_bytes(gzip.compress(anat.read_bytes(), mtime=0))
        paths["anatomical.nii.gz"] = src_dir / "anatomical.nii.gz"
    vol = rng.normal(size=(8, 9, 10)) + 1j * rng.normal(size=(8, 9, 10))
    nib.save(nib.Nifti1Image(vol.astype(np.complex64), np.eye(4)), src_dir / "complex.nii")
    paths["complex.nii"] = src_dir / "complex.nii"
    yy, xx = np.mgrid[0:48, 0:40]
    grey = ((xx * 5 + yy * 3) % 256).astype(np.uint8)
    Image.fromarray(grey).save(src_dir / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 250).save(src_dir / "grey16.png")
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    Image.fromarray(rgb).save(src_dir / "rgb.png")
    Image.fromarray(grey).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(src_dir / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(grey).save(src_dir / "exif6.jpg", quality=95, exif=exif)
    Image.fromarray(rgb).save(src_dir / "rgb.jpg", quality=95)
    for name in ("grey8.png", "grey16.png", "rgb.png", "palette.png", "exif6.jpg", "rgb.jpg"):
        paths[name] = src_dir / name
    series_vol = rng.integers(-1000, 1000, size=SERIES_SHAPE).astype(np.int16)
    paths["series"] = write_dicom_series(src_dir / "series", series_vol, spacing=(2.0, 0.8, 0.7))
    write_dicom_series(src_dir / "other_series", series_vol[:3], spacing=(2.0, 0.8, 0.7), patient_id="OTHER")
    for name, _ in SOURCES:
        p = paths.get(name)
        if p is None:
            continue
        entry = {"path": p, "bytes": None if p.is_dir() else p.read_bytes()}
        try:
            entry["loaded"] = LoadMedicalImage()(p).numpy()
        except Exception as e:  # e.g. the complex NIfTI: refused (as it must be)
            entry["loaded"] = e
        _SRC[name] = entry
    _SRC["_other_series"] = {"path": src_dir / "other_series"}
    _SRC["_series_volume"] = {"loaded": np.transpose(series_vol, (2, 1, 0)).astype(np.float32)[None]}


_INIT_ERROR: list[str] = []


def _worker_init(root: str) -> None:
    import warnings

    from PIL import ImageFile

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some training code sets it; the loader must not be fooled
    try:
        _build_sources(Path(root))
    except Exception as e:  # reported by every case instead of killing the worker
        _INIT_ERROR.append(f"{type(e).__name__}: {e}")


def _source_of(i: int) -> tuple[str, str]:
    """Source of case ``i`` among those installed here (pydicom-data's RG3 may be missing)."""
    available = [s for s in SOURCES if s[0] in _SRC]
    return available[i % len(available)]


# --------------------------------------------------------------------------------------------------- mutations
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


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _dicom_header(src: Path, data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    fields = ["Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "NumberOfFrames"]
    fields += ["PixelRepresentation", "RescaleSlope", "PhotometricInterpretation", "delete", "TransferSyntaxUID"]
    if "RedPaletteColorLookupTableData" in ds:
        fields += ["palette", "palette"]
    field = str(rng.choice(fields))
    if field == "TransferSyntaxUID":
        new = str(rng.choice([u for u in TS_UIDS if u != str(ds.file_meta.TransferSyntaxUID)]))
        return _replace_ts(data, str(ds.file_meta.TransferSyntaxUID), new), f"TransferSyntaxUID={new}"
    if field == "palette":
        colour, part = str(rng.choice(["Red", "Green", "Blue"])), str(rng.choice(["Data", "Descriptor"]))
        kw = f"{colour}PaletteColorLookupTable{part}"
        del ds[kw]
        return _save(ds), f"{kw}=<deleted>"
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
        v = str(rng.choice(["RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME1", "MONOCHROME2", "BOGUS"]))
    else:
        field = str(rng.choice(["Rows", "Columns", "BitsAllocated", "PixelRepresentation", "SamplesPerPixel"]))
        if field in ds:
            del ds[field]
        v = "<deleted>"
    if v != "<deleted>":
        setattr(ds, field, v)
    return _save(ds), f"{field}={v}"


def _dicom_crop(data: bytes, rng: np.random.Generator) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """A random crop of a single-frame uncompressed grey DICOM (same header otherwise), or None when not possible."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    arr = ds.pixel_array
    r0, c0 = int(rng.integers(0, arr.shape[0] - 2)), int(rng.integers(0, arr.shape[1] - 2))
    r1, c1 = int(rng.integers(r0 + 2, arr.shape[0] + 1)), int(rng.integers(c0 + 2, arr.shape[1] + 1))
    crop = np.ascontiguousarray(arr[r0:r1, c0:c1])
    ds.Rows, ds.Columns = crop.shape
    ds.PixelData = crop.tobytes()
    return _save(ds), (r0, r1, c0, c1)


def _nifti_header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    fields = {  # name: (offset, struct format, candidate values)
        "dim0": (40, "h", [0, 2, 5, 8, 9, -1]),
        "dim1": (42, "h", [0, -1, 1, 16, 32767]),
        "dim3": (46, "h", [0, -3, 2, 100, 32767]),
        "datatype": (70, "h", [0, 1, 2, 16, 32, 64, 128, 1792, 999]),
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


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """``[(type, offset of the length field, data length)]`` of a PNG."""
    pos, out = 8, []
    while pos + 8 <= len(data):
        n = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append((data[pos + 4 : pos + 8], pos, n))
        pos += 12 + n
    return out


def _image_data_end(data: bytes, kind: str) -> tuple[int, int]:
    """``(start, end)`` byte range of the compressed pixels: PNG IDAT data, JPEG scan (up to the EOI marker)."""
    if kind == "png":
        idat = [(p, n) for t, p, n in _png_chunks(data) if t == b"IDAT"]
        return idat[0][0] + 8, idat[-1][0] + 8 + idat[-1][1]
    return data.find(b"\xff\xda") + 2, data.rfind(b"\xff\xd9")


def _image_header(data: bytes, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Corrupt a PNG IHDR field (CRC fixed or not) or a JPEG SOF size, or rewrite the EXIF orientation."""
    what = str(rng.choice(["size", "size", "exif"] + (["depth", "colour", "interlace"] if kind == "png" else [])))
    if what == "exif":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            exif = im.getexif()
            v = int(rng.choice([0, 2, 3, 5, 6, 7, 8, 9, 65535]))
            exif[0x0112] = v
            buf = io.BytesIO()
            im.save(buf, format=im.format, exif=exif, **({"quality": 95} if kind == "jpeg" else {}))
        return buf.getvalue(), f"exif_orientation={v}"
    if kind == "jpeg":
        sof = 2  # walk the marker segments up to the frame header (SOF0 baseline / SOF2 progressive)
        while data[sof : sof + 2] not in (b"\xff\xc0", b"\xff\xc2"):
            sof += 2 + struct.unpack(">H", data[sof + 2 : sof + 4])[0]
        off = sof + 5 + (2 if rng.random() < 0.5 else 0)  # height or width
        v = int(rng.choice([0, 1, 7, 4000, 65535]))
        return data[:off] + struct.pack(">H", v) + data[off + 2 :], f"SOF@{off - sof}={v}"
    ihdr = 16  # IHDR data: width(4) height(4) depth colour compression filter interlace
    off, fmt, values = {
        "size": (ihdr + int(rng.choice([0, 4])), ">I", [0, 1, 7, 100000, 2**31 - 1]),
        "depth": (ihdr + 8, ">B", [0, 1, 2, 4, 16, 3]),
        "colour": (ihdr + 9, ">B", [0, 1, 2, 3, 4, 6, 7]),
        "interlace": (ihdr + 12, ">B", [1, 2]),
    }[what]
    v = int(rng.choice(values))
    packed = struct.pack(fmt, v)
    out = bytearray(data[:off] + packed + data[off + len(packed) :])
    fix_crc = rng.random() < 0.8
    if fix_crc:
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out), f"IHDR {what}@{off}={v}{'' if fix_crc else ' (bad CRC)'}"


# ---------------------------------------------------------------------------------------------- one case (worker)
def _expected_shape(path: Path, kind: str) -> tuple[int, ...]:
    """The channel-first shape the file's own header promises (what a correct load must give)."""
    if kind == "nifti":
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(path).shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) == 4:
            return (shape[3], *shape[:3])
        return (1, *shape)
    if kind in ("png", "jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            if int(im.getexif().get(0x0112, 1) or 1) in (5, 6, 7, 8):
                w, h = h, w
        return (1, h, w)
    import pydicom

    if kind == "series":
        files = sorted(f for f in path.iterdir() if f.is_file())
        ds = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        return (1, int(ds.Columns), int(ds.Rows), len(files))
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        samples = 3  # the palette is applied: RGB
    return (samples, rows, cols) if frames == 1 else (samples, rows, cols, frames)


def _make_case(i: int, seed: int, out_dir: Path) -> tuple[Path, str, str, dict]:
    """Build case ``i``: ``(path, kind, description, oracle)``; the oracle says what a load must satisfy."""
    name, kind = _source_of(i)
    rng = np.random.default_rng([seed, i])
    src = _SRC[name]
    stem = f"case{i:04d}_{name.split('.')[0]}"
    oracle: dict = {}
    if kind == "series":
        how = str(rng.choice(["clean", "drop", "duplicate", "mix", "flip", "truncate"]))
        out = out_dir / stem
        shutil.copytree(src["path"], out)
        files = sorted(out.iterdir())
        k = int(rng.integers(1, len(files) - 1))  # a middle slice
        if how == "clean":
            oracle["equals"] = _SRC["_series_volume"]["loaded"]
        elif how == "drop":
            files[k].unlink()
            oracle["must_fail"] = "a middle slice is missing"
        elif how == "duplicate":
            import pydicom
            from pydicom.uid import generate_uid

            ds = pydicom.dcmread(files[k])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = 100 + k
            ds.save_as(out / "duplicate.dcm")
            oracle["must_fail"] = "two slices at one position"
        elif how == "mix":
            for f in sorted(_SRC["_other_series"]["path"].iterdir()):
                shutil.copy(f, out / f"other_{f.name}")
            oracle["must_fail"] = "two series in one folder"
        else:
            data = files[k].read_bytes()
            files[k].write_bytes(_flip(data, rng) if how == "flip" else _truncate(data, rng))
        return out, kind, f"{name} {how} slice {k}", oracle

    data = src["bytes"]
    ext = "".join(Path(name).suffixes)
    out = out_dir / f"{stem}{ext}"
    gz = name.endswith(".gz")
    raw = gzip.decompress(data) if gz else data
    choices = ["flip", "truncate", "header", "header+flip"]
    if kind in ("png", "jpeg"):
        choices += ["truncate_data", "truncate_data"]
    if kind == "dicom":
        choices += ["crop"]
    how = str(rng.choice(choices))
    desc = ""
    if how == "crop":
        cropped = _dicom_crop(raw, rng)
        if cropped is None:
            how = "flip"
        else:
            raw, (r0, r1, c0, c1) = cropped
            desc = f"[{r0}:{r1}, {c0}:{c1}]"
            if not isinstance(src["loaded"], Exception):
                oracle["equals"] = src["loaded"][:, r0:r1, c0:c1]
    if "header" in how:
        if kind == "dicom":
            raw, desc = _dicom_header(src["path"], raw, rng)
        elif kind == "nifti":
            raw, desc = _nifti_header(raw, rng)
        else:
            raw, desc = _image_header(raw, kind, rng)
    if "flip" in how:
        raw = _flip(raw, rng)
    if how == "truncate":
        raw = _truncate(raw, rng)
        if not isinstance(src["loaded"], Exception):
            oracle["equals"] = src["loaded"]  # only a cut that removes no pixel data may load
    if how == "truncate_data":
        start, end = _image_data_end(raw, kind)
        cut = int(rng.integers(start, end))
        raw = raw[:cut]
        desc = f"cut at {cut} inside the image data [{start}, {end})"
        oracle["equals"] = src["loaded"]  # loads only when every row was decoded (e.g. only a checksum cut)
    if kind == "nifti":
        oracle["no_complex"] = True
    out.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return out, kind, f"{name} {how} {desc}".strip(), oracle


def _run_case(i: int, seed: int, out_dir: str) -> tuple[str, str, str, str]:
    """Build and load case ``i``; returns ``(kind, description, outcome, detail)``, outcome loaded/error/bad."""
    import torch

    from monai_transfer.transforms import LoadMedicalImage, MedicalImageLoadError

    if _INIT_ERROR:
        return "?", f"case {i}", "bad", f"the worker could not build the sources: {_INIT_ERROR[0]}"
    try:
        path, kind, desc, oracle = _make_case(i, seed, Path(out_dir))
    except Exception as e:  # a bug of the fuzz harness itself, not of the loader
        return "?", f"case {i}", "bad", f"could not build the case: {type(e).__name__}: {e}"
    desc = f"{desc} ({path})"
    outcome, detail = "loaded", "ok"
    try:
        img = LoadMedicalImage()(path)
    except MedicalImageLoadError as e:
        if str(path) not in str(e):
            outcome, detail = "bad", f"MedicalImageLoadError does not name the file: {e}"
        else:
            outcome, detail = "error", e.reason.split("(")[0].split(":")[0].strip()[:60]
    except BaseException as e:  # noqa: B036 - any other exception type is a finding
        outcome, detail = "bad", f"{type(e).__name__} escaped the loader: {e}"
    else:
        detail = _check_loaded(img, path, kind, oracle, torch)
        outcome = "loaded" if detail == "ok" else "bad"
    if outcome != "bad":  # keep the inputs of findings for reproduction
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return kind, desc, outcome, detail


def _check_loaded(img, path: Path, kind: str, oracle: dict, torch) -> str:
    if "must_fail" in oracle:
        return f"wrong-but-silent image: loaded although {oracle['must_fail']}"
    try:
        want = _expected_shape(path, kind)
    except Exception as e:
        return f"loaded a file whose header cannot be read back ({type(e).__name__}: {e})"
    if tuple(img.shape) != want:
        return f"wrong-but-silent image: shape {tuple(img.shape)}, header says {want}"
    if img.dtype != torch.float32:
        return f"dtype {img.dtype}"
    if not bool(torch.isfinite(img).all()):
        return "non-finite values passed on"
    if oracle.get("no_complex"):
        import nibabel as nib

        if np.dtype(nib.load(path).get_data_dtype()).kind == "c":
            return "wrong-but-silent image: a complex NIfTI loaded (imaginary part dropped)"
    if "equals" in oracle:
        expected = oracle["equals"]
        if tuple(expected.shape) != tuple(img.shape) or not np.array_equal(img.numpy(), expected):
            diff = int((img.numpy() != expected).sum()) if tuple(expected.shape) == tuple(img.shape) else -1
            return f"wrong-but-silent image: values differ from the source's ({diff} pixels)"
    return "ok"


# ------------------------------------------------------------------------------------------------------- test
def test_fuzz_mutated_loaders(tmp_path, capsys):
    """``N_CASES`` seeded mutated DICOM/NIfTI/PNG/JPEG files and DICOM series: 0 crashes, 0 silent wrong images."""
    start = time.monotonic()
    outcomes: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    by_format: collections.Counter = collections.Counter()
    failures: list[str] = []
    ctx = multiprocessing.get_context("spawn")
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    pool = ctx.Pool(N_WORKERS, initializer=_worker_init, initargs=(str(tmp_path),))
    try:
        pending = [pool.apply_async(_run_case, (i, SEED, str(cases_dir))) for i in range(N_CASES)]
        for i, res in enumerate(pending):
            try:
                kind, desc, outcome, detail = res.get(timeout=CASE_TIMEOUT_S + (60.0 if i < N_WORKERS else 0.0))
            except multiprocessing.TimeoutError:
                failures.append(f"case {i}: no result within {CASE_TIMEOUT_S:.0f} s (hang or worker crash)")
                break  # a worker is stuck or dead: stop here, the test fails
            outcomes[outcome] += 1
            by_format[f"{kind}:{outcome}"] += 1
            if outcome == "error":
                reasons[detail] += 1
            elif outcome == "bad":
                failures.append(f"case {i} {desc}: {detail}")
            if time.monotonic() - start > TOTAL_BUDGET_S:
                failures.append(f"time budget of {TOTAL_BUDGET_S:.0f} s exceeded after {sum(outcomes.values())} cases")
                break
    finally:
        pool.terminate()
        pool.join()
    duration = time.monotonic() - start
    summary = (
        f"fuzz (seed {SEED}): {sum(outcomes.values())} of {N_CASES} cases in {duration:.1f} s on {N_WORKERS} "
        f"worker(s); outcomes {dict(outcomes)}; by format {dict(sorted(by_format.items()))}; "
        f"errors by reason {dict(reasons.most_common())}"
    )
    with capsys.disabled():  # shown in the CI log even when the test passes
        print("\n" + summary)
    logger.info(summary)
    assert not failures, f"{len(failures)} fuzz finding(s):\n" + "\n".join(failures[:20])
    assert sum(outcomes.values()) == N_CASES
    # the mutations must exercise both outcomes, or the fuzz is testing nothing
    assert outcomes["loaded"] > 0 and outcomes["error"] > 0
