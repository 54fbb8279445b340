#!/usr/bin/env bash
# The GPU checks in one call on the device machine (the `device` tool's run; see
# docs/benchmarks/README.md). Prepare here first: bash tools/device_kit.sh (wheels into .whl/).
# Then:  run(command="bash tools/device_check.sh", carry=[".whl"], timeout_s=560)
# It writes to $OUT: device.txt (nvidia-smi, CuPy, driver, runtime), gpu_tests.log (every
# gpu-marked test: the CUDA kernels and the cupy array code against their CPU twins) and
# gpu_imaging.json + bench_gpu.log (tools/bench_gpu.py: the device imager beside ducc0).
set -uo pipefail
OUT=${OUT:-/tmp/contimg-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee "$OUT/device.txt"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache
{
  nvidia-smi
  python3 -c "import cupy, numpy, numba; rt = cupy.cuda.runtime; print('cupy', cupy.__version__, 'driver', rt.driverGetVersion(), 'runtime', rt.runtimeGetVersion(), 'numpy', numpy.__version__, 'numba', numba.__version__); import numba_cuda; print('numba-cuda', numba_cuda.__version__)"
} 2>&1 | tee "$OUT/device.txt"
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -ra \
  tests/test_kernels.py tests/test_selfcheck.py tests/test_wgrid.py tests/test_calibration_twins.py tests/test_flag.py 2>&1 | tee "$OUT/gpu_tests.log"
timeout 280 python3 tools/bench_gpu.py --out "$OUT/gpu_imaging.json" 2>&1 | tee "$OUT/bench_gpu.log"
