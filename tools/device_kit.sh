#!/usr/bin/env bash
# The wheels the device machine lacks for `contimg simulate` and `contimg run` on a DSA-110
# group folder, and for the GPU checks (its image has numpy, numba, numba-cuda, cuda-bindings,
# scipy, h5py, cupy, pytest, matplotlib, pillow, psutil, pyyaml, click, anyio, tabulate,
# python-dateutil, pluggy, typing-extensions ...; see ../.library/device/KINDS.md, "Python
# packages already there"). The kernels (contimg/kernels) compile there with its own numba-cuda
# for its CUDA 13, so no CUDA wheel is carried (a CUDA 12 cuda-bindings put first on its path
# would shadow the CUDA 13 one).
#
# REQUIRED: what `contimg simulate` + `contimg run FOLDER` import (measured here: the modules
# loaded by both commands on a small group, less what the device has), with their needs.
# OPTIONAL: carried only while the whole kit stays under KIT_LIMIT_MIB (the device tool carries
# 64 MiB with the working tree, ~9 MiB): python-casacore (Measurement Sets: `contimg run X.ms`,
# export-ms; not imported for a group folder), uvicorn/websockets/watchfiles (the web view,
# `--web`), dask/distributed (`--workers`/`--cluster`), reproject (mosaics). Each one left out is
# named at the end.
#
# For its Python 3.12, into .whl/ (ignored by git; carried with `carry: [".whl"]`); versions are
# this machine's. Then on the device: bash tools/device_check.sh (it installs them into /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
KIT_LIMIT_MIB=${KIT_LIMIT_MIB:-50}
rm -rf .whl && mkdir -p .whl
required=(ducc0 astropy astropy-iers-data pyerfa pyuvdata docstring-parser setuptools-scm vcs-versioning
          pydantic pydantic-core annotated-types typing-inspection zarr numcodecs donfig google-crc32c
          sqlite-utils sqlite-fts4 click-default-group fastapi starlette opentelemetry-api)
optional=(python-casacore uvicorn websockets watchfiles)
fetch() {  # fetch NAME into DIR at this machine's version
  local p=$1 dir=$2 v
  v=$(python -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
  [ -n "$v" ] || { echo "$p is not installed here: pip install -e '.[test]' first" >&2; return 1; }
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dir" "$p==$v"
}
for p in "${required[@]}"; do fetch "$p" .whl; done
left_out=()
for p in "${optional[@]}"; do
  tmp=$(mktemp -d)
  fetch "$p" "$tmp" || { left_out+=("$p (not installed here)"); rm -rf "$tmp"; continue; }
  have=$(du -sk .whl | cut -f1); add=$(du -sk "$tmp" | cut -f1)
  if (( (have + add) / 1024 < KIT_LIMIT_MIB )); then
    mv "$tmp"/*.whl .whl/
  else
    left_out+=("$p ($((add / 1024)) MiB: over the ${KIT_LIMIT_MIB} MiB kit limit)")
  fi
  rm -rf "$tmp"
done
du -sh .whl
ls .whl
for x in "${left_out[@]}"; do echo "left out: $x"; done
