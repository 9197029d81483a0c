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
  pixel-identical pairs dropped) of each, upsampled to 256x256; and the films of different children (every pair of
  two different bases is a negative).

The bases and volumes are split by ``--seed`` into a **tuning** half and a **reporting** half. Per family, a pool is
the half's bases, that family's copies and the half's slices (so each copy meets its original alone, as in a real
set). The second stage's two thresholds are chosen on the tuning half (grid 0.90-0.995, both) among the points whose
precision on films of different children is at least 0.995: "recall first" takes the highest smallest recall over the
processed-copy families, "fewest slices" the fewest neighbouring-slice pairs linked, then the highest smallest recall;
ties go to the higher thresholds. Recall, precision and false links are then reported on the reporting half at both
points, at the package defaults and with stage 1 alone.

Cost: the hash pass over all files with an empty cache against one plain pass of ``LoadMedicalImage`` over the same
files (same threads; each run twice, interleaved, the faster kept), the pairing time (both stages, all files at
once), and a second ``hash_files`` run through a loader that counts its calls (image reads).

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
GRID = np.round(np.arange(0.90, 0.9951, 0.005), 3)


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
    arrays = {"role": np.array(role), "origin": np.array(origin), "half": np.array(halves), "volume": np.array(volume)}
    return {"paths": paths, "dice": dice, **arrays}


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
    if cold.errors or not np.array_equal(cold.thumbnails, warm.thumbnails):
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
    from monai_transfer.data.duplicates import DEFAULT_NEIGHBOURS, near_duplicate_pairs

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
    return {
        "in1": in1,
        "direct": d,
        "aligned": al,
        "true": origin[a] == origin[b],
        "slices": (role[a] == "slice") & (role[b] == "slice"),
        "neighbours": (volume[a] >= 0) & (volume[a] == volume[b]),
        "volume": volume[a],
        "n_copies": int(np.isin(role, FAMILIES).sum()),
        "n_volumes": len(np.unique(volume[volume >= 0])),
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


def _evaluate(sc: dict[str, Any], td: float, ta: float) -> dict[str, Any]:
    """Counts of one pool at thresholds ``(td, ta)``: linked copy pairs, true and false links by kind."""
    linked = sc["in1"] | (sc["direct"] >= td) | (sc["aligned"] >= ta)
    false = linked & ~sc["true"]
    return {
        "copies": sc["n_copies"],
        "copies_linked": int((linked & sc["true"] & ~sc["slices"]).sum()),
        "links": int(linked.sum()),
        "false_links": int(false.sum()),
        "false_links_slices": int((false & sc["slices"]).sum()),
        "neighbour_slice_pairs": sc["n_volumes"],
        "neighbour_slice_pairs_linked": int((linked & sc["neighbours"]).sum()),
        "linked_slice_volumes": sc["volume"][linked & sc["neighbours"]].tolist(),
    }


def _pools(data: dict[str, Any], hashing: Any) -> dict[tuple[int, str], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Per half and family: the pool (bases, that family's copies, the half's slices) and its scores."""
    out = {}
    for h in (0, 1):
        for fam in FAMILIES:
            keep = (data["half"] == h) & np.isin(data["role"], ["base", fam, "slice"])
            idx = np.flatnonzero(keep)
            pool = {k: data[k][idx] for k in ("role", "origin", "volume")}
            out[h, fam] = (pool, _scores(hashing, idx, pool))
    return out


def _totals(pools: dict, half: int, td: float, ta: float) -> dict[str, Any]:
    """Recall per family, precision and false links over the half's pools at ``(td, ta)``."""
    per = {fam: _evaluate(sc, td, ta) for (h, fam), (_, sc) in pools.items() if h == half}
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
        "neighbour_slice_pairs": slices["neighbour_slice_pairs"],
        "neighbour_slice_pairs_linked": slices["neighbour_slice_pairs_linked"],
        "linked_slice_volumes": slices["linked_slice_volumes"],
        "neighbour_slice_precision": 1.0
        - slices["neighbour_slice_pairs_linked"] / max(slices["neighbour_slice_pairs"], 1),
    }


def _grid(pools: dict) -> list[dict[str, Any]]:
    """Tuning-half results at every grid point."""
    rows = []
    for td in GRID:
        for ta in GRID:
            r = _totals(pools, 0, float(td), float(ta))
            rows.append(
                {
                    "direct": float(td),
                    "aligned": float(ta),
                    "min_recall": min(r["recall"][f] for f in PROCESSED),
                    "film_precision": r["film_precision"],
                    "slices_linked": r["neighbour_slice_pairs_linked"] / max(r["neighbour_slice_pairs"], 1),
                }
            )
    return rows


def _choose(rows: list[dict[str, Any]], strict: bool) -> dict[str, Any]:
    """Thresholds chosen on the tuning half among the grid points with precision >= 0.995 on films of different
    children: the highest smallest recall over the processed-copy families (``strict``: the fewest neighbouring
    slices linked first); ties go to the higher thresholds."""
    ok = [r for r in rows if r["film_precision"] >= 0.995]
    if not ok:
        raise RuntimeError("no grid point reaches a film precision of 0.995 on the tuning half")

    def key(r: dict[str, Any]) -> tuple:
        return ((-r["slices_linked"],) if strict else ()) + (r["min_recall"], r["direct"] + r["aligned"])

    best = max(ok, key=key)
    return {**best, "rule": "fewest slices linked, then recall" if strict else "recall"}


def _pairing_time(hashing: Any) -> dict[str, Any]:
    """Seconds of both stages over all files at once (default thresholds), from the hash result (no image read)."""
    from monai_transfer.data.duplicates import near_duplicate_pairs, processed_copy_pairs

    valid = hashing.ok & (hashing.ndim == 2)
    t = time.perf_counter()
    near_duplicate_pairs(hashing.hashes, valid=valid, signatures=hashing.signatures)
    t1 = time.perf_counter()
    processed_copy_pairs(hashing)
    t2 = time.perf_counter()
    return {"files": int(valid.sum()), "stage1_s": round(t1 - t, 3), "stage2_s": round(t2 - t1, 3)}


_COLUMNS = (
    ("stage1_only", "stage 1 only (before)"),
    ("recall_first", "chosen: recall first"),
    ("strict", "chosen: fewest slices linked"),
    ("defaults", "package defaults"),
)


def markdown_body(res: dict[str, Any]) -> list[str]:
    """The result as Markdown lines: text and tables (reporting half), without a title or the command."""
    rep, cost, ops = res["reporting"], res["cost"], res["operating_points"]
    dice = res["neighbour_slice_dice"]
    first = rep["defaults"]
    head = "| | " + " | ".join(name for _, name in _COLUMNS) + " |"
    rule = "| --- |" + " --- |" * len(_COLUMNS)
    thr = " | ".join(f"{ops[k]['direct']} / {ops[k]['aligned']}" for k, _ in _COLUMNS)
    lines = [
        f"Reporting half: {first['copies_per_family']} copies per family (each next to its original), "
        f"{first['neighbour_slice_pairs']} neighbouring-slice pairs (AdrenalMNIST3D masks, Dice overlap "
        f"median {dice['50']}, 10-90 %: {dice['10']}-{dice['90']}), every other pair of films a negative. "
        "Thresholds (stage 2 direct / aligned) "
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
        ("neighbouring slices linked", lambda r: f"{r['neighbour_slice_pairs_linked']} / {r['neighbour_slice_pairs']}"),
        ("precision on neighbouring slices", lambda r: f"{r['neighbour_slice_precision']:.4f}"),
        (
            "Dice of the linked slice pairs: min / median",
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
        f"| pairing, stage 1 / stage 2 (s, {res['pairing']['files']} files) | {res['pairing']['stage1_s']} / "
        f"{res['pairing']['stage2_s']} |",
        f"| cache file (MB) | {cost['cache_mb']} |",
        "",
        "Neighbouring slices are hard negatives the finder does not tell apart: binary mask slices overlapping by a "
        "Dice of about 0.83 or more look the same at 32x32 as a processed copy, and stage 1 (the hash) already links "
        "most of them; they come from one patient, so a split that keeps them together loses nothing. Stage 2's "
        "candidate search is O(N^2) dot products in BLAS blocks (11 views x 64 dimensions per image), its "
        "verification O(N x neighbours) warps; the pairing time above is for all files at once.",
    ]
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
    from monai_transfer.data.duplicates import DEFAULT_ALIGNED_SIMILARITY, DEFAULT_RANK_SIMILARITY

    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_variants_"))
    try:
        data = build(tmp / "files", args.bases, args.volumes, args.seed)
        hashing, cost = _cost(data["paths"], args.workers, tmp / "cache")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pools = _pools(data, hashing)
    grid = _grid(pools)
    recall_first, strict = _choose(grid, False), _choose(grid, True)
    ops = {
        "stage1_only": {"direct": 2.0, "aligned": 2.0},
        "recall_first": recall_first,
        "strict": strict,
        "defaults": {"direct": DEFAULT_RANK_SIMILARITY, "aligned": DEFAULT_ALIGNED_SIMILARITY},
    }
    res: dict[str, Any] = {
        "what": "recall per processed-copy family, precision on hard negatives, cost; thresholds tuned on one half",
        "operating_points": ops,
        "tuning": {k: _totals(pools, 0, v["direct"], v["aligned"]) for k, v in ops.items()},
        "tuning_grid": grid,
        "reporting": {k: _totals(pools, 1, v["direct"], v["aligned"]) for k, v in ops.items()},
        "neighbour_slice_dice": {str(q): round(float(np.percentile(data["dice"], q)), 3) for q in (0, 10, 50, 90, 100)},
        "cost": cost,
        "pairing": _pairing_time(hashing),
        "config": {"bases": args.bases, "volumes": args.volumes, "seed": args.seed, "workers": args.workers},
    }
    _linked_dice(res, np.asarray(data["dice"]))
    res["config"].update({"threads": threads, "quick": args.quick, "families": list(FAMILIES), "grid": GRID.tolist()})
    res["env"] = common.finish_environment(env)
    res["env"]["machine_note"] = "shared, busy 2-core build machine (other engineers' jobs running)"
    common.write_result(args.output, res)
    Path(args.output).with_suffix(".md").write_text(_markdown(res), encoding="utf-8")
    for k, name in _COLUMNS:
        r = res["reporting"][k]
        print(
            f"{name}: {ops[k]['direct']} / {ops[k]['aligned']}: min recall {min(r['recall'][f] for f in PROCESSED):.3f}"
            f", flip {r['recall']['flip']:.3f}, film precision {r['film_precision']:.4f}, slices linked "
            f"{r['neighbour_slice_pairs_linked']}/{r['neighbour_slice_pairs']}"
        )
    print(f"cost {cost['hash_pass_in_loader_passes']} loader passes, second-run reads {cost['second_run_image_reads']}")
    return res


if __name__ == "__main__":
    main()
