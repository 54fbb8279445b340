#!/usr/bin/env bash
# The wheels the device machine lacks for the GPU checks (its image has numpy, numba, numba-cuda,
# cuda-bindings, scipy, h5py, cupy, pytest, matplotlib; see ../.library/device/KINDS.md): the
# kernels (contimg/kernels) compile there with its own numba-cuda for its CUDA 13, so no CUDA
# wheel is carried (a CUDA 12 cuda-bindings put first on its path would shadow the CUDA 13 one).
# For its Python 3.12, into
# .whl/ (ignored by git; carried with `carry: [".whl"]`). Versions are this machine's.
# Then on the device: bash tools/device_check.sh (it installs them into /tmp/site first).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
pkgs=(ducc0 astropy astropy-iers-data pyerfa pydantic pydantic-core annotated-types typing-inspection
      numcodecs google-crc32c)
for p in "${pkgs[@]}"; do
  v=$(python -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
  [ -n "$v" ] || { echo "$p is not installed here: pip install -e '.[test]' first" >&2; exit 1; }
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$p==$v"
done
du -sh .whl
