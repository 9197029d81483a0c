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
"""The one command-line style of the package's applications (``python -m monai_transfer.evaluate|cv|audit``).

Options are spelled like MONAI bundle ids, in snake_case (``--batch_size``, ``--no_progress``), as
``python -m monai.bundle run --<id> VALUE`` takes them; the pass-through ``--<id> VALUE`` pairs of ``evaluate`` and
``cv`` are read by :func:`monai_transfer.utils.bundle.parse_overrides`. The kebab-case spellings of earlier releases
(``--batch-size``, ``--no-progress``, ``--no-calibrate``, ``--fail-on-leak``, ...) still work for one release, with a
``DeprecationWarning`` naming the new spelling.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SnakeCaseArgumentParser", "OVERRIDES_HELP", "int_in", "float_in"]

#: how the applications with bundle overrides describe them in ``--help`` (``str.format`` with ``config``, ``example``).
OVERRIDES_HELP = (
    "bundle overrides: any other --<id> VALUE pair overrides that id of the bundle's {config}, as in "
    "`python -m monai.bundle run` (VALUE is read as JSON, then as a Python literal, else kept as a string; "
    "--<id>=VALUE works too, --a#b VALUE sets a nested id), e.g. {example}."
)


class SnakeCaseArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose snake_case options also accept their old kebab-case spelling, for one release.

    ``--batch-size 8`` (or ``--batch-size=8``) is read as ``--batch_size 8`` with a ``DeprecationWarning`` naming the
    new spelling (always shown: the warning is meant for the person typing the command). Only spellings whose
    snake_case form is an option of this parser are rewritten; anything else (e.g. a bundle override
    ``--<id> VALUE``) is left as it is. Abbreviated options are off (``allow_abbrev=False``), so that a bundle id
    such as ``--threshold`` is never taken for a longer option such as ``--threshold_method``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(self.snake_case(sys.argv[1:] if args is None else args), namespace)

    def snake_case(self, args: Sequence[str]) -> list[str]:
        """``args`` with every deprecated kebab-case option spelling replaced by this parser's snake_case option."""
        args, out = list(args), []
        for i, arg in enumerate(args):
            if arg == "--":
                return out + args[i:]
            name, eq, value = arg.partition("=")
            new = "--" + name[2:].replace("-", "_")
            if arg.startswith("--") and "-" in name[2:] and new in self._option_string_actions:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", DeprecationWarning)
                    warnings.warn(
                        f"{self.prog}: {name} is deprecated and will be removed in the next release; use {new}",
                        DeprecationWarning,
                        stacklevel=4,
                    )
                arg = new + eq + value
            out.append(arg)
        return out


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers in ``[low, high]`` (no upper bound when ``high`` is None): ``--folds 1`` is a
    usage error ("argument --folds: must be an integer >= 2, got '1'"), not a traceback later."""
    shown = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {shown}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {shown}, got {text!r}")
        return value

    parse.__name__ = f"integer {shown}"
    return parse


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers in ``[low, high]`` (``low_open``/``high_open``: the bound is
    excluded); ``--val_fraction 1.5`` or ``nan`` is a usage error naming the option and the range."""
    shown = ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"must be a number in {shown}, got {text!r}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse
