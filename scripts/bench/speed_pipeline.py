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
"""Data pipeline speed on full-size radiographs: our transforms vs a naive pydicom + numpy loop vs raw reads.

The benchmark writes ``--count`` full-size 16-bit DICOM radiographs (default 2048x2048, CR, MONOCHROME2, 12-bit
values with a Window Centre/Width) from real PneumoniaMNIST images, upsampled (bilinear) and rescaled to 0..4095,
with :func:`monai_transfer.data.write_dicom`. Then, in images/s over the same files:

- ``raw_read``: ``open(f).read()`` of each file (the page cache is warm: every file was just written and is read
  once before timing, so this is the memory-speed ceiling for any decoder);
- ``naive``: ``pydicom.dcmread`` + ``pixel_array`` + numpy window to [0, 1] + block-mean resize + normalisation;
- ``ours``: ``LoadMedicalImaged(voi="none")`` + ``WindowIntensityd(center, width)`` + ``ResizeKeepAspectd`` +
  ``BackboneNormalized(tf_efficientnet_lite0)`` (MONAI ``Compose``), through ``monai.data.Dataset``;
  (``ResizeKeepAspectd``'s default ``mode="auto"`` averages areas when shrinking);
- ``ours_gaussian_resize``: the same with ``ResizeKeepAspectd(mode="bilinear", anti_aliasing=True)`` (Gaussian
  pre-filter then bilinear, the default until this benchmark showed it dominates the cost of a 2048 -> 256 resize);
- ``ours_cache_dataset``: the same through ``CacheDataset`` (first pass = caching, second pass = reads from RAM);
- ``ours_persistent_dataset``: the same through ``PersistentDataset`` (first pass writes ``.pt`` files, second
  pass reads them from disk).

Usage (from the repository root)::

    python -m scripts.bench.speed_pipeline                      # writes benchmarks/results/speed_pipeline.json
    python -m scripts.bench.speed_pipeline --quick --output /tmp/speed_pipeline.json
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import common

__all__ = ["write_radiographs", "naive_pipeline", "our_transforms", "main"]

WINDOW = (2048.0, 4096.0)  # centre, width of the written 12-bit values


def write_radiographs(out_dir: Path, count: int, size: int) -> list[Path]:
    """``count`` ``size``x``size`` uint16 DICOMs from real images (cycled), upsampled and scaled to 12 bits."""
    import torch
    import torch.nn.functional as F

    from monai_transfer.data.npz import write_dicom

    with np.load(common.PNEUMONIA_NPZ) as z:
        src = z["train_images"][:count]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = out_dir / f"cr_{i:04d}.dcm"
        if not p.is_file():
            t = torch.from_numpy(src[i % len(src)]).float()[None, None]
            up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
            img = np.clip(up / 255.0 * 4095.0, 0, 4095).astype(np.uint16)
            write_dicom(p, img, modality="CR", window=WINDOW, patient_id=f"bench{i:04d}", spacing=(0.15, 0.15))
        paths.append(p)
    return paths


def naive_pipeline(path: Path, out_size: int) -> np.ndarray:
    """pydicom + numpy: decode, window to [0, 1], block-mean resize, normalise to [-1, 1], 3 channels."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    a = ds.pixel_array.astype(np.float32)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    a = np.clip((a - (c - w / 2)) / w, 0.0, 1.0)
    f = a.shape[0] // out_size
    a = a[: f * out_size, : f * out_size].reshape(out_size, f, out_size, f).mean(axis=(1, 3))
    a = (a - 0.5) / 0.5
    return np.repeat(a[None], 3, axis=0)


