#!/usr/bin/env bash
# Two commits' chain on the same group, alternately, in the same minutes: is a change in
# tools/bench.py's figures the code or the machine? Each commit is checked out into a worktree
# under WORK and run as `contimg run GROUPDIR --config CONFIG` into a fresh root (one warm-up run
# each first: numba compiles into that worktree's cache), ROUNDS times; prints each run's
# per-stage seconds from its summary.json.
#   bash tools/bench_commits_ab.sh 2aab81e HEAD /tmp/bench/in-calibrator /tmp/ab 2
set -euo pipefail
old=${1:?usage: bench_commits_ab.sh OLD NEW GROUPDIR WORK [ROUNDS] [CONFIG]}
new=${2:?}
group=${3:?}
work=${4:?}
rounds=${5:-2}
config=${6:-dsa110}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
for rev in "$old" "$new"; do
  sha=$(git -C "$repo" rev-parse --short "$rev")
  [ -d "$work/$sha" ] || git -C "$repo" worktree add -q --detach "$work/$sha" "$sha"
done
run() {  # $1 sha, $2 label
  local root="$work/root-$1"
  rm -rf "$root"
  (cd "$work/$1" && PYTHONPATH="$work/$1" python -m contimg.cli run "$group" --root "$root" --config "$config" \
    > "$work/$1-$2.log" 2>&1) || [ -f "$root/summary.json" ] || {  # exit 3 (a failed QA gate) still has its timings
      echo "bench_commits_ab.sh: $1 ($2) failed on $group: see $work/$1-$2.log" >&2; exit 1; }
  python - "$root/summary.json" "$1" "$2" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))[0]
t = s["timings_s"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | " + " | ".join(f"{t.get(k, float('nan')):.1f}" for k in
      ("read", "flag", "calibrate", "image", "write")) + f" | {sum(t.values()):.1f} |")
EOF
}
o=$(git -C "$repo" rev-parse --short "$old"); n=$(git -C "$repo" rev-parse --short "$new")
echo "$(date -u +%FT%TZ); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores; group $group; config $config"
echo
echo "| commit | run | read | flag | calibrate | image | write | total |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
run "$o" warm-up; run "$n" warm-up
for r in $(seq "$rounds"); do run "$o" "round $r"; run "$n" "round $r"; done
