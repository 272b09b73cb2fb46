#!/usr/bin/env bash
# Runs the benchmarks of ./bench (Affinity next to its baselines, in one
# process), summarises them with benchstat and prints the ratios the
# performance targets are stated in, with the machine they ran on.
#
#   bench/run.sh                 # COUNT=6 runs of every benchmark
#   COUNT=3 BENCH=Parallel bench/run.sh
#   OUT=new.txt bench/run.sh     # keep the raw output (default: a temp file)
#
# Exits 1 when a target is missed, so CI can tell.
set -euo pipefail

if [[ -n ${OUT:-} && $OUT != /* ]]; then
	OUT=$PWD/$OUT # relative to where the script was called from
fi
cd "$(dirname "$0")/.."

COUNT=${COUNT:-6}
BENCH=${BENCH:-.}
BENCHSTAT=${BENCHSTAT:-golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da}
if [[ -n ${OUT:-} ]]; then
	out=$OUT
else
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/affinity-bench.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	out=$tmp/bench.txt # benchstat labels its column with the file name
fi

echo "== machine"
echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
echo "nproc:  $(nproc)"
echo "go:     $(go version)"
echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo

echo "== go test -bench $BENCH -count $COUNT ./bench"
if ! go test -run '^$' -bench "$BENCH" -benchmem -count "$COUNT" ./bench >"$out" 2>&1; then
	cat "$out"
	exit 2
fi
echo

echo "== benchstat"
(cd "$(dirname "$out")" && go run "$BENCHSTAT" "$(basename "$out")")
echo

echo "== latency and targets (medians of $COUNT runs)"
go run ./bench/ratios "$out"