def our_transforms(out_size: int, resize_mode: str = "auto") -> Any:
    """The xray-style pipeline built from monai_transfer transforms.

    ``resize_mode="auto"`` is ``ResizeKeepAspectd``'s default: area averaging when shrinking (exact block means for
    integer factors, like the naive loop); ``"bilinear"`` adds a Gaussian anti-aliasing pre-filter.
    """
    from monai.transforms import Compose, EnsureTyped

    from monai_transfer.transforms import BackboneNormalized, LoadMedicalImaged, ResizeKeepAspectd, WindowIntensityd

    return Compose(
        [
            LoadMedicalImaged(keys="image", voi="none"),
            WindowIntensityd(keys="image", center=WINDOW[0], width=WINDOW[1]),
            ResizeKeepAspectd(keys="image", spatial_size=out_size, mode=resize_mode, anti_aliasing=True),
            BackboneNormalized(keys="image", backbone="tf_efficientnet_lite0", repeat_channels=True),
            EnsureTyped(keys="image", track_meta=False),
        ]
    )


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def _pass(ds: Any) -> float:
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "speed_pipeline.json")
    parser.add_argument("--count", type=int, default=48, help="number of DICOM files")
    parser.add_argument("--size", type=int, default=2048, help="written image size (square)")
    parser.add_argument("--out-size", type=int, default=256, help="network input size")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the DICOMs go (default: a temp folder)")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.count, args.size, args.out_size = 4, 256, 64
    threads = common.set_threads(args.threads)
    env = common.environment()
    from monai.data import CacheDataset, Dataset, PersistentDataset

    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    work = args.work_dir or Path(tmp)
    t0 = time.perf_counter()
    paths = write_radiographs(work / "dicom", args.count, args.size)
    write_s = time.perf_counter() - t0
    n = len(paths)
    mb = sum(p.stat().st_size for p in paths) / 2**20
    for p in paths:  # warm the page cache for every variant alike
        p.read_bytes()

    res: dict[str, Any] = {"images": n, "file_mb_total": round(mb, 1), "write_s": round(write_s, 1)}
    t = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    res["raw_read_s"] = time.perf_counter() - t
    naive_pipeline(paths[0], args.out_size)
    t = time.perf_counter()
    outs_naive = [naive_pipeline(p, args.out_size) for p in paths]
    res["naive_s"] = time.perf_counter() - t
    xform = our_transforms(args.out_size)
    data = [{"image": str(p)} for p in paths]
    xform(dict(data[0]))
    res["ours_s"] = _pass(Dataset(data, transform=xform))
    xform_gauss = our_transforms(args.out_size, "bilinear")
    xform_gauss(dict(data[0]))
    res["ours_gaussian_s"] = _pass(Dataset(data, transform=xform_gauss))
    t = time.perf_counter()
    cds = CacheDataset(data, transform=xform, cache_rate=1.0, num_workers=0, progress=False)
    res["cache_dataset_first_s"] = time.perf_counter() - t
    res["cache_dataset_second_s"] = _pass(cds)
    pdir = work / "persistent"
    pds = PersistentDataset(data, transform=xform, cache_dir=pdir)
    res["persistent_dataset_first_s"] = _pass(pds)
    res["persistent_dataset_second_s"] = _pass(pds)
    ours0 = np.asarray(xform(dict(data[0]))["image"])
    res["max_abs_diff_ours_vs_naive_first_image"] = float(np.abs(ours0 - outs_naive[0]).max())

    rates = {
        "raw_read": _rate(n, res["raw_read_s"]),
        "naive_pydicom_numpy": _rate(n, res["naive_s"]),
        "ours_dataset": _rate(n, res["ours_s"]),
        "ours_dataset_gaussian_resize": _rate(n, res["ours_gaussian_s"]),
        "ours_cache_dataset_first_pass": _rate(n, res["cache_dataset_first_s"]),
        "ours_cache_dataset_later_passes": _rate(n, res["cache_dataset_second_s"]),
        "ours_persistent_dataset_first_pass": _rate(n, res["persistent_dataset_first_s"]),
        "ours_persistent_dataset_later_passes": _rate(n, res["persistent_dataset_second_s"]),
    }
    res["images_per_s"] = rates
    res["ratio_ours_vs_naive"] = rates["ours_dataset"] / rates["naive_pydicom_numpy"]
    res["ratio_ours_gaussian_vs_naive"] = rates["ours_dataset_gaussian_resize"] / rates["naive_pydicom_numpy"]
    res["ratio_ours_vs_raw_read"] = rates["ours_dataset"] / rates["raw_read"]
    res["mb_per_s_raw_read"] = mb / res["raw_read_s"]
    best = max(("ours_cache_dataset_later_passes", "ours_persistent_dataset_later_passes"), key=lambda k: rates[k])
    res["caching_recommendation"] = (
        f"{best} is fastest for repeated epochs: "
        f"{rates[best] / rates['ours_dataset']:.0f}x the uncached pipeline; CacheDataset needs RAM for every "
        "preprocessed image, PersistentDataset needs disk and survives restarts"
    )
    res["config"] = {
        "size": args.size,
        "out_size": args.out_size,
        "bits": 16,
        "window": WINDOW,
        "threads": threads,
        "num_workers": 0,
        "quick": args.quick,
    }
    res["env"] = common.finish_environment(env)
    common.write_result(args.output, res)
    shutil.rmtree(tmp, ignore_errors=True)
    print({k: round(v, 1) for k, v in rates.items()})
    return res


if __name__ == "__main__":
    main()
