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
"""Turn a MedMNIST ChestMNIST ``.npz`` into PNGs and a 14-finding CSV data list for ``bundles/xray``.

ChestMNIST (MedMNIST v2, CC BY 4.0) is NIH ChestX-ray14 resized to 28x28 (MedMNIST+: 64, 128, 224) with the 14
findings of the NIH labels as 0/1 columns. The project does not ship it (its images are downloaded from Zenodo);
this script is the path from the file a user downloads to a multi-label training run:

- ``<out>/{train,val,test}/chestmnist_<split>_<index>.png``: 8-bit grey PNGs, pixels unchanged (``<index>`` is the
  image's index in the npz split);
- ``<out>/labels.csv``: ``image,patient_id,split,atelectasis,...,hernia`` (paths relative to the CSV, one 0/1 column
  per finding in MedMNIST's label order, :data:`FINDINGS`), read by the bundle as a multi-label list when
  ``--class_names`` lists the 14 column names;
- ``<out>/README.md`` (counts, positives per finding, the training command) and ``<out>/data_license.txt``.

Images of one split whose bytes equal an image of a later split (train vs val/test, val vs test) are left out, so no
image is on both sides. ``--max-per-split N`` keeps a seeded subset with at least ``--min-positive`` positives of
every finding (when the split has them), for a quick run. The output is deterministic; the script deletes the
folders and files it writes before writing them again. It is a data preparation tool, never imported by the library.

Usage::

    python scripts/data/prepare_chestmnist.py --npz ~/.medmnist/chestmnist.npz --out data/chestmnist \\
        [--max-per-split 2000] [--min-positive 5] [--seed 20240611]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_datasets import (  # noqa: E402
    DEFAULT_SEED,
    _clear,
    _license_text,
    _not_in,
    _write_csv,
)

from monai_transfer.data import write_png  # noqa: E402
from monai_transfer.data.npz import read_npz  # noqa: E402

__all__ = ["FINDINGS", "NIH_NAMES", "SPLITS", "load_chestmnist", "multilabel_subset", "prepare_chestmnist", "main"]

#: the 14 findings in MedMNIST's ChestMNIST label order (its ``INFO["chestmnist"]["label"]``); the CSV column names.
FINDINGS = (
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pleural",
    "hernia",
)
#: the NIH ChestX-ray14 ``Finding Labels`` spelling of each finding (MedMNIST shortens ``Pleural_Thickening``).
NIH_NAMES = dict(zip(FINDINGS, [n.capitalize() for n in FINDINGS[:12]] + ["Pleural_Thickening", "Hernia"]))
#: npz splits in the order used to remove cross-split copies (an image stays in the last split that has it).
SPLITS = ("train", "val", "test")
COLUMNS = ("image", "patient_id", "split", *FINDINGS)
CLASS_NAMES_ARG = "[" + ",".join(f"'{f}'" for f in FINDINGS) + "]"


def load_chestmnist(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits of a ChestMNIST npz as ``{split: (images (N, H, W) uint8, labels (N, 14) int64)}``.

    ``train`` and ``val`` are required, ``test`` is read when present. Grey images stored as ``(N, H, W, 1)`` are
    squeezed.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a truncated or corrupt npz, a missing array, images that are not 8-bit grey, labels that are not
            ``(N, 14)`` 0/1, or image and label counts that differ; the message names the file and the array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ChestMNIST npz not found: {path} (download chestmnist.npz from MedMNIST first)")
    out = {}
    arrays = read_npz(path)  # a truncated or corrupt file: ValueError naming it and the array
    missing = [f"{s}_{k}" for s in ("train", "val") for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise ValueError(f"{path} lacks arrays {missing}; found {sorted(arrays)}")
    for s in SPLITS:
        if f"{s}_images" not in arrays:
            continue
        if f"{s}_labels" not in arrays:
            raise ValueError(f"{path} has {s}_images but no {s}_labels")
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"]
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ValueError(f"{path}: {s}_images must be (N, H, W) uint8 grey, got {x.shape} {x.dtype}")
        if y.ndim != 2 or y.shape[1] != len(FINDINGS):
            raise ValueError(
                f"{path}: {s}_labels must be (N, {len(FINDINGS)}), one 0/1 column per finding {list(FINDINGS)}; "
                f"got {y.shape} (is this ChestMNIST?)"
            )
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{path}: {s}_labels must hold only 0 and 1, found {sorted(np.unique(y).tolist())}")
        if len(x) != len(y):
            raise ValueError(f"{path}: {len(x)} {s}_images but {len(y)} {s}_labels")
        out[s] = (x, y.astype(np.int64))
    return out


def multilabel_subset(labels: np.ndarray, candidates: np.ndarray, n: int, min_positive: int, seed) -> np.ndarray:
    """Draw ``n`` of ``candidates`` with at least ``min_positive`` positives of every finding, sorted ascending.

    Findings are served rarest first: each gets random positives until it has ``min_positive`` in the draw (or all
    of its positives when it has fewer); the rest of the draw is random.

    Args:
        labels: ``(N, K)`` 0/1 labels of every source index.
        candidates: source indices allowed in the draw.
        n: draw size (all candidates when ``n`` is at least their number).
        min_positive: positives wanted per finding.
        seed: anything ``numpy.random.default_rng`` accepts; the same seed gives the same draw.

    Raises:
        ValueError: when the positives wanted do not fit in ``n``.
    """
    if n >= len(candidates):
        return np.sort(candidates)
    rng = np.random.default_rng(seed)
    y = labels[candidates]
    chosen = np.zeros(len(candidates), dtype=bool)
    for k in np.argsort(y.sum(0), kind="stable"):
        pos = np.flatnonzero((y[:, k] == 1) & ~chosen)
        need = min(min_positive, int(y[:, k].sum())) - int(y[chosen, k].sum())
        if need > 0:
            chosen[rng.choice(pos, size=need, replace=False)] = True
    if chosen.sum() > n:
        raise ValueError(
            f"n={n} is too small for {min_positive} positives of each of the {y.shape[1]} findings "
            f"({int(chosen.sum())} images needed); raise --max-per-split or lower --min-positive"
        )
    rest = np.flatnonzero(~chosen)
    chosen[rng.choice(rest, size=n - int(chosen.sum()), replace=False)] = True
    return np.sort(candidates[chosen])


def prepare_chestmnist(
    npz_path: str | Path,
    out_dir: str | Path,
    max_per_split: int | None = None,
    min_positive: int = 5,
    seed: int = DEFAULT_SEED,
) -> dict[str, object]:
    """Write ChestMNIST as PNGs + ``labels.csv`` (+ README.md, data_license.txt) into ``out_dir``.

    Args:
        npz_path: ``chestmnist.npz`` (or a MedMNIST+ ``chestmnist_<size>.npz``).
        out_dir: output folder; its generated entries are deleted first.
        max_per_split: keep at most this many images per split (:func:`multilabel_subset`); default all.
        min_positive: with ``max_per_split``, positives of every finding kept per split.
        seed: seed of the subsets.

    Returns:
        A summary: ``n`` and ``positives`` (per finding) per split, ``excluded_copies`` per split, ``image_shape``.
    """
    npz_path, out = Path(npz_path), Path(out_dir)
    data = load_chestmnist(npz_path)
    splits = [s for s in SPLITS if s in data]
    _clear([out / p for p in (*SPLITS, "labels.csv", "README.md", "data_license.txt")])
    rows: list[dict[str, object]] = []
    summary: dict[str, object] = {"source": npz_path.name, "image_shape": list(data["train"][0].shape[1:])}
    for i, s in enumerate(splits):
        x, y = data[s]
        later = [data[t][0] for t in splits[i + 1 :]]
        keep = _not_in(x, np.concatenate(later)) if later else np.arange(len(x))
        summary[f"excluded_copies_{s}"] = len(x) - len(keep)
        if max_per_split is not None:
            keep = multilabel_subset(y, keep, int(max_per_split), min_positive, seed=[seed, i])
        for j in keep:
            sid = f"chestmnist_{s}_{j:05d}"
            write_png(out / s / f"{sid}.png", x[j])
            rows.append({"image": f"{s}/{sid}.png", "patient_id": sid, "split": s, **dict(zip(FINDINGS, y[j]))})
        summary[s] = {"n": len(keep), "positives": dict(zip(FINDINGS, y[keep].sum(0).tolist()))}
    _write_csv(out / "labels.csv", rows, COLUMNS)
    (out / "README.md").write_text(_readme(out, summary, splits), encoding="utf-8")
    (out / "data_license.txt").write_text(_license(out, summary, splits, max_per_split), encoding="utf-8")
    return summary


def train_command(out_dir: str | Path) -> str:
    """The ``bundles/xray`` command line that trains the 14-finding model on ``<out_dir>/labels.csv``."""
    return (
        "python -m monai.bundle run --config_file bundles/xray/configs/train.json \\\n"
        f"    --dataset_dir {Path(out_dir) / 'labels.csv'} --output_dir runs/chestmnist \\\n"
        f'    --class_names "{CLASS_NAMES_ARG}"'
    )


def _readme(out: Path, s: dict, splits: list[str]) -> str:
    head = "| finding (NIH name) | " + " | ".join(splits) + " |"
    rule = "| --- |" + " --- |" * len(splits)
    table = "\n".join(
        f"| {f} ({NIH_NAMES[f]}) | " + " | ".join(str(s[sp]["positives"][f]) for sp in splits) + " |" for f in FINDINGS
    )
    counts = ", ".join(f"{sp} {s[sp]['n']}" for sp in splits)
    return f"""# ChestMNIST as a multi-label data list

