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
"""Command line of ``python -m monai_transfer.cv``: options, bundle overrides, the run folder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_transfer.cv.run import CrossValidationError, default_output_dir, run_cross_validation
from monai_transfer.metrics.threshold import THRESHOLD_METHODS
from monai_transfer.utils.bundle import parse_overrides
from monai_transfer.utils.cli import OVERRIDES_HELP, SnakeCaseArgumentParser, float_in, int_in

__all__ = ["build_arg_parser", "main"]


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m monai_transfer.cv``."""
    p = SnakeCaseArgumentParser(
        prog="python -m monai_transfer.cv",
        description="Cross-validated selection of the number of epochs, the calibration and the threshold on a "
        "bundle's TRAINING split (the validation split chooses nothing), then one final fit scored once on val. "
        "See docs/generalisation.md.",
        epilog=OVERRIDES_HELP.format(
            config="train.json, for every fold and the final fit",
            example="--epochs 12 --image_size 128 --max_items null --class_names \"['normal','pneumonia']\"",
        )
        + " The kebab-case spellings of earlier releases (--no-calibrate, --no-final-fit) still work, with a warning.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder (holds configs/train.json), e.g. bundles/xray")
    p.add_argument("--config", default="train.json", help="training config inside configs/ (default train.json)")
    p.add_argument(
        "--output_dir",
        default=None,
        help="run folder (created); default a new folder <bundle>/runs/cv-<YYYYmmdd-HHMMSS>, never the bundle folder "
        "itself (its models/ hold the template's trained model)",
    )
    p.add_argument("--folds", type=int_in(2), default=5, help="number of folds K of the training split (default 5)")
    p.add_argument(
        "--threshold_method",
        default="youden",
        choices=list(THRESHOLD_METHODS),
        help="how the threshold is chosen on the calibrated out-of-fold predictions (binary tasks; default youden; "
        "accuracy: the most correct decisions at the training prevalence)",
    )
    p.add_argument(
        "--target_sensitivity",
        type=float_in(0, 1, low_open=True),
        default=0.9,
        help="target of --threshold_method sensitivity (default 0.9)",
    )
    p.add_argument(
        "--no_calibrate", dest="calibrate", action="store_false", help="no temperature fitted on the OOF predictions"
    )
    p.add_argument(
        "--no_final_fit",
        dest="final_fit",
        action="store_false",
        help="stop after the folds: no final model on the whole training split, val not scored",
    )
    p.add_argument(
        "--group_key",
        default="patient_id",
        help="data-list key the folds must not split (default patient_id; '' for none)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m monai_transfer.cv --bundle DIR [--folds K] [--output_dir DIR] [...] [--<id> VALUE ...]``.

    Returns:
        the ``cv.json`` summary (its ``chosen`` and ``files`` parts are printed as JSON).
    """
    ap = build_arg_parser()
    args, rest = ap.parse_known_args(argv)
    try:
        override = parse_overrides(rest)
    except ValueError as e:
        ap.error(str(e))
    configs = Path(args.bundle) / "configs"
    if not (configs / args.config).is_file():
        ap.error(f"--config: {configs / args.config} does not exist")
    output_dir = args.output_dir or override.pop("output_dir", None) or default_output_dir(args.bundle)
    try:
        summary = run_cross_validation(
            configs / args.config, folds=args.folds, output_dir=output_dir, threshold_method=args.threshold_method,
            target_sensitivity=args.target_sensitivity, calibrate=args.calibrate, final_fit=args.final_fit,
            group_key=args.group_key or None, **override,
        )  # fmt: skip
    except CrossValidationError as e:  # found before the first fold: a usage error, exit 2
        ap.error(str(e))
    print(json.dumps({"chosen": summary["chosen"], "files": summary["files"]}, indent=2))
    return summary
