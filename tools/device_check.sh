#!/usr/bin/env bash
# The GPU checks in one call on the device machine (the `device` tool's run; see
# docs/benchmarks/README.md). Prepare here first: bash tools/device_kit.sh (wheels into .whl/).
# Then:  run(command="bash tools/device_check.sh", carry=[".whl"], timeout_s=590)
#
#   bash tools/device_check.sh [STEP ...]      STEP: tests, run, chain, imaging (default: tests run chain)
#
# tests    every gpu-marked test: the CUDA kernels, the cupy array code of every stage against its
#          CPU twin, the whole group chain on the device against the CPU chain    -> gpu_tests.log
# run      `contimg simulate` one real-size group (dsa110: 96 antennas, 768 channels, 24
#          integrations) on the machine, then `contimg run` on it end to end with every stage's
#          backend "gpu" (self-checked at start-up, refusing to start when a check fails): the
#          products, the group's host<->device bytes and stage times               -> run.log
# chain    tools/bench_gpu.py --chain-only on that group: files -> FITS per stage (CUDA events),
#          quick and full, host<->device bytes, the pool's high-water mark, the CPU chain beside
#          -> gpu_chain.json (written as it goes), bench_gpu_chain.log
# imaging  tools/bench_gpu.py's gridding/degridding/Högbom/clean benchmarks beside ducc0
#          -> gpu_imaging.json, bench_gpu.log (its own call: ~280 s)
# Each step has its own time limit, and every step also stops at the call's deadline (BUDGET_S,
# default 560 s after the start, inside the device tool's 590 s): a step that would start with
# less than 20 s left is skipped and says so, a step cut short keeps what it wrote. So the default
# steps never outrun one call, whatever the machine. Nothing here writes a figure anywhere but $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/contimg-device}
mkdir -p "$OUT"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests run chain)
want() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
DEADLINE=$((SECONDS + ${BUDGET_S:-560}))
# limit NAME SECONDS: the step's own limit, or what is left before the deadline if that is less;
# prints 0 (and says so in $OUT/device.txt) when under 20 s are left
limit() {
  local left=$((DEADLINE - SECONDS)) l=$2
  [ "$left" -lt "$l" ] && l=$left
  if [ "$l" -lt 20 ]; then echo "$1: skipped, ${left} s left of the call's budget" >> "$OUT/device.txt"; echo 0; return; fi
  echo "$l"
}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee "$OUT/device.txt"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache
{
  nvidia-smi
  python3 -c "import cupy, numpy, numba; rt = cupy.cuda.runtime; print('cupy', cupy.__version__, 'driver', rt.driverGetVersion(), 'runtime', rt.runtimeGetVersion(), 'numpy', numpy.__version__, 'numba', numba.__version__); import numba_cuda; print('numba-cuda', numba_cuda.__version__)"
  python3 -c "import contimg.cli, contimg.pipeline.stages, contimg.service.batch; print('contimg imports: ok')"
} 2>&1 | tee "$OUT/device.txt"
SIM=/tmp/contimg-rs1
ROOT=/tmp/contimg-root
if want tests && L=$(limit tests 170) && [ "$L" -gt 0 ]; then
  timeout "$L" python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -ra \
    tests/test_kernels.py tests/test_selfcheck.py tests/test_wgrid.py tests/test_calibration_twins.py tests/test_flag.py \
    tests/test_device_twins.py tests/test_device_chain.py 2>&1 | tee "$OUT/gpu_tests.log"
fi
if want run || want chain; then
  if ! ls "$SIM"/*_sb*.hdf5 >/dev/null 2>&1; then
    { echo "== contimg simulate (dsa110, 1 group)"; date -u; t0=$SECONDS
      L=$(limit simulate 150); [ "$L" -gt 0 ] && timeout "$L" python3 -m contimg.cli simulate "$SIM" --config dsa110 --groups 1
      echo "simulate: exit $?, $((SECONDS - t0)) s wall"; } 2>&1 | tee -a "$OUT/run.log"
  fi
fi
if want run && L=$(limit run 170) && [ "$L" -gt 0 ]; then
  cat > /tmp/contimg-gpu.toml <<'TOML'
name = "device-check"
base = "dsa110"
[flag]
backend = "gpu"
[calibrate]
backend = "gpu"
[image]
backend = "gpu"
TOML
  rm -rf "$ROOT"
  { echo "== contimg run (every stage backend gpu)"; date -u; t0=$SECONDS
    timeout "$L" python3 -m contimg.cli run "$SIM" --root "$ROOT" --config /tmp/contimg-gpu.toml
    echo "run: exit $?, $((SECONDS - t0)) s wall"
    ls -l "$ROOT"/products/*/ 2>&1 | head -20
    python3 - "$ROOT" <<'PY'
import json, sys
from pathlib import Path
from contimg.io.store import read_zarr
for p in sorted(Path(sys.argv[1]).glob("products/*/image.zarr")):
    _, attrs = read_zarr(p)
    meta = attrs.get("group_meta", {})
    print(p.parent.name, "host<->device bytes:", json.dumps(meta.get("transfer_bytes")))
health = Path(sys.argv[1]) / "state" / "health.json"
if health.is_file():
    h = json.loads(health.read_text())
    print("backends:", json.dumps(h.get("backends"), default=str)[:2000])
PY
  } 2>&1 | tee -a "$OUT/run.log"
fi
if want chain && L=$(limit chain 200) && [ "$L" -gt 0 ]; then
  timeout "$L" python3 tools/bench_gpu.py --chain "$SIM" --chain-only --out "$OUT/gpu_chain.json" 2>&1 \
    | tee "$OUT/bench_gpu_chain.log"
fi
if want imaging && L=$(limit imaging 280) && [ "$L" -gt 0 ]; then
  timeout "$L" python3 tools/bench_gpu.py --out "$OUT/gpu_imaging.json" 2>&1 | tee "$OUT/bench_gpu.log"
fi
