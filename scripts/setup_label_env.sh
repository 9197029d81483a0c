#!/usr/bin/env bash
# Create (or update) the separate virtual environment for MONAI Label (the `label` extra).
# MONAI Label 0.8.5 pulls many packages and downgrades numpy, so it never goes into the core environment.
# The venv sees the system site-packages, so it reuses the installed torch/torchvision/monai (no torch download);
# constraints.txt pins torch/torchvision so pip can never replace them. Idempotent: re-running only checks.
#
# usage: bash scripts/setup_label_env.sh [VENV_DIR]      (default: .venv-label, relative to the repository root)
# then:  export MONAI_TRANSFER_LABEL_PYTHON="$PWD/.venv-label/bin/python"
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
VENV="${1:-.venv-label}"
PY="${PYTHON:-python3}"
MONAILABEL_VERSION="0.8.5"
# pydicom-seg 0.4.1 (a MONAI Label dependency) imports pydicom 2 internals (`pydicom._storage_sopclass_uids`):
# `import monailabel.app` fails with pydicom 3, so the venv gets its own pydicom 2.4.
PYDICOM_SPEC="pydicom>=2.4.4,<3"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"

if ! "$VPY" -c "import monailabel, monailabel.app, sys; sys.exit(monailabel.__version__ != '$MONAILABEL_VERSION')" \
    >/dev/null 2>&1; then
    # sam2 (a MONAI Label dependency) ships only an sdist whose isolated build would download a second torch:
    # build it against the base torch instead, without its optional CUDA extension.
    # The venv's own setuptools (from ensurepip) may predate the built-in bdist_wheel: bring a current one first.
    "$VPY" -m pip install -c "$REPO/constraints.txt" "setuptools>=70.1" wheel
    SAM2_BUILD_CUDA=0 "$VPY" -m pip install -c "$REPO/constraints.txt" --no-build-isolation "sam2>=0.4.1"
    "$VPY" -m pip install -c "$REPO/constraints.txt" "monailabel==$MONAILABEL_VERSION" "$PYDICOM_SPEC"
fi
if ! "$VPY" -c "import monai_transfer, pathlib, sys; sys.exit(pathlib.Path(monai_transfer.__file__).resolve().parents[1] != pathlib.Path('$REPO').resolve())" 2>/dev/null; then
    "$VPY" -m pip install --no-deps -e "$REPO"
fi

# torch must come from the base environment, never from the venv.
"$VPY" - "$VENV" <<'PYEOF'
import pathlib
import sys

import monai
import monailabel
import monailabel.app  # noqa: F401  (imports the whole server stack: catches broken dependencies)
import numpy
import torch

venv = pathlib.Path(sys.argv[1]).resolve()
torch_dir = pathlib.Path(torch.__file__).resolve()
if venv in torch_dir.parents:
    sys.exit(f"torch was installed into {venv} ({torch_dir}); remove the venv and re-run with constraints.txt")
print(f"label env ok: {venv} monailabel {monailabel.__version__}, torch {torch.__version__} (base), "
      f"monai {monai.__version__}, numpy {numpy.__version__}")
PYEOF
