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
"""Near-duplicate finder: recall and false positives on copies the tests make, caching, splits, bundle modes."""

from __future__ import annotations

import csv
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_transfer.data import bundle_datalists, split_datalist
from monai_transfer.data.datalist import DatalistError
from monai_transfer.data.duplicates import (
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_RANK_SIMILARITY,
    STAGES,
    find_duplicates,
    hamming_distance,
    hash_files,
    image_key,
    near_duplicate_pairs,
)
from scripts.bench.dedup_speed import VARIANTS, make_variant
from tests.utils import load_pneumonia, requires_shared_data


def _base_image(rng: np.random.Generator, size: int = 160) -> Image.Image:
    """An 'unrelated' grey image: random Gaussian blobs and a random gradient (smooth, like anatomy at low res)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy
    for _ in range(6):
        cy, cx, s = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
        a = a + rng.uniform(-120, 120) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    a = a + rng.normal(0, 3, a.shape)
    a = (a - a.min()) / (a.max() - a.min()) * 200 + 20
    return Image.fromarray(a.astype(np.uint8))


def _write_set(folder: Path, n_base: int, seed: int = 0) -> tuple[list[Path], list[int]]:
    """``n_base`` unrelated images and their 5 near-duplicates; returns paths and the base index of each."""
    rng = np.random.default_rng(seed)
    paths, origin = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(n_base):
        im = _base_image(rng)
        p = folder / f"base_{b:03d}.png"
        im.save(p)
        paths.append(p)
        origin.append(b)
        for kind in VARIANTS:
            q = folder / f"other_name_{b:03d}_{kind}.{'jpg' if kind == 'jpeg' else 'png'}"
            if kind == "copy":
                shutil.copy(p, q)
            else:
                v = make_variant(im, kind, rng)
                v.save(q, quality=95) if q.suffix == ".jpg" else v.save(q)
            paths.append(q)
            origin.append(b)
    return paths, origin


def test_recall_and_false_positives_on_built_near_duplicates(tmp_path):
    paths, origin = _write_set(tmp_path / "img", n_base=16)
    res = find_duplicates(paths, cache_dir=None, num_workers=2)
    assert not res.hashing.errors
    cluster = res.cluster_of()
    # recall: every copy is in its original's cluster (per kind, so a weak variant shows up by name)
    for k, kind in enumerate(VARIANTS):
        hits = [cluster[i] >= 0 and cluster[i] == cluster[i - 1 - k] for i in range(len(paths)) if i % 6 == k + 1]
        assert np.mean(hits) == 1.0, f"{kind}: recall {np.mean(hits):.2f}"
    # false positives: no pair links two different originals
    wrong = [(a, b) for a, b, _ in res.pairs if origin[a] != origin[b]]
    n_unrelated = len(paths) * (len(paths) - 1) // 2 - 16 * 15
    assert len(wrong) / n_unrelated == 0.0, [(paths[a].name, paths[b].name) for a, b in wrong]
    assert len(res.clusters) == 16 and all(len(c) == 6 for c in res.clusters)
    s = res.summary()
    assert s["n_files_in_clusters"] == 96 and s["largest_cluster"] == 6 and s["n_unreadable"] == 0


@requires_shared_data()
def test_real_radiographs_rarely_pair_by_chance():
    """300 real, distinct chest X-rays (upsampled): unrelated pairs within the default thresholds stay rare."""
    x, _ = load_pneumonia("val", n=300, seed=1)
    keys = [
        image_key(np.asarray(Image.fromarray(a).resize((224, 224), Image.BILINEAR), dtype=np.float32)[None]) for a in x
    ]
    hashes = np.array([k[0] for k in keys], dtype=np.uint64)
    sigs = np.stack([k[1] for k in keys])
    pairs, _ = near_duplicate_pairs(hashes, signatures=sigs)
    n_pairs = len(x) * (len(x) - 1) // 2
    assert len(pairs) / n_pairs < 2e-4, f"{len(pairs)} chance pairs of {n_pairs}"
    loose, _ = near_duplicate_pairs(hashes)  # the 64-bit hash alone is not enough for radiographs
    assert len(loose) > len(pairs)


def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)
    h = np.concatenate([base, base ^ flips])
    pairs, sim = near_duplicate_pairs(h, max_distance=5, block=7)
    d = hamming_distance(h[:, None], h[None, :])
    expect = {(i, j) for i in range(len(h)) for j in range(i + 1, len(h)) if d[i, j] <= 5}
    assert {(int(a), int(b)) for a, b, _ in pairs} == expect and np.all(sim == 1.0)
    assert all(int(dd) == d[a, b] for a, b, dd in pairs)
    with pytest.raises(ValueError, match="max_distance"):
        near_duplicate_pairs(h, max_distance=65)
    # the numpy < 2 popcount (MONAI Label's environment) agrees with Python's
    from monai_transfer.data.duplicates import _popcount_lut

    x = h[:, None] ^ h[None, :8]
    assert _popcount_lut(x).astype(int).tolist() == [[bin(int(v)).count("1") for v in row] for row in x]


def test_cache_makes_the_second_run_free_and_follows_content(tmp_path):
    paths, _ = _write_set(tmp_path / "img", n_base=3)
    calls = []

    def loader(p):
        calls.append(p)
        return np.asarray(Image.open(p).convert("L"), dtype=np.float32)[None]

    first = hash_files(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    distinct = len(set(first.sha256))  # the exact copies ("copy" variants) are decoded once
    assert distinct == len(paths) - 3 and len(calls) == distinct and first.n_cached == len(paths) - distinct
    calls.clear()
    second = hash_files(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert calls == [] and second.n_cached == len(paths)
    np.testing.assert_array_equal(first.hashes, second.hashes)
    np.testing.assert_array_equal(first.signatures, second.signatures)  # float16 values, as the cache stores them
    nocache = hash_files(paths, cache_dir=None, num_workers=0)
    np.testing.assert_array_equal(nocache.signatures, second.signatures)  # no cache: the same pairs as with one
    # a renamed copy is a cache hit (content key); an edited file is hashed again
    shutil.copy(paths[0], tmp_path / "renamed.png")
    make_variant(Image.open(paths[1]), "bright", np.random.default_rng(0)).save(paths[1])
    third = hash_files([tmp_path / "renamed.png", paths[1]], cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert calls == [paths[1]] and third.n_cached == 1 and third.hashes[0] == first.hashes[0]


def test_worker_processes_give_the_inline_result_and_fill_the_cache(tmp_path, monkeypatch):
    """From PROCESS_MIN_FILES files or PROCESS_MIN_BYTES on, the hash pass runs in worker processes: same hashes,
    thumbnails, digests and errors as inline, and the parent records the path index (a second run reads no image)
    and the cache entries."""
    from monai_transfer.data import duplicates

    paths, _ = _write_set(tmp_path / "img", n_base=3)
    bad = tmp_path / "img" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    paths = [*paths, bad, tmp_path / "img" / "missing.png"]
    inline = hash_files(paths, cache_dir=None, num_workers=0)
    monkeypatch.setattr(duplicates, "PROCESS_MIN_FILES", 10**9)
    monkeypatch.setattr(duplicates, "PROCESS_MIN_BYTES", 1)  # a few bytes of files repay the processes here
    started = []
    real = duplicates.torch.utils.data.DataLoader

    def spy(*args, **kwargs):
        started.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(duplicates.torch.utils.data, "DataLoader", spy)
    pooled = hash_files(paths, cache_dir=tmp_path / "cache", num_workers=2)
    assert started == ([2] if sys.platform.startswith("linux") else [])
    for name in ("hashes", "thumbnails", "fine", "ndim", "ok"):
        np.testing.assert_array_equal(getattr(pooled, name), getattr(inline, name), err_msg=name)
    np.testing.assert_array_equal(pooled.signatures, inline.signatures)
    assert pooled.sha256 == inline.sha256 and sorted(pooled.errors) == sorted(inline.errors) == [
        len(paths) - 2,
        len(paths) - 1,
    ]
    assert "bad.png" in pooled.errors[len(paths) - 2] and "missing.png" in pooled.errors[len(paths) - 1]
    calls = []

    def counting(p):
        calls.append(p)
        raise AssertionError("a second run must not load an image")

    again = hash_files(paths[:-2], cache_dir=tmp_path / "cache", loader=counting, num_workers=2)
    assert calls == [] and again.n_cached == len(paths) - 2
    np.testing.assert_array_equal(again.hashes, inline.hashes[:-2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker processes are started by fork on Linux only")
def test_a_daemonic_caller_hashes_in_threads(tmp_path, monkeypatch):
    """A daemonic process (a DataLoader worker, say) may not start children: the pass uses threads there."""
    import multiprocessing

    from monai_transfer.data import duplicates

    paths, _ = _write_set(tmp_path / "img", n_base=2)
    monkeypatch.setattr(duplicates, "PROCESS_MIN_BYTES", 1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            queue.put(hash_files(paths, cache_dir=None, num_workers=2).hashes.tolist())
        except BaseException as e:  # the parent asserts on it
            queue.put(repr(e))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    got = queue.get(timeout=120)
    proc.join(timeout=30)
    assert got == hash_files(paths, cache_dir=None, num_workers=0).hashes.tolist()


def test_unreadable_files_are_recorded_and_identical_bytes_still_pair(tmp_path):
    good = tmp_path / "good.png"
    _base_image(np.random.default_rng(0)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    shutil.copy(bad, tmp_path / "bad_copy.png")
    res = find_duplicates([good, bad, tmp_path / "bad_copy.png"], cache_dir=None)
    assert sorted(res.hashing.errors) == [1, 2] and "bad.png" in res.hashing.errors[1]
    assert res.clusters == [[1, 2]]


def test_volumes_pair_only_on_identical_voxels(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 20, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(tmp_path / "a_recompressed.nii"))  # same voxels, other bytes
    nib.save(nib.Nifti1Image(v * 1.01, np.eye(4)), str(tmp_path / "b.nii.gz"))
    res = find_duplicates([tmp_path / n for n in ("a.nii.gz", "a_recompressed.nii", "b.nii.gz")], cache_dir=None)
    assert res.clusters == [[0, 1]] and list(res.hashing.ndim) == [3, 3, 3]


def test_split_keeps_linked_items_together():
    items = [{"image": f"/x/{i}.png", "label": i % 2} for i in range(40)]
    clusters = [[0, 1, 2, 3], [10, 21], [5, 7, 9]]
    for seed in range(5):
        train, val = split_datalist(items, val_fraction=0.3, seed=seed, linked=clusters)
        side = {x["image"]: "t" for x in train} | {x["image"]: "v" for x in val}
        for c in clusters:
            assert len({side[f"/x/{i}.png"] for i in c}) == 1, (seed, c)
    # order independence holds with links too
    rev = list(reversed(items))
    relinked = [[39 - i for i in c] for c in clusters]
    assert split_datalist(rev, 0.3, 1, linked=relinked)[1] == sorted(
        split_datalist(items, 0.3, 1, linked=clusters)[1], key=lambda x: -int(Path(x["image"]).stem)
    )


def _class_folder(root: Path, n_base: int = 8) -> list[Path]:
    """root/{a,b}/: 8 unrelated images per class, and one resized copy of each of the first 3 of class a."""
    rng = np.random.default_rng(5)
    copies = []
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n_base):
            im = _base_image(rng)
            im.save(root / c / f"{i}.png")
            if c == "a" and i < 3:
                q = root / c / f"{i}_small.png"
                make_variant(im, "resize", rng).save(q)
                copies.append(q)
    return copies


def test_bundle_datalists_group_keeps_clusters_on_one_side(tmp_path, caplog):
    _class_folder(tmp_path / "d")
    for seed in range(3):
        dl = bundle_datalists(tmp_path / "d", val_fraction=0.4, seed=seed, hash_cache_dir=None)
        side = {Path(x["image"]).name: s for s in dl for x in dl[s] if Path(x["image"]).parent.name == "a"}
        for i in range(3):
            assert side[f"{i}.png"] == side[f"{i}_small.png"]
        assert dl.audit["duplicates"]["n_clusters"] == 3 and dl.audit["duplicates"]["n_clusters_across_splits"] == 0


def test_bundle_datalists_given_split_warn_fail_off(tmp_path, caplog):
    copies = _class_folder(tmp_path / "d")
    rows = [
        {"image": str(p.relative_to(tmp_path)), "label": p.parent.name, "split": "val" if p == copies[0] else "train"}
        for p in sorted((tmp_path / "d").rglob("*.png"))
    ]
    for r in rows:  # a val image of each class besides the leaked copy
        if r["image"].endswith("7.png"):
            r["split"] = "val"
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    with caplog.at_level(logging.WARNING, logger="monai_transfer.data.bundle_data"):
        dl = bundle_datalists(tmp_path / "list.csv", hash_cache_dir=None)
    assert "span more than one split" in caplog.text and "0_small.png (val" in caplog.text
    assert dl.audit["duplicates"]["n_clusters_across_splits"] == 1
    with pytest.raises(DatalistError, match=r"1 near-duplicate cluster.*0\.png \(train.*0_small\.png \(val"):
        bundle_datalists(tmp_path / "list.csv", duplicates="fail", hash_cache_dir=None)
    off = bundle_datalists(tmp_path / "list.csv", duplicates="off", hash_cache_dir=None)
    assert off.audit is None and off.duplicates is None and len(off["val"]) == 3
    with pytest.raises(ValueError, match="duplicates must be one of"):
        bundle_datalists(tmp_path / "list.csv", duplicates="maybe")


def test_train_val_folders_with_a_copy_across_are_reported(tmp_path, caplog):
    rng = np.random.default_rng(9)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                _base_image(rng).save(tmp_path / split / c / f"{i}.png")
    leaked = Image.open(tmp_path / "train" / "b" / "2.png")
    make_variant(leaked, "jpeg", rng).save(tmp_path / "val" / "b" / "exported.jpg", quality=90)
    with caplog.at_level(logging.WARNING, logger="monai_transfer.data.bundle_data"):
        dl = bundle_datalists(tmp_path, hash_cache_dir=None)  # "group" cannot move files of a given split: warns
    assert dl.audit["duplicates"]["n_clusters_across_splits"] == 1
    assert "train/b/2.png (train" in caplog.text and "val/b/exported.jpg (val" in caplog.text
    with pytest.raises(DatalistError, match="exported.jpg"):
        bundle_datalists(tmp_path, duplicates="fail", hash_cache_dir=None)


def test_split_datalists_linked_maps_clusters_to_split_indices():
    """``SplitDatalists.linked(split)``: clusters of the checked items as index lists into that split."""
    from types import SimpleNamespace

    from monai_transfer.data.bundle_data import SplitDatalists

    out = SplitDatalists(train=[{"image": "a"}, {"image": "b"}, {"image": "c"}], val=[{"image": "d"}])
    assert out.linked("train") == []  # check off
    out.checked_items = [{"image": "c"}, {"image": "d"}, {"image": "a"}, {"image": "b"}]
    out.duplicates = SimpleNamespace(clusters=[[0, 2], [1, 3]])  # {c, a} in train; {d (val), b (train)}
    assert out.linked("train") == [[0, 2]]
    assert out.linked("val") == []


def test_processed_copies_are_linked_by_the_second_stage_and_say_so(tmp_path):
    """One processed copy per family of 10 unrelated images (gamma, contrast, window, blur, JPEG 30, rotation, 10 %
    crop, flip, ...): stage 1 alone misses many, the default finder links every copy to its original, names the stage,
    and links no two originals."""
    from scripts.bench.dedup_variants import FAMILIES, make_copy

    rng = np.random.default_rng(5)
    paths, origin, family = [], [], []
    for b in range(10):
        im = _base_image(rng, size=256)
        for kind in ("base", *FAMILIES):
            p = tmp_path / f"{b}_{kind}.png"
            (im if kind == "base" else make_copy(im, kind, rng)).save(p)
            paths.append(p)
            origin.append(b)
            family.append(kind)
    res = find_duplicates(paths, cache_dir=None, num_workers=0)
    first = find_duplicates(paths, cache_dir=None, num_workers=0, rank_similarity=None)
    cluster, cluster1 = res.cluster_of(), first.cluster_of()
    base = {o: i for i, (o, k) in enumerate(zip(origin, family)) if k == "base"}
    missed = [paths[i].name for i in range(len(paths)) if cluster[i] < 0 or cluster[i] != cluster[base[origin[i]]]]
    assert not missed
    missed1 = [i for i in range(len(paths)) if cluster1[i] < 0 or cluster1[i] != cluster1[base[origin[i]]]]
    assert len(missed1) >= 20, "the hash alone should miss processed copies (else this test shows nothing)"
    assert not [(a, b) for a, b, _ in res.pairs if origin[a] != origin[b]]
    assert len(res.stages) == len(res.pairs) and {"hash", "rank", "rank-flipped"} <= set(res.stages)
    assert set(res.stages) <= set(STAGES) and first.stages == ["hash"] * len(first.pairs)
    s = res.summary()
    assert s["rank_similarity"] == DEFAULT_RANK_SIMILARITY and sum(s["pairs_per_stage"].values()) == s["n_pairs"]
    sub = res.subset([base[3], *[i for i in range(len(paths)) if origin[i] == 3 and family[i] == "flip"]])
    assert sub.stages == ["rank-flipped"] and len(sub.clusters) == 1


def test_second_run_reads_no_image_for_the_second_stage_and_old_caches_are_rebuilt(tmp_path, caplog):
    """The rank thumbnails and the fine ones come from the cache (format 4); a cache of the previous format (no fine
    thumbnails) is warned about and rebuilt instead of giving empty thumbnails."""
    import json

    from monai_transfer.data.duplicates import HASH_METHOD

    paths, _ = _write_set(tmp_path / "img", n_base=3)
    calls = []

    def loader(p):
        calls.append(p)
        return np.asarray(Image.open(p).convert("L"), dtype=np.float32)[None]

    first = find_duplicates(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert len(calls) == len(set(first.hashing.sha256)) and first.hashing.thumbnails.any(axis=(1, 2)).all()
    calls.clear()
    second = find_duplicates(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert calls == [] and np.array_equal(first.hashing.thumbnails, second.hashing.thumbnails)
    assert first.hashing.fine.any(axis=(1, 2)).all() and np.array_equal(first.hashing.fine, second.hashing.fine)
    assert np.array_equal(first.pairs, second.pairs) and first.stages == second.stages
    cache = tmp_path / "cache" / f"image_hashes_{HASH_METHOD}.json"
    data = json.loads(cache.read_text())
    assert data["format"] == 4
    data["format"] = 3
    data["hashes"] = {k: v.rsplit(":", 1)[0] for k, v in data["hashes"].items()}  # the format-3 entries
    cache.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="monai_transfer.data.duplicates"):
        third = hash_files(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert "format 3" in caplog.text and str(cache) in caplog.text and len(calls) == len(set(third.sha256))
    assert np.array_equal(third.thumbnails, first.hashing.thumbnails) and np.array_equal(third.fine, first.hashing.fine)
    data["format"] = 4  # format 4 with entries lacking the fine thumbnail: each entry is recomputed, never empty
    cache.write_text(json.dumps(data))
    calls.clear()
    fourth = hash_files(paths, cache_dir=tmp_path / "cache", loader=loader, num_workers=0)
    assert len(calls) == len(set(fourth.sha256)) and np.array_equal(fourth.fine, first.hashing.fine)


@requires_shared_data()
def test_real_radiographs_rarely_pair_by_chance_in_the_second_stage():
    """The same distinct chest X-rays: the rank-thumbnail stage, which ignores contrast and window, still links
    (almost) no two different films; one mirrored and one gamma-changed film are linked to their originals."""
    from monai_transfer.data.duplicates import HashResult, processed_copy_pairs

    x, _ = load_pneumonia("val", n=300, seed=1)
    films = [Image.fromarray(a).resize((224, 224), Image.BILINEAR) for a in x]
    films += [films[0].transpose(Image.FLIP_LEFT_RIGHT), films[1].point(lambda v: int(255 * (v / 255) ** 0.6))]
    keys = [image_key(np.asarray(im, dtype=np.float32)[None]) for im in films]
    n = len(keys)
    hashing = HashResult(
        paths=[str(i) for i in range(n)],
        hashes=np.array([k[0] for k in keys], dtype=np.uint64),
        signatures=np.stack([k[1] for k in keys]),
        thumbnails=np.stack([k[2] for k in keys]),
        ndim=np.full(n, 2),
        ok=np.ones(n, dtype=bool),
        sha256=[None] * n,
    )
    pairs, sim, stages = processed_copy_pairs(hashing)
    linked = {(int(a), int(b)): st for (a, b, _), st in zip(pairs, stages)}
    m = len(x)
    assert linked.get((0, m)) == "rank-flipped" and linked.get((1, m + 1)) == "rank", linked
    chance = [p for p in linked if p not in {(0, m), (1, m + 1)}]
    assert len(chance) <= 2, f"{len(chance)} chance pairs of {m * (m - 1) // 2}: {chance}"
    assert (sim >= 0.975).all()


def _mask(size: int, ry: float, rx: float, bump: float) -> Image.Image:
    """A binary organ-like mask: an ellipse with a bump on its right side (a shape that changes between slices)."""
    yy, xx = (np.mgrid[0:size, 0:size] - size / 2) / size
    inside = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
    inside |= ((yy + 0.05) ** 2 + (xx - rx) ** 2) <= bump**2
    return Image.fromarray((inside * 255).astype(np.uint8))


def test_final_verification_drops_neighbouring_slices_and_keeps_processed_copies(tmp_path):
    """Two mask 'slices' whose shape changes non-rigidly (Dice about 0.9) are linked by the first two stages alone but
    not after the final verification; a gamma-changed and a rotated copy of each stay linked to it."""
    from scripts.bench.dedup_variants import make_copy

    rng = np.random.default_rng(7)
    a, b = _mask(256, 0.3, 0.2, 0.06), _mask(256, 0.28, 0.215, 0.1)
    ma, mb = np.asarray(a) > 0, np.asarray(b) > 0
    assert 0.85 < 2 * (ma & mb).sum() / (ma.sum() + mb.sum()) < 0.97
    film = _base_image(rng, size=256)
    images = [a, b, film, make_copy(film, "gamma", rng), make_copy(film, "rotate", rng), make_copy(a, "crop10", rng)]
    paths = []
    for k, im in enumerate(images):
        paths.append(tmp_path / f"{k}.png")
        im.save(paths[-1])
    unverified = find_duplicates(paths, cache_dir=None, num_workers=0, max_residual=None)
    assert (0, 1) in {(int(i), int(j)) for i, j, _ in unverified.pairs}, (
        "the slices must be linked before (else this test shows nothing)"
    )
    res = find_duplicates(paths, cache_dir=None, num_workers=0)
    assert [c for c in res.clusters] == [[0, 5], [2, 3, 4]], res.pairs
    assert res.summary()["n_rejected_by_verification"] >= 1 and res.summary()["max_residual"] == DEFAULT_MAX_RESIDUAL
