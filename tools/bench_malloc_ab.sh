#!/usr/bin/env bash
# glibc's mmap threshold (service.malloc_mmap_threshold_mib) A/B: `contimg run` on the same two
# real-size groups, 1 MiB and 0 (glibc's own moving threshold) alternately, ROUNDS times; prints
# the process's peak RSS and wall time (GNU time) and each group's stage seconds.
#   contimg simulate /tmp/rs2 --config dsa110 --groups 2
#   bash tools/bench_malloc_ab.sh /tmp/rs2 2
set -euo pipefail
data=${1:?usage: bench_malloc_ab.sh DATA [ROUNDS]}
rounds=${2:-2}
root=$(mktemp -d)
for round in $(seq "$rounds"); do
  for mib in 1 0; do
    rm -rf "$root/r"
    log="$root/run.log"
    /usr/bin/time -f "MAXRSS_KB %M WALL %e" env CONTIMG__SERVICE__MALLOC_MMAP_THRESHOLD_MIB=$mib \
      contimg run "$data" --root "$root/r" --config dsa110 > "$log" 2>&1
    echo "round $round mib $mib: $(tail -1 "$log") | $(grep -o 'completed (.*) in [0-9.]* s' "$log" | sed 's/completed //' | tr '\n' ' ')"
  done
done
rm -rf "$root"
