#!/usr/bin/env bash
# Build the wheel that benchmarks/gpu_check.sh installs on the GPU machine: CPython 3.12 (that
# image's Python), CUDA kernels for sm_90 (H100 / H200) only, written to .whl/ (ignored by git;
# copy it to the GPU machine with the repository). Building on any CPU machine saves the GPU's
# minutes: an sm_90 build there takes most of the check's install box.
#   bash benchmarks/build_gpu_wheel.sh          (from the repository root)
# Needs a Python 3.12 (HDLFAST_WHEEL_PYTHON, else python3.12 on PATH or pyenv's), nvcc and a C++
# compiler. The build venv lives under build/ (ignored). The wheel is checked before it is kept:
# both extension modules must import from it in a clean target folder.
set -euo pipefail
py=${HDLFAST_WHEEL_PYTHON:-}
if [[ -z $py ]]; then
  if command -v python3.12 >/dev/null && python3.12 -V >/dev/null 2>&1; then py=python3.12
  elif command -v pyenv >/dev/null; then
    py=$(ls -d "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n1)
  fi
fi
[[ -n $py ]] && "$py" -V >/dev/null 2>&1 || { echo "no Python 3.12 found (set HDLFAST_WHEEL_PYTHON)" >&2; exit 1; }
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' || exit 1

venv=build/wheel-py312
[[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# the build's needs, and the package's own (for the import check below)
"$venv/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja \
  numpy numba scikit-learn threadpoolctl tqdm

rm -f .whl/hdlfast-*-cp312-*.whl
mkdir -p .whl
HDLFAST_CUDA=ON HDLFAST_CUDA_ARCHITECTURES=90 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  "$venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w .whl .
whl=$(ls .whl/hdlfast-*-cp312-*.whl)

# The check: the wheel alone (no source tree on the path) gives both modules, and the CUDA
# module holds sm_90 code.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$venv/bin/python" -m pip install -q --no-deps --target "$site" "$whl"
(cd "$site" && "$OLDPWD/$venv/bin/python" -c \
  "import hdlfast, hdlfast._native, hdlfast._cuda; print('imports: ok', hdlfast.info())")
objdump=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -n1 || true)
if [[ -n $objdump ]]; then
  "$objdump" --list-elf "$site"/hdlfast/_cuda*.so | grep -q sm_90
else  # no cuobjdump: the fat binary's ELF images still name their architecture
  grep -aq sm_90 "$site"/hdlfast/_cuda*.so
fi || { echo "no sm_90 code in the CUDA module" >&2; exit 1; }
echo "sm_90 code: ok"
echo "$whl ($(du -h "$whl" | cut -f1))"
