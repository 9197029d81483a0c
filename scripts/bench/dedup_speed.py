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
"""Near-duplicate finder (``monai_transfer.data.duplicates``): speed of the hash pass, and recall/precision.

Speed: images/s of :func:`~monai_transfer.data.duplicates.hash_files` (load with ``LoadMedicalImage``, resize,
DCT) with ``--workers`` threads (default 2, the build machine's 2 cores) on

- ``--png-count`` 256x256 8-bit PNGs (real PneumoniaMNIST images, upsampled), and
- ``--dicom-count`` 2048x2048 16-bit CR DICOMs (written by ``speed_pipeline.write_radiographs``),

each once with an empty cache (``cold``) and once again with the cache just written (``cached``: neither pixels nor
bytes are read), and, for scale, one pass of the loader alone (``LoadMedicalImage``, same threads), i.e. what one
uncached training epoch spends decoding the same files.

Accuracy: ``--bases`` real PneumoniaMNIST train images (upsampled to 256x256; radiographs are the hard case, they
all look alike at low frequencies) and five near-duplicates of each: resized to 60 %, JPEG re-encoded (quality 70),
2 % cropped (random offset), brightness x1.15, an exact copy: ``5 * bases`` true pairs. All ``6 * bases`` images
are hashed in memory, pairs found with the default thresholds and clustered. Recall: share of true pairs that end in
one cluster (per variant too); precision: share of the found pairs that are true pairs. MedMNIST keeps several
films per child, so a "false" pair may be two real films of one patient: precision is a lower bound.

Usage (from the repository root)::

    python -m scripts.bench.dedup_speed          # writes benchmarks/results/dedup.json
    python -m scripts.bench.dedup_speed --quick --output /tmp/dedup.json
"""

from __future__ import annotations

import argparse
import io
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

from scripts.bench import common, speed_pipeline

__all__ = ["VARIANTS", "make_variant", "accuracy", "hash_speed", "main"]

VARIANTS = ("resize", "jpeg", "crop2", "bright", "copy")


def make_variant(im: Any, kind: str, rng: np.random.Generator) -> Any:
    """A near-duplicate of the PIL image ``im``: ``resize``, ``jpeg``, ``crop2``, ``bright`` or ``copy``."""
    from PIL import Image, ImageEnhance

    w, h = im.size
    if kind == "resize":
        return im.resize((int(w * 0.6), int(h * 0.6)), Image.BILINEAR)
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=70)
        return Image.open(io.BytesIO(buf.getvalue())).convert("L")
    if kind == "crop2":
        cw, ch = round(0.02 * w), round(0.02 * h)
        ox, oy = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
        return im.crop((ox, oy, ox + w - cw, oy + h - ch))
    if kind == "bright":
        return ImageEnhance.Brightness(im).enhance(1.15)
    if kind == "copy":
        return im.copy()
    raise ValueError(f"unknown variant {kind!r}; expected one of {VARIANTS}.")


def _bases(n: int, size: int = 256) -> list[Any]:
    from PIL import Image

    with np.load(common.PNEUMONIA_NPZ) as z:
        x = z["train_images"][:n]
    return [Image.fromarray(a).resize((size, size), Image.BILINEAR) for a in x]