NIH ChestX-ray14 chest radiographs from **ChestMNIST** (MedMNIST v2, CC BY 4.0), {s["image_shape"]} 8-bit grey,
converted from `{s["source"]}` by `scripts/data/prepare_chestmnist.py`. Licence and attribution:
[`data_license.txt`](data_license.txt). Images: {counts}.

- `labels.csv`: `image,patient_id,split` and one 0/1 column per finding (MedMNIST's label order). `patient_id` is the
  image id: MedMNIST keeps no patient ids, so whether its train/val split keeps the patients of NIH's train_val list
  apart cannot be checked here.
- `<split>/chestmnist_<split>_<index>.png` is `<split>_images[<index>]` of the npz, pixels unchanged. Copies (same
  bytes) of a val/test image were left out of train, copies of a test image out of val.
- The labels were text-mined from radiology reports by NIH (noisy; not radiologist-read).

Positives per finding:

{head}
{rule}
{table}

Train the 14-finding model of `bundles/xray` (multi-label: sigmoid outputs, BCE loss, one threshold per finding):

```bash
{train_command(out)}
```
"""


def _license(out: Path, s: dict, splits: list[str], max_per_split: int | None) -> str:
    subset = (
        f"subset: at most {max_per_split} images per split, seeded, keeping positives of every finding"
        if max_per_split is not None
        else "all images of the splits " + ", ".join(splits)
    )
    return _license_text(
        f"ChestMNIST ({'x'.join(map(str, s['image_shape']))})",
        'NIH ChestX-ray14: Wang X., Peng Y., Lu L., Lu Z., Bagheri M., Summers R.M. "ChestX-ray8: Hospital-scale\n'
        "  Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax\n"
        '  Diseases". CVPR 2017, 2097-2106. https://doi.org/10.1109/CVPR.2017.369\n'
        "  Images courtesy of the NIH Clinical Center (https://nihcc.app.box.com/v/ChestXray-NIHCC): its use is\n"
        "  unrestricted; link to that site, acknowledge the NIH Clinical Center and cite the paper above.",
        [
            subset,
            "images whose bytes equal an image of a later split (train vs val/test, val vs test) removed",
            "format conversion: npz arrays written as 8-bit grey PNG (pixels unchanged)",
            "a labels.csv with one 0/1 column per finding (MedMNIST's label order and names) was added",
        ],
        str(out),
        script="scripts/data/prepare_chestmnist.py",
        regenerate=f"    python scripts/data/prepare_chestmnist.py --npz {s['source']} --out {out}"
        + (f" --max-per-split {max_per_split}" if max_per_split is not None else ""),
        what="ChestMNIST converted into",
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npz", type=Path, required=True, help="chestmnist.npz (or chestmnist_<size>.npz)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (PNGs, labels.csv)")
    parser.add_argument("--max-per-split", type=int, default=None, help="keep at most N images per split")
    parser.add_argument("--min-positive", type=int, default=5, help="positives per finding kept in a subset")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    try:
        s = prepare_chestmnist(args.npz, args.out, args.max_per_split, args.min_positive, args.seed)
    except (FileNotFoundError, ValueError) as e:  # the messages name the file and the array
        print(f"prepare_chestmnist.py: error: {e}", file=sys.stderr)
        return 1
    for sp in SPLITS:
        if sp in s:
            print(f"{sp}: {s[sp]['n']} images, excluded copies {s[f'excluded_copies_{sp}']}")
    print(f"wrote {args.out / 'labels.csv'}; train with:\n{train_command(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
