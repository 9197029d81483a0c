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
"""Benchmark scripts; each runs from the repository root as ``python -m scripts.bench.<name> [--quick] ...``.

``python scripts/bench/<name>.py ...`` (the path form; the maintainers score a held-out split with
``python scripts/bench/accuracy_xray.py --test PATH.npz --output DIR``) runs the same module: a few lines at the top
of each script re-run it as ``scripts.bench.<name>``. Shared helpers (one argparse helper, the ``env`` block of every
result JSON) live in :mod:`scripts.bench.common`; ``make_report`` turns the results into ``benchmarks/README.md``.
"""
