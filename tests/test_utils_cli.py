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
"""``monai_transfer.utils.cli``: one flag style for ``evaluate``, ``cv`` and ``audit`` (snake_case like MONAI bundle
ids), old kebab-case spellings kept for one release with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings

import pytest

from monai_transfer.utils.cli import SnakeCaseArgumentParser


def _parser() -> SnakeCaseArgumentParser:
    p = SnakeCaseArgumentParser(prog="tool")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--threshold_method", default="youden")
    return p


def test_old_spellings_are_read_with_a_warning_naming_the_new_one():
    with pytest.warns(DeprecationWarning, match=r"tool: --batch-size is deprecated .* use --batch_size"):
        args, rest = _parser().parse_known_args(["--batch-size=8", "--image_size", "64"])
    assert args.batch_size == 8 and rest == ["--image_size", "64"]
    with pytest.warns(DeprecationWarning, match="use --no_progress"):
        args = _parser().parse_args(["--no-progress", "--batch-size", "4"])
    assert args.no_progress and args.batch_size == 4


def test_new_spellings_overrides_and_values_are_left_alone():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args, rest = _parser().parse_known_args(
            ["--batch_size", "2", "--some-id", "x", "--threshold", "0.3", "--name", "--not-a-flag-value"]
        )
    assert args.batch_size == 2 and args.threshold_method == "youden"  # no abbreviation: --threshold is a bundle id
    assert rest == ["--some-id", "x", "--threshold", "0.3", "--name", "--not-a-flag-value"]
    assert _parser().snake_case(["--", "--batch-size"]) == ["--", "--batch-size"]


@pytest.mark.parametrize(
    "module,old",
    [
        ("monai_transfer.evaluate.cli", ["--tolerate-failures", "--batch-size", "--n-bootstrap", "--no-progress"]),
        ("monai_transfer.cv.cli", ["--no-calibrate", "--no-final-fit", "--threshold-method", "--output-dir"]),
        ("monai_transfer.audit.cli", ["--fail-on-leak", "--no-progress", "--class-names", "--cache-dir"]),
    ],
)
def test_the_three_applications_share_the_style(module, old):
    """Every option of the three command lines is snake_case, has help, and its kebab-case spelling still parses."""
    import importlib

    parser = importlib.import_module(module).build_arg_parser()
    assert isinstance(parser, SnakeCaseArgumentParser)
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert options and all("-" not in o[2:] for o in options), options
    assert all(a.help for a in parser._actions), [a.option_strings for a in parser._actions if not a.help]
    for spelling in old:
        with pytest.warns(DeprecationWarning, match=f"{spelling} is deprecated"):
            assert parser.snake_case([spelling]) == ["--" + spelling[2:].replace("-", "_")]
