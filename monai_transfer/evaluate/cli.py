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
"""Command line of ``python -m monai_transfer.evaluate``: arguments, bundle overrides, the log file, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from monai_transfer.evaluate.cases import EXIT_OK, EXIT_USAGE, EvaluationUsageError
from monai_transfer.evaluate.run import OPTIONS, evaluate_bundle, logger
from monai_transfer.utils.bundle import parse_overrides
from monai_transfer.utils.cli import OVERRIDES_HELP, SnakeCaseArgumentParser, int_in

__all__ = ["build_arg_parser", "main"]


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m monai_transfer.evaluate``."""
    p = SnakeCaseArgumentParser(
        prog="python -m monai_transfer.evaluate",
        description="Evaluate a monai-transfer bundle on a folder of NIfTI (or, for 2D bundles, DICOM/PNG) test cases.",
        epilog=OVERRIDES_HELP.format(config="inference.json", example="--image_size 128 --class_names \"['no','yes']\"")
        + " Exit codes: 0 ok; 1 usage or environment error (bad bundle/checkpoint/threshold, report not "
        "writable, e.g. disk full); 2 some case failed (see failures.csv) unless --tolerate_failures. "
        "The kebab-case spellings of earlier releases (--batch-size, --no-progress, ...) still work, with a warning.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/ct_slices")
    p.add_argument("--images", required=True, help="folder of test cases (searched recursively)")
    p.add_argument("--labels", default=None, help="CSV with columns image (relative to --images) and label")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--tolerate_failures", action="store_true", help="exit 0 (with a WARNING) when some cases fail")
    p.add_argument("--batch_size", type=int_in(1), default=32, help="slices/images per forward pass (default 32)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--ckpt", default=None, help="weights file; default the bundle's models/model.pt")
    p.add_argument("--threshold", default=None, help="number or threshold JSON; default models/threshold.json")
    p.add_argument(
        "--calibration", default=None, help="calibration JSON or 'none'; default calibration.json beside the weights"
    )
    p.add_argument("--tta", action="store_true", default=None, help="test-time augmentation (the bundle's use_tta)")
    p.add_argument(
        "--n_bootstrap", type=int_in(0), default=1000, help="bootstrap resamples for the CIs (default 1000; 0: none)"
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--shift_suite",
        action="store_true",
        help="also score the labelled cases under acquisition shifts (MedMNIST-C chest X-ray families, resolution, "
        "windowing, exposure, prevalence; 5 severities): shift.json, shift.md, shift.png (2D binary bundles)",
    )
    p.add_argument("--shift_families", default=None, help="comma-separated shift families (default all)")
    p.add_argument(
        "--shift_max_cases", type=int_in(2), default=None, help="stratified subsample of cases for the suite"
    )
    return p


@contextmanager
def _logging_to(output: str) -> Iterator[None]:
    """INFO to stderr (when nothing else logs) and ``<output>/evaluate.log``; non-UTF-8 names are escaped."""
    handlers: list[logging.Handler] = [] if logging.getLogger().handlers else [logging.StreamHandler(sys.stderr)]
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / "evaluate.log", "w", encoding="utf-8", errors="backslashreplace"))
    except OSError as e:
        logger.error(f"--output {out}: cannot create the folder or its log ({e})")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 1 usage error, 2 failed cases).

    A log is written to ``<output>/evaluate.log`` as well as to stderr.
    """
    parser = build_arg_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors; this tool reserves 2 for failed cases
        return EXIT_OK if e.code in (0, None) else EXIT_USAGE
    try:
        overrides = parse_overrides(extra)
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    kw = {k: getattr(args, k) for k in ("bundle", "images", "output", "labels", "tolerate_failures", "n_bootstrap")}
    kw.update({k: getattr(args, k) for k in OPTIONS}, progress=False if args.no_progress else None)
    with _logging_to(args.output):
        try:
            result = evaluate_bundle(**kw, overrides=overrides)
        except EvaluationUsageError as e:
            logger.error(str(e))
            return EXIT_USAGE
    return result.exit_code
