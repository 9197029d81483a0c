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
"""Near-duplicate finder, round 2: copies that were *processed*, hard negatives, thresholds, cost.

Images (written as files and read back by :func:`~monai_transfer.data.duplicates.hash_files`, as the audit does):

- ``--bases`` real PneumoniaMNIST train films (drawn with ``--seed``, upsampled to 256x256) and one copy of each per
  variant family: gamma 0.6-0.9 or 1.15-1.6, contrast stretch (2-10 / 90-98 % percentiles), histogram equalisation,
  Gaussian blur sigma 1-2, unsharp mask (radius 2, 100-200 %), another window (centre at the 35-65th percentile,
  width 35-60 % of the range, clipped), JPEG quality 30, Gaussian noise (sigma 5-13 grey levels), rotation by
  1-5 degrees, crop of 5-10 % per side pair (random offset), horizontal flip (reported separately);
- hard negatives: ``--volumes`` AdrenalMNIST3D shape masks, two neighbouring slices (k, k+1 along the first axis,
  pixel-identical pairs dropped) of each, upsampled to 256x256; grey-level MR: the 24 axial slices (128x96, 2.2 mm
  apart) of nibabel's ``example4d.nii.gz`` test EPI, 23 neighbouring pairs (k, k+1) taken disjointly from its two
  time points (pair k from time point k mod 2, half k mod 2), saved as 8-bit PNG; and the films of different
  children (every pair of two different bases is a negative).

The bases and volumes are split by ``--seed`` into a **tuning** half and a **reporting** half. Per family, a pool is
the half's bases, that family's copies and the half's slices (so each copy meets its original alone, as in a real
set). Stage 2's two correlation thresholds are the package defaults (chosen on the tuning half in round 1); the
final verification's residual threshold (``max_residual``: every stage-1 and stage-2 link must have a fine residual
at most this) is chosen on the tuning half over ``RESIDUAL_GRID`` among the points whose smallest recall over the
processed-copy families is at least 0.98 and whose precision on films of different children is at least 0.995: the
highest smallest precision over the hard-negative slice families, ties to the larger threshold (if no point reaches
the recall, the highest smallest recall). Recall, precision and false links are then reported on the reporting half
at that point, at the package defaults, without the verification (round 1) and with stage 1 alone.

Real resolution: the films above are 28-pixel images upsampled to 256x256, much smoother than a scan, so the same
families are also applied (:data:`REAL_COPIES` copies each) to real DICOM images at their own size
(:data:`REAL_SOURCES`: pydicom's CT and MR test images, 128x128 and 64x64, and the ``pydicom-data`` CT, MR and CR
radiographs, 512 to 1955 pixels, when installed) and run through ``find_duplicates`` at the package defaults: recall
per family, the largest final-verification residual and the clusters that merge two different originals (nothing is
chosen on them).

Cost: the hash pass over all files with an empty cache against one plain pass of ``LoadMedicalImage`` over the same
files (same threads; each run twice, interleaved, the faster kept), the pairing time (both stages and the final
verification, all files at once), and a second ``hash_files`` run through a loader that counts its calls (image
reads).

Usage (from the repository root)::

    python -m scripts.bench.dedup_variants          # writes benchmarks/results/dedup_variants.json and .md
    python -m scripts.bench.dedup_variants --quick --output /tmp/dedup_variants.json
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

from scripts.bench import common

__all__ = ["FAMILIES", "PROCESSED", "make_copy", "markdown_body", "main"]

#: processed-copy families (the recall target applies to each) and the flip, reported separately
PROCESSED = (
    "gamma",
    "contrast",
    "histeq",
    "blur",
    "unsharp",
    "window",
    "jpeg30",
    "noise",
    "rotate",
    "crop10",
)
FAMILIES = (*PROCESSED, "flip")
#: hard-negative families: neighbouring slices of one volume (binary masks, grey-level MR)
SLICES = ("slice", "mr_slice")
#: residual thresholds tried on the tuning half
RESIDUAL_GRID = np.round(np.arange(0.002, 0.02001, 0.0005), 4)
#: residuals below it are not aligned (below the grid: they are linked at every grid point)
_SKIP_BELOW = 0.001


def make_copy(im: Any, kind: str, rng: np.random.Generator) -> Any:
    """A processed copy (8-bit PIL image) of the 8-bit grey PIL image ``im`` (see the module docstring)."""
    from PIL import Image, ImageFilter, ImageOps

    a = np.asarray(im, dtype=np.float64) / 255.0
    if kind == "gamma":
        a = a ** rng.choice([rng.uniform(0.6, 0.9), rng.uniform(1.15, 1.6)])
    elif kind == "contrast":
        lo, hi = np.percentile(a, [rng.uniform(2, 10), rng.uniform(90, 98)])
        a = (a - lo) / max(hi - lo, 1e-6)
    elif kind == "window":
        c, w = np.percentile(a, rng.uniform(35, 65)), rng.uniform(0.35, 0.6) * (a.max() - a.min())
        a = (a - c) / w + 0.5
    elif kind == "noise":
        a = a + rng.normal(0, rng.uniform(5, 13) / 255.0, a.shape)
    elif kind == "blur":
        return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 2))))
    elif kind == "unsharp":
        return im.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(100, 201)), threshold=0))
    elif kind == "histeq":
        return ImageOps.equalize(im)
    elif kind == "jpeg30":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=30)
        return Image.open(io.BytesIO(buf.getvalue())).convert("L")
    elif kind == "rotate":
        return im.rotate(float(rng.choice([-1, 1]) * rng.uniform(1, 5)), Image.BILINEAR)
    elif kind == "crop10":
        w, h = im.size
        cw, ch = round(rng.uniform(0.05, 0.1) * w), round(rng.uniform(0.05, 0.1) * h)
        ox, oy = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
        return im.crop((ox, oy, ox + w - cw, oy + h - ch))
    elif kind == "flip":
        return ImageOps.mirror(im)
    else:
        raise ValueError(f"unknown family {kind!r}; expected one of {FAMILIES}.")
    return Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


def _slices(n_volumes: int, rng: np.random.Generator) -> tuple[list[Any], list[float]]:
    """Two neighbouring, not identical, non-empty slices of each of ``n_volumes`` masks; their Dice overlaps."""
    from PIL import Image

    with np.load(common.ADRENAL_NPZ) as z:
        vols = z["train_images"]
    out, dice = [], []
    for v in rng.permutation(len(vols)):
        area = (vols[v] > 0).sum(axis=(1, 2))
        ks = [k for k in np.flatnonzero(area > 100) if area[k + 1] > 100 and (vols[v][k] != vols[v][k + 1]).any()]
        if not ks:
            continue
        k = int(ks[len(ks) // 2])
        a, b = vols[v][k] > 0, vols[v][k + 1] > 0
        dice.append(float(2 * (a & b).sum() / (a.sum() + b.sum())))
        out += [Image.fromarray(vols[v][k + d]).resize((256, 256), Image.BILINEAR) for d in (0, 1)]
        if len(dice) == n_volumes:
            break
    return out, dice


def _mr_slices() -> list[tuple[Any, Any, int]]:
    """Neighbouring axial slices of nibabel's ``example4d.nii.gz`` (see the module docstring): ``(k, k+1, half)``
    8-bit PIL images."""
    import nibabel as nib
    from PIL import Image

    vol = np.asarray(nib.load(Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz").dataobj, np.float64)
    vol = np.clip(vol / np.percentile(vol, 99.5) * 255.0, 0, 255).astype(np.uint8)
    return [
        (Image.fromarray(vol[:, :, k, k % 2]), Image.fromarray(vol[:, :, k + 1, k % 2]), k % 2)
        for k in range(vol.shape[2] - 1)
    ]


def _add_mr(folder: Path, out: dict[str, list]) -> None:
    """Write the MR slice pairs (:func:`_mr_slices`) and append their roles to ``out``."""
    first = max(out["volume"]) + 1
    for k, (a, b, half) in enumerate(_mr_slices()):
        for d, im in enumerate((a, b)):
            out["paths"].append(folder / f"mr{k:02d}_{d}.png")
            im.save(out["paths"][-1])
            out["role"].append("mr_slice")
            out["origin"].append(10**6 + 2 * k + d)
            out["half"].append(half)
            out["volume"].append(first + k)


def build(folder: Path, n_bases: int, n_volumes: int, seed: int) -> dict[str, Any]:
    """Write the benchmark's files; returns paths and, per file, its role (base, family, slice), origin and half."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    with np.load(common.PNEUMONIA_NPZ) as z:
        x = z["train_images"]
    pick = rng.choice(len(x), n_bases, replace=False)
    half = rng.permutation(n_bases) % 2  # 0: tuning, 1: reporting
    folder.mkdir(parents=True, exist_ok=True)
    paths, role, origin, halves, volume = [], [], [], [], []
    for b, i in enumerate(pick):
        im = Image.fromarray(x[i]).resize((256, 256), Image.BILINEAR)
        for kind in ("base", *FAMILIES):
            copy = im if kind == "base" else make_copy(im, kind, rng)
            p = folder / f"film{b:04d}_{kind}.{'jpg' if kind == 'jpeg30' else 'png'}"
            if kind == "jpeg30":
                im.save(p, "JPEG", quality=30)
            else:
                copy.save(p)
            paths.append(p)
            role.append(kind)
            origin.append(b)
            halves.append(int(half[b]))
            volume.append(-1)
    slices, dice = _slices(n_volumes, rng)
    vol_half = rng.permutation(len(dice)) % 2
    for s, im in enumerate(slices):
        paths.append(folder / f"slice{s // 2:04d}_{s % 2}.png")
        im.save(paths[-1])
        role.append("slice")
        origin.append(n_bases + s)  # every slice is its own image
        halves.append(int(vol_half[s // 2]))
        volume.append(s // 2)
    lists = {"paths": paths, "role": role, "origin": origin, "half": halves, "volume": volume}
    _add_mr(folder, lists)
    arrays = {k: np.array(lists[k]) for k in ("role", "origin", "half", "volume")}
    return {"paths": paths, "dice": dice, **arrays}


#: real DICOM images whose processed copies are checked at the package defaults (:func:`_real_resolution`):
#: pydicom's own test files and, when ``pydicom-data`` is installed (the ``test`` extra), its radiographs
REAL_SOURCES = (
    ("CT_small.dcm", "CT 128x128"),
    ("MR_small.dcm", "MR 64x64"),
    ("693_UNCI.dcm", "CT 512x512"),
    ("MR2_UNCI.dcm", "MR 1024x1024"),
    ("RG1_UNCI.dcm", "chest CR 1955x1841"),
    ("RG3_UNCI.dcm", "extremity CR 1760x1760"),
)
#: copies per family and real image
REAL_COPIES = 3


def _real_images(quick: bool) -> list[tuple[str, str, Any]]:
    """``(file, description, 8-bit PIL image)`` of the :data:`REAL_SOURCES` found (0.5-99.5 % percentile window);
    quick mode: the two that ship with pydicom."""
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    out = []
    for name, what in REAL_SOURCES[: 2 if quick else None]:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        a = pydicom.dcmread(path).pixel_array.astype(np.float64)
        lo, hi = np.percentile(a, [0.5, 99.5])
        a8 = np.clip(np.rint((a - lo) / max(hi - lo, 1e-6) * 255.0), 0, 255).astype(np.uint8)
        out.append((name, what, Image.fromarray(a8)))
    return out


def _real_resolution(folder: Path, seed: int, quick: bool, workers: int) -> dict[str, Any]:
    """Processed copies of real images at their own resolution (the films above are 28-pixel images upsampled, far
    smoother than a scan): :data:`REAL_COPIES` copies per family of each :data:`REAL_SOURCES` image, all files
    through :func:`~monai_transfer.data.duplicates.find_duplicates` at the package defaults. Recall: a copy in its
    original's cluster; the final verification's residual of each (original, copy) pair beside the threshold; false
    merges: clusters holding two different originals' files."""
    from monai_transfer.data._similarity import fine_residual
    from monai_transfer.data.duplicates import DEFAULT_MAX_RESIDUAL, find_duplicates

    rng = np.random.default_rng(seed)
    sources = _real_images(quick)
    folder.mkdir(parents=True, exist_ok=True)
    paths, owner, family = [], [], []
    for s, (name, _, im) in enumerate(sources):
        stem = Path(name).stem
        paths.append(folder / f"{stem}_base.png")
        im.save(paths[-1])
        owner.append(s)
        family.append("base")
        for fam in FAMILIES:
            for c in range(REAL_COPIES):
                paths.append(folder / f"{stem}_{fam}{c}.{'jpg' if fam == 'jpeg30' else 'png'}")
                if fam == "jpeg30":
                    im.save(paths[-1], "JPEG", quality=30)
                else:
                    make_copy(im, fam, rng).save(paths[-1])
                owner.append(s)
                family.append(fam)
    owner_a, family_a = np.array(owner), np.array(family)
    found = find_duplicates(paths, cache_dir=folder / "cache", num_workers=workers)
    cluster = np.full(len(paths), -1)
    for k, members in enumerate(found.clusters):
        cluster[members] = k
    base = {int(o): int(i) for i, o in enumerate(owner) if family[i] == "base"}
    copies = np.flatnonzero(family_a != "base")
    pairs = np.array([[base[int(owner_a[i])], i] for i in copies]).reshape(-1, 2)
    residual = fine_residual(found.hashing.fine, pairs, skip_below=float(DEFAULT_MAX_RESIDUAL))
    linked = (cluster[copies] >= 0) & (cluster[copies] == cluster[pairs[:, 0]])
    per = {}
    for fam in FAMILIES:
        sel = family_a[copies] == fam
        per[fam] = {
            "recall": float(linked[sel].mean()) if sel.any() else float("nan"),
            "missed": [paths[i].name for i in copies[sel & ~linked]],
            "largest_residual": round(float(residual[sel].max()), 4) if sel.any() else None,
        }
    merges = sum(len(set(owner_a[m].tolist())) > 1 for m in found.clusters)
    return {
        "sources": [{"file": n, "what": w, "size": list(im.size)} for n, w, im in sources],
        "copies_per_family": REAL_COPIES * len(sources),
        "max_residual": float(DEFAULT_MAX_RESIDUAL),
        "families": per,
        "clusters_merging_two_originals": int(merges),
    }


def _cost(paths: list[Path], workers: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    """Hash pass (empty cache) vs one loader pass; the second run's image reads."""
    from concurrent.futures import ThreadPoolExecutor

    from monai_transfer.data.duplicates import hash_files
    from monai_transfer.transforms.io.array import LoadMedicalImage

    loader = LoadMedicalImage(nan_policy="ignore")
    hash_files(paths[:2], cache_dir=None, num_workers=0)  # imports and warm-up, not timed
    loads, colds = [], []
    for _ in range(2):  # interleaved, the faster of two each: other jobs share the CPU
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            list(ex.map(lambda p: loader(p).shape, paths))
        loads.append(time.perf_counter() - t)
        shutil.rmtree(cache, ignore_errors=True)
        t = time.perf_counter()
        cold = hash_files(paths, cache_dir=cache, num_workers=workers)
        colds.append(time.perf_counter() - t)
    load_s, cold_s = min(loads), min(colds)
    reads = []

    def counting(p: Any) -> Any:
        reads.append(p)
        return loader(p)

    t = time.perf_counter()
    warm = hash_files(paths, cache_dir=cache, loader=counting, num_workers=workers)
    warm_s = time.perf_counter() - t
    if cold.errors or not (np.array_equal(cold.thumbnails, warm.thumbnails) and np.array_equal(cold.fine, warm.fine)):
        raise RuntimeError(f"hash pass failed or the cache changed the thumbnails: {cold.errors}")
    return cold, {
        "files": len(paths),
        "load_pass_s": round(load_s, 3),
        "hash_pass_s": round(cold_s, 3),
        "hash_pass_in_loader_passes": round(cold_s / load_s, 3),
        "repeats_s": {"load_pass": [round(x, 3) for x in loads], "hash_pass": [round(x, 3) for x in colds]},
        "second_run_s": round(warm_s, 3),
        "second_run_image_reads": len(reads),
        "second_run_cached": int(warm.n_cached),
        "cache_mb": round(sum(f.stat().st_size for f in cache.iterdir()) / 2**20, 2),
    }


def _scores(hashing: Any, idx: np.ndarray, pool: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every pair of one pool (the files ``idx``) that stage 1 links or stage 2 considers: whether stage 1 links it,
    its stage-2 scores (-inf when not a candidate), and what it is (copy of its original, neighbouring slices, ...)."""
    from monai_transfer.data._similarity import pair_scores, rank_candidates
    from monai_transfer.data.duplicates import (
        DEFAULT_ALIGNED_SIMILARITY,
        DEFAULT_NEIGHBOURS,
        DEFAULT_RANK_SIMILARITY,
        near_duplicate_pairs,
    )

    thumbs, valid = hashing.thumbnails[idx], hashing.ok[idx] & (hashing.ndim[idx] == 2)
    stage1, _ = near_duplicate_pairs(hashing.hashes[idx], valid=valid, signatures=hashing.signatures[idx])
    cand = rank_candidates(thumbs, valid, neighbours=DEFAULT_NEIGHBOURS)
    direct, aligned = _shared_scores(hashing, idx[cand], pair_scores)
    pairs, inv = np.unique(np.concatenate([stage1[:, :2], cand]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    in1 = np.zeros(len(pairs), dtype=bool)
    in1[inv[: len(stage1)]] = True
    d, al = np.full(len(pairs), -np.inf), np.full(len(pairs), -np.inf)
    d[inv[len(stage1) :]], al[inv[len(stage1) :]] = direct, aligned
    role, origin, volume = pool["role"], pool["origin"], pool["volume"]
    a, b = pairs[:, 0], pairs[:, 1]
    linked = in1 | (d >= DEFAULT_RANK_SIMILARITY) | (al >= DEFAULT_ALIGNED_SIMILARITY)  # the grid's td / ta
    res = np.full(len(pairs), np.inf)
    res[linked] = _shared_residuals(hashing, idx[pairs[linked]])
    return {
        "in1": in1,
        "direct": d,
        "aligned": al,
        "residual": res,
        "true": origin[a] == origin[b],
        "slices": np.isin(role[a], SLICES) & np.isin(role[b], SLICES),
        **{f"neighbours_{k}": (role[a] == k) & (volume[a] >= 0) & (volume[a] == volume[b]) for k in SLICES},
        "volume": volume[a],
        "n_copies": int(np.isin(role, FAMILIES).sum()),
        **{f"n_volumes_{k}": len(np.unique(volume[role == k])) for k in SLICES},
    }


_SCORED: dict[tuple[int, int], tuple[float, float]] = {}


def _shared_scores(hashing: Any, pairs: np.ndarray, pair_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 scores of global index pairs; pairs met in an earlier pool (bases, slices) are scored once."""
    new = np.array([p for p in map(tuple, pairs.tolist()) if p not in _SCORED], dtype=np.int64).reshape(-1, 2)
    if len(new):
        direct, _, aligned = pair_scores(hashing.thumbnails, new)
        _SCORED.update({p: (d, a) for p, d, a in zip(map(tuple, new.tolist()), direct, aligned)})
    got = [_SCORED[p] for p in map(tuple, pairs.tolist())]
    return np.array([g[0] for g in got]).reshape(-1), np.array([g[1] for g in got]).reshape(-1)


_RESIDUALS: dict[tuple[int, int], float] = {}


def _shared_residuals(hashing: Any, pairs: np.ndarray) -> np.ndarray:
    """Fine residuals of global index pairs (aligned unless below :data:`_SKIP_BELOW`), each pair computed once."""
    from monai_transfer.data._similarity import fine_residual

    new = np.array([p for p in map(tuple, pairs.tolist()) if p not in _RESIDUALS], dtype=np.int64).reshape(-1, 2)
    if len(new):
        _RESIDUALS.update(zip(map(tuple, new.tolist()), fine_residual(hashing.fine, new, skip_below=_SKIP_BELOW)))
    return np.array([_RESIDUALS[p] for p in map(tuple, pairs.tolist())], dtype=np.float64).reshape(-1)


def _evaluate(sc: dict[str, Any], td: float, ta: float, r: float) -> dict[str, Any]:
    """Counts of one pool at thresholds ``(td, ta, r)``: linked copy pairs, true and false links by kind."""
    linked = (sc["in1"] | (sc["direct"] >= td) | (sc["aligned"] >= ta)) & (sc["residual"] <= r)
    false = linked & ~sc["true"]
    out = {
        "copies": sc["n_copies"],
        "copies_linked": int((linked & sc["true"] & ~sc["slices"]).sum()),
        "links": int(linked.sum()),
        "false_links": int(false.sum()),
        "false_links_slices": int((false & sc["slices"]).sum()),
    }
    for k in SLICES:
        out[f"{k}_pairs"] = sc[f"n_volumes_{k}"]
        out[f"{k}_pairs_linked"] = int((linked & sc[f"neighbours_{k}"]).sum())
    out["linked_slice_volumes"] = sc["volume"][linked & sc["neighbours_slice"]].tolist()
    return out


def _pools(data: dict[str, Any], hashing: Any) -> dict[tuple[int, str], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Per half and family: the pool (bases, that family's copies, the half's slices of both kinds) and its scores."""
    out = {}
    for h in (0, 1):
        for fam in FAMILIES:
            keep = (data["half"] == h) & np.isin(data["role"], ["base", fam, *SLICES])
            idx = np.flatnonzero(keep)
            pool = {k: data[k][idx] for k in ("role", "origin", "volume")}
            out[h, fam] = (pool, _scores(hashing, idx, pool))
    return out


def _totals(pools: dict, half: int, td: float, ta: float, r: float) -> dict[str, Any]:
    """Recall per family, precision and false links over the half's pools at ``(td, ta, r)``."""
    per = {fam: _evaluate(sc, td, ta, r) for (h, fam), (_, sc) in pools.items() if h == half}
    links = sum(r["links"] for r in per.values())
    false = sum(r["false_links"] for r in per.values())
    slices = per[PROCESSED[0]]  # the slices are the same in every pool of a half
    return {
        "recall": {fam: r["copies_linked"] / max(r["copies"], 1) for fam, r in per.items()},
        "copies_per_family": per[PROCESSED[0]]["copies"],
        "precision": (links - false) / links if links else float("nan"),
        "links": links,
        "false_links": false,
        "false_links_between_films": false - sum(r["false_links_slices"] for r in per.values()),
        "film_precision": (links - false) / max(links - sum(r["false_links_slices"] for r in per.values()), 1),
        "neighbour_slice_pairs": slices["slice_pairs"],
        "neighbour_slice_pairs_linked": slices["slice_pairs_linked"],
        "linked_slice_volumes": slices["linked_slice_volumes"],
        "neighbour_slice_precision": 1.0 - slices["slice_pairs_linked"] / max(slices["slice_pairs"], 1),
        "mr_slice_pairs": slices["mr_slice_pairs"],
        "mr_slice_pairs_linked": slices["mr_slice_pairs_linked"],
        "mr_slice_precision": 1.0 - slices["mr_slice_pairs_linked"] / max(slices["mr_slice_pairs"], 1),
    }


def _grid(pools: dict, td: float, ta: float) -> list[dict[str, Any]]:
    """Tuning-half results at every residual threshold (stage 2 at ``(td, ta)``)."""
    rows = []
    for r in RESIDUAL_GRID:
        t = _totals(pools, 0, td, ta, float(r))
        rows.append(
            {
                "direct": td,
                "aligned": ta,
                "max_residual": float(r),
                "min_recall": min(t["recall"][f] for f in PROCESSED),
                "film_precision": t["film_precision"],
                "hard_negative_precision": min(t["neighbour_slice_precision"], t["mr_slice_precision"]),
            }
        )
    return rows


def _choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The residual threshold chosen on the tuning half (see the module docstring)."""
    ok = [r for r in rows if r["film_precision"] >= 0.995 and r["min_recall"] >= 0.98]
    if ok:
        best = max(ok, key=lambda r: (r["hard_negative_precision"], r["max_residual"]))
        return {**best, "rule": "recall >= 0.98, then the highest hard-negative precision, then the larger threshold"}
    best = max(rows, key=lambda r: (r["min_recall"], r["hard_negative_precision"]))
    return {**best, "rule": "no point reaches recall 0.98: the highest smallest recall"}


def _pairing_time(hashing: Any) -> dict[str, Any]:
    """Seconds of both stages over all files at once (default thresholds), from the hash result (no image read)."""
    from monai_transfer.data.duplicates import near_duplicate_pairs, processed_copy_pairs, verify_structure

    valid = hashing.ok & (hashing.ndim == 2)
    t = time.perf_counter()
    p1, _ = near_duplicate_pairs(hashing.hashes, valid=valid, signatures=hashing.signatures)
    t1 = time.perf_counter()
    p2, _, st2 = processed_copy_pairs(hashing)
    t2 = time.perf_counter()
    pairs = np.concatenate([p1, p2])
    keep = verify_structure(hashing, pairs, ["hash"] * len(p1) + st2)
    t3 = time.perf_counter()
    return {
        "files": int(valid.sum()),
        "stage1_s": round(t1 - t, 3),
        "stage2_s": round(t2 - t1, 3),
        "verification_s": round(t3 - t2, 3),
        "pairs_verified": len(pairs),
        "pairs_kept": int(keep.sum()),
    }


_COLUMNS = (
    ("stage1_only", "stage 1 only"),
    ("round1", "stages 1+2, no verification (round 1)"),
    ("chosen", "verified: chosen on the tuning half"),
    ("defaults", "package defaults"),
)


def _fmt_r(r: float | None) -> str:
    return "off" if r is None else f"{r:g}"


def markdown_body(res: dict[str, Any]) -> list[str]:
    """The result as Markdown lines: text and tables (reporting half), without a title or the command."""
    rep, cost, ops, pr = res["reporting"], res["cost"], res["operating_points"], res["pairing"]
    dice = res["neighbour_slice_dice"]
    first = rep["defaults"]
    head = "| | " + " | ".join(name for _, name in _COLUMNS) + " |"
    rule = "| --- |" + " --- |" * len(_COLUMNS)
    thr = " | ".join(
        f"{ops[k]['direct']} / {ops[k]['aligned']} / {_fmt_r(ops[k]['max_residual'])}" for k, _ in _COLUMNS
    )
    lines = [
        f"Reporting half: {first['copies_per_family']} copies per family (each next to its original), "
        f"{first['neighbour_slice_pairs']} neighbouring-slice pairs of binary masks (AdrenalMNIST3D, Dice overlap "
        f"median {dice['50']}, 10-90 %: {dice['10']}-{dice['90']}), {first['mr_slice_pairs']} neighbouring grey-level "
        "MR slice pairs (nibabel's example4d EPI, 2.2 mm apart), every other pair of films a negative. "
        "Thresholds (stage 2 direct / aligned / final verification's residual) "
        "chosen on the tuning half (see the script's docstring).",
        "",
        head,
        rule,
        f"| thresholds | {thr} |",
    ]
    for fam in FAMILIES:
        name = f"recall: {fam} (reported separately)" if fam == "flip" else f"recall: {fam}"
        lines.append(f"| {name} | " + " | ".join(f"{rep[k]['recall'][fam]:.3f}" for k, _ in _COLUMNS) + " |")
    rows = (
        ("precision, all links", lambda r: f"{r['precision']:.4f}"),
        ("precision, films of different children", lambda r: f"{r['film_precision']:.4f}"),
        ("false links between films", lambda r: f"{r['false_links_between_films']}"),
        ("mask slices linked", lambda r: f"{r['neighbour_slice_pairs_linked']} / {r['neighbour_slice_pairs']}"),
        ("precision on neighbouring mask slices", lambda r: f"{r['neighbour_slice_precision']:.4f}"),
        ("MR slices linked", lambda r: f"{r['mr_slice_pairs_linked']} / {r['mr_slice_pairs']}"),
        ("precision on neighbouring MR slices", lambda r: f"{r['mr_slice_precision']:.4f}"),
        (
            "Dice of the linked mask slice pairs: min / median",
            lambda r: f"{r['linked_slices_dice_min']} / {r['linked_slices_dice_median']}",
        ),
    )
    lines += [f"| {name} | " + " | ".join(fn(rep[k]) for k, _ in _COLUMNS) + " |" for name, fn in rows]
    lines += [
        "",
        "| cost | value |",
        "| --- | --- |",
        f"| files | {cost['files']} |",
        f"| hash pass, empty cache (s) | {cost['hash_pass_s']} |",
        f"| one plain loader pass (s) | {cost['load_pass_s']} |",
        f"| hash pass in loader passes | {cost['hash_pass_in_loader_passes']} |",
        f"| second run: image reads / files from the cache | {cost['second_run_image_reads']} / "
        f"{cost['second_run_cached']} |",
        f"| second run (s) | {cost['second_run_s']} |",
        f"| pairing, stage 1 / stage 2 / final verification (s, {pr['files']} files) | {pr['stage1_s']} / "
        f"{pr['stage2_s']} / {pr['verification_s']} |",
        f"| pairs verified / kept (all files at once) | {pr['pairs_verified']} / {pr['pairs_kept']} |",
        f"| cache file (MB) | {cost['cache_mb']} |",
        "",
        "Stage 1 (the hash) links most neighbouring mask slices and stage 2 a few more: at 32x32 they look like a "
        "processed copy. The final verification re-checks every stage-1 and stage-2 link (identical bytes or voxels "
        "excepted) on 64x64 rank thumbnails from the cache: a copy's ranks are an increasing function of its "
        "original's after the best small affine warp, a neighbouring slice's are not where its shape changed. "
        "Stage 2's candidate search is O(N^2) dot products in BLAS blocks (11 views x 64 dimensions per image); the "
        "verification aligns only the pairs not passing as they are whose files are not already joined; the pairing "
        "time above is for all files at once.",
        "",
        *_real_markdown(res["real_resolution"]),
    ]
    return lines


def _real_markdown(real: dict[str, Any]) -> list[str]:
    """The real-resolution check (:func:`_real_resolution`) as Markdown lines."""
    if not real["sources"]:
        return ["Real-resolution check: none of the DICOM test files was found (install pydicom-data)."]
    names = ", ".join(f"`{x['file']}` ({x['what']})" for x in real["sources"])
    lines = [
        f"Processed copies of real images at their own resolution, package defaults ({real['copies_per_family']} "
        f"copies per family of {names}; the films above are 28-pixel images upsampled to 256x256, far smoother than "
        f"a scan). Clusters merging two different originals: {real['clusters_merging_two_originals']}.",
        "",
        f"| family | recall | largest final-verification residual (threshold {real['max_residual']:g}) | missed |",
        "| --- | --- | --- | --- |",
    ]
    for fam, r in real["families"].items():
        missed = ", ".join(f"`{m}`" for m in r["missed"]) or "-"
        lines.append(f"| {fam} | {r['recall']:.3f} | {r['largest_residual']} | {missed} |")
    return lines


def _markdown(res: dict[str, Any]) -> str:
    """The result as a Markdown file."""
    lines = ["# Near-duplicate finder: processed copies (`scripts/bench/dedup_variants.py`)", ""]
    lines += markdown_body(res)
    env = res["env"]
    return "\n".join([*lines, "", f"{env['note']}; command `{env['command']}`, {env['date']}.", ""])


def _linked_dice(res: dict[str, Any], dice: np.ndarray) -> None:
    """Replace the linked slice pairs' volume ids by the smallest and median Dice overlap of those pairs."""
    for r in res["reporting"].values():
        linked = dice[r.pop("linked_slice_volumes")]
        r["linked_slices_dice_min"] = round(float(linked.min()), 3) if len(linked) else None
        r["linked_slices_dice_median"] = round(float(np.median(linked)), 3) if len(linked) else None
    for r in res["tuning"].values():
        r.pop("linked_slice_volumes")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "dedup_variants.json")
    parser.add_argument("--bases", type=int, default=300, help="PneumoniaMNIST films (half tune, half report)")
    parser.add_argument("--volumes", type=int, default=300, help="AdrenalMNIST3D volumes (two slices each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="hashing and loading threads (default 2)")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.bases, args.volumes = 24, 16
    threads = common.set_threads(args.threads if args.threads is not None else args.workers)
    env = common.environment()
    from monai_transfer.data.duplicates import (
        DEFAULT_ALIGNED_SIMILARITY,
        DEFAULT_MAX_RESIDUAL,
        DEFAULT_RANK_SIMILARITY,
    )

    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_variants_"))
    try:
        data = build(tmp / "files", args.bases, args.volumes, args.seed)
        hashing, cost = _cost(data["paths"], args.workers, tmp / "cache")
        real = _real_resolution(tmp / "real", args.seed, args.quick, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pools = _pools(data, hashing)
    td, ta = float(DEFAULT_RANK_SIMILARITY), float(DEFAULT_ALIGNED_SIMILARITY)
    grid = _grid(pools, td, ta)
    ops = {
        "stage1_only": {"direct": 2.0, "aligned": 2.0, "max_residual": None},
        "round1": {"direct": td, "aligned": ta, "max_residual": None},
        "chosen": _choose(grid),
        "defaults": {"direct": td, "aligned": ta, "max_residual": float(DEFAULT_MAX_RESIDUAL)},
    }
    at = {k: (v["direct"], v["aligned"], v["max_residual"]) for k, v in ops.items()}
    at = {k: (d, a, np.inf if r is None else r) for k, (d, a, r) in at.items()}
    res: dict[str, Any] = {
        "what": "recall per processed-copy family, precision on hard negatives, cost; thresholds tuned on one half",
        "operating_points": ops,
        "tuning": {k: _totals(pools, 0, *v) for k, v in at.items()},
        "tuning_grid": grid,
        "reporting": {k: _totals(pools, 1, *v) for k, v in at.items()},
        "neighbour_slice_dice": {str(q): round(float(np.percentile(data["dice"], q)), 3) for q in (0, 10, 50, 90, 100)},
        "cost": cost,
        "pairing": _pairing_time(hashing),
        "real_resolution": real,
        "config": {"bases": args.bases, "volumes": args.volumes, "seed": args.seed, "workers": args.workers},
    }
    _linked_dice(res, np.asarray(data["dice"]))
    res["config"].update(
        {"threads": threads, "quick": args.quick, "families": list(FAMILIES), "grid": RESIDUAL_GRID.tolist()}
    )
    res["env"] = common.finish_environment(env)
    res["env"]["machine_note"] = "shared, busy 2-core build machine (other engineers' jobs running)"
    common.write_result(args.output, res)
    Path(args.output).with_suffix(".md").write_text(_markdown(res), encoding="utf-8")
    for k, name in _COLUMNS:
        r = res["reporting"][k]
        print(
            f"{name}: {at[k]}: min recall {min(r['recall'][f] for f in PROCESSED):.3f}"
            f", flip {r['recall']['flip']:.3f}, film precision {r['film_precision']:.4f}, slices linked "
            f"{r['neighbour_slice_pairs_linked']}/{r['neighbour_slice_pairs']}, MR "
            f"{r['mr_slice_pairs_linked']}/{r['mr_slice_pairs']}"
        )
    print(f"cost {cost['hash_pass_in_loader_passes']} loader passes, second-run reads {cost['second_run_image_reads']}")
    return res


if __name__ == "__main__":
    main()