def accuracy(n_bases: int, seed: int = 0) -> dict[str, Any]:
    """Recall and precision of the default finder on ``n_bases`` originals and 5 near-duplicates of each."""
    from monai_transfer.data.duplicates import (
        DEFAULT_MAX_DISTANCE,
        DEFAULT_MIN_SIMILARITY,
        cluster_pairs,
        image_key,
        near_duplicate_pairs,
    )

    rng = np.random.default_rng(seed)
    images, origin, kind = [], [], []
    for b, im in enumerate(_bases(n_bases)):
        images.append(im)
        origin.append(b)
        kind.append("original")
        for k in VARIANTS:
            images.append(make_variant(im, k, rng))
            origin.append(b)
            kind.append(k)
    t = time.perf_counter()
    keys = [image_key(np.asarray(im, dtype=np.float32)[None]) for im in images]
    hash_s = time.perf_counter() - t
    hashes = np.array([k[0] for k in keys], dtype=np.uint64)
    sigs = np.stack([k[1] for k in keys])
    t = time.perf_counter()
    pairs, _ = near_duplicate_pairs(hashes, signatures=sigs)
    clusters = cluster_pairs(len(images), pairs)
    pair_s = time.perf_counter() - t
    cl = np.full(len(images), -1)
    for c, m in enumerate(clusters):
        cl[m] = c
    org = np.asarray(origin)
    true_pairs = [(i - 1 - j, i) for i in range(len(images)) for j in range(5) if i % 6 == j + 1]
    found = [cl[a] >= 0 and cl[a] == cl[b] for a, b in true_pairs]
    per_kind = {k: float(np.mean([f for f, (_, b) in zip(found, true_pairs) if kind[b] == k])) for k in VARIANTS}
    linked_true = int(sum(org[a] == org[b] for a, b, _ in pairs))
    hamming_only, _ = near_duplicate_pairs(hashes)
    return {
        "n_images": len(images),
        "n_true_pairs": len(true_pairs),
        "n_found_pairs": int(len(pairs)),
        "recall": float(np.mean(found)),
        "recall_per_variant": per_kind,
        "precision": linked_true / len(pairs) if len(pairs) else float("nan"),
        "false_pairs": int(len(pairs) - linked_true),
        "unrelated_pairs": int(len(images) * (len(images) - 1) // 2 - n_bases * 15),
        "false_pairs_hamming_only": int(sum(org[a] != org[b] for a, b, _ in hamming_only)),
        "max_distance": DEFAULT_MAX_DISTANCE,
        "min_similarity": DEFAULT_MIN_SIMILARITY,
        "in_memory_hash_images_per_s": len(images) / hash_s,
        "pair_and_cluster_s": pair_s,
    }


def _write_pngs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, im in enumerate(_bases(n)):
        p = folder / f"cxr_{i:04d}.png"
        im.save(p)
        out.append(p)
    return out


def hash_speed(paths: list[Path], workers: int, cache_dir: Path) -> dict[str, float]:
    """Images/s of ``hash_files`` with an empty cache and then with the cache it wrote."""
    from monai_transfer.data.duplicates import hash_files

    shutil.rmtree(cache_dir, ignore_errors=True)
    hash_files(paths[:1], cache_dir=None, num_workers=0)  # import and warm-up, not timed
    t = time.perf_counter()
    cold = hash_files(paths, cache_dir=cache_dir, num_workers=workers)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = hash_files(paths, cache_dir=cache_dir, num_workers=workers)
    warm_s = time.perf_counter() - t
    from concurrent.futures import ThreadPoolExecutor

    from monai_transfer.transforms.io.array import LoadMedicalImage

    loader = LoadMedicalImage(nan_policy="ignore")
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        list(ex.map(lambda p: loader(p).shape, paths))
    load_s = time.perf_counter() - t
    if cold.errors or warm.n_cached != len(paths):
        raise RuntimeError(f"hash pass failed: {cold.errors} / cached {warm.n_cached} of {len(paths)}")
    return {
        "images": len(paths),
        "cold_s": cold_s,
        "cold_images_per_s": len(paths) / cold_s,
        "cached_s": warm_s,
        "cached_images_per_s": len(paths) / warm_s,
        "load_only_s": load_s,
        "load_only_images_per_s": len(paths) / load_s,
        "hash_pass_vs_one_load_pass": cold_s / load_s,
        "mb_total": sum(p.stat().st_size for p in paths) / 2**20,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "dedup.json")
    parser.add_argument("--png-count", type=int, default=1000)
    parser.add_argument("--dicom-count", type=int, default=32)
    parser.add_argument("--dicom-size", type=int, default=2048)
    parser.add_argument("--bases", type=int, default=250, help="originals of the accuracy set (5 pairs each)")
    parser.add_argument("--workers", type=int, default=2, help="hashing threads (default 2)")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.png_count, args.dicom_count, args.dicom_size, args.bases = 6, 2, 512, 12
    threads = common.set_threads(args.threads if args.threads is not None else args.workers)
    env = common.environment()

    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    try:
        res: dict[str, Any] = {"accuracy": accuracy(args.bases)}
        pngs = _write_pngs(tmp / "png", args.png_count)
        res["speed_png_256"] = hash_speed(pngs, args.workers, tmp / "cache_png")
        dicoms = speed_pipeline.write_radiographs(tmp / "dicom", args.dicom_count, args.dicom_size)
        res["speed_dicom"] = hash_speed(dicoms, args.workers, tmp / "cache_dicom")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["config"] = {
        "workers": args.workers,
        "threads": threads,
        "dicom_size": args.dicom_size,
        "bases": args.bases,
        "variants": list(VARIANTS),
        "quick": args.quick,
    }
    res["env"] = common.finish_environment(env)
    common.write_result(args.output, res)
    a = res["accuracy"]
    print(
        f"recall {a['recall']:.4f} precision {a['precision']:.4f} on {a['n_true_pairs']} pairs; "
        f"PNG {res['speed_png_256']['cold_images_per_s']:.1f} img/s, "
        f"DICOM {res['speed_dicom']['cold_images_per_s']:.2f} img/s (cold), "
        f"cached {res['speed_png_256']['cached_images_per_s']:.0f} / "
        f"{res['speed_dicom']['cached_images_per_s']:.0f} img/s"
    )
    return res


if __name__ == "__main__":
    main()
