#!/usr/bin/env bash
# service.read_beside_imaging A/B: `contimg run` (the service in drain mode, prefetch 1, catalogue
# and mosaic on as configured) on the same real-size groups, with the visibility slot (true: the
# next group is read once the one before it is imaging) and without it (false: as soon as a
# memory slot is free), alternately, ROUNDS times; tools/bench_service.py's table for each run
# (peak RSS per group window and what ran at each peak).
#   contimg simulate /tmp/svcbench/in-real-4 --config dsa110 --groups 4
#   bash tools/bench_gate_ab.sh /tmp/svcbench 4 2
set -euo pipefail
work=${1:?usage: bench_gate_ab.sh WORK GROUPS [ROUNDS]}
groups=${2:?usage: bench_gate_ab.sh WORK GROUPS [ROUNDS]}
rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
for round in $(seq "$rounds"); do
  for gate in false true; do
    echo "## round $round, service.read_beside_imaging = $gate"
    CONTIMG__SERVICE__READ_BESIDE_IMAGING=$gate python "$here/bench_service.py" --work "$work" --groups "$groups" \
      --size real --mode run --prefetch 1 | grep -v '^Curve'
  done
done
