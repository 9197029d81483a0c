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
"""Command line of ``python -m monai_transfer.audit``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from monai_transfer.audit.report import audit_dataset
from monai_transfer.utils.cli import SnakeCaseArgumentParser, float_in, int_in

__all__ = ["build_arg_parser", "main"]


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m monai_transfer.audit``."""
    p = SnakeCaseArgumentParser(
        prog="python -m monai_transfer.audit",
        description="Leakage audit of a data set: near-duplicates across splits, label conflicts, class balance, "
        "unreadable files; the splits are made exactly as in training. See README, 'The audit'.",
        epilog="Exit status 0, or 1 with --fail_on_leak when a near-duplicate cluster crosses splits. The kebab-case "
        "spellings of earlier releases (--fail-on-leak, --no-progress, ...) still work, with a warning.",
    )
    p.add_argument("dataset", help="class folder, train/val[/test] folder, or CSV/JSON data list")
    p.add_argument("--output", default="audit", help="output folder (default: ./audit)")
    p.add_argument("--class_names", nargs="+", default=None, help="class order (default: sorted names)")
    p.add_argument(
        "--duplicates",
        choices=["group", "warn", "fail", "off"],
        default="group",
        help="how the split treats near-duplicates when the data come unsplit, as in training (default: group)",
    )
    p.add_argument(
        "--val_fraction",
        type=float_in(0, 1, low_open=True, high_open=True),
        default=0.2,
        help="validation share when the data come unsplit (0.2)",
    )
    p.add_argument("--seed", type=int_in(0), default=0, help="split seed, as the bundle's seed id (default 0)")
    p.add_argument("--max_distance", type=int_in(0, 64), default=None, help="Hamming threshold of the 64-bit hash")
    p.add_argument("--min_similarity", type=float_in(-1, 1), default=None, help="cosine threshold of the strict check")
    p.add_argument(
        "--rank_similarity",
        type=float_in(-1, 1),
        default=None,
        help="stage 2: rank-thumbnail correlation that links a pair as it is or flipped (default 0.995)",
    )
    p.add_argument(
        "--aligned_similarity",
        type=float_in(-1, 1),
        default=None,
        help="stage 2: rank-thumbnail correlation after the best small warp (default 0.975)",
    )
    p.add_argument(
        "--max_residual",
        type=float_in(0, 1),
        default=None,
        help="final verification: largest 64x64 structure residual of a linked pair (default 0.006)",
    )
    p.add_argument("--cache_dir", default="default", help="hash cache folder; 'none' disables it")
    p.add_argument("--no_progress", action="store_true", help="no progress bar over the hashed files")
    p.add_argument("--fail_on_leak", action="store_true", help="exit 1 when a cluster crosses splits")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see :mod:`monai_transfer.audit`); a data set that cannot be
    read (a missing path, a single class folder, ...) is a usage error (exit 2) naming it, not a traceback."""
    p = build_arg_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    try:
        summary = _audit(args)
    except (ValueError, OSError) as e:  # a bad data set or output folder: named by the message, no traceback
        p.error(f"{args.dataset}: {e}")
    print(
        f"{summary['n_files']} images, {summary['n_clusters']} near-duplicate clusters "
        f"({summary['n_clusters_across_splits']} across splits), {summary['n_label_conflicts']} label conflicts, "
        f"{summary['n_unreadable']} unreadable; report in {Path(args.output) / 'audit.json'}"
    )
    return 1 if args.fail_on_leak and summary["n_clusters_across_splits"] else 0


def _audit(args: argparse.Namespace) -> dict:
    return audit_dataset(
        args.dataset,
        output_dir=args.output,
        class_names=args.class_names,
        duplicates=args.duplicates,
        val_fraction=args.val_fraction,
        seed=args.seed,
        max_distance=args.max_distance,
        min_similarity=args.min_similarity,
        stage2={"rank_similarity": args.rank_similarity, "aligned_similarity": args.aligned_similarity},
        max_residual=args.max_residual,
        cache_dir=None if str(args.cache_dir).lower() == "none" else args.cache_dir,
        progress=not args.no_progress,
    )
