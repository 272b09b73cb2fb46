#!/usr/bin/env bash
# pair.sh measures two proxies at the same time on the same core: both run
# on cpu 1, each gets its own wrk (wrk and the two Go backends share cpu 0).
# The machine's speed drifts by 10-30% from minute to minute here, which
# run.sh's interleaved rounds can only average out; run side by side, both
# proxies see the same drift, so their ratio of CPU per request (and their
# latency percentiles) compare within a run. Each proxy gets about half the
# load it gets alone, so the absolute figures are not run.sh's.
#
#   bench/router/pair.sh A B      # A, B: haproxy, or an affinity-router binary
#   RUNS=3 SECS=8 bench/router/pair.sh /tmp/router-old /tmp/router-new
#
# HAProxy gets run.sh's configuration (haproxy-config.sh). Needs haproxy
# (if named), wrk, curl and taskset: run.sh installs them.
set -euo pipefail

RUNS=${RUNS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-32} # per wrk
B1_ADDR=127.0.0.1:19101
B2_ADDR=127.0.0.1:19102
ADDR=(127.0.0.1:18181 127.0.0.1:18182)
ADMIN=(127.0.0.1:18191 127.0.0.1:18192)

die() {
	echo "pair.sh: $*" >&2
	exit 2
}
(($# == 2)) || die "usage: pair.sh A B (each haproxy or an affinity-router binary)"
for t in wrk curl taskset; do command -v "$t" >/dev/null || die "$t not found (bench/router/run.sh installs it)"; done
(($(nproc) >= 2)) || die "needs two cpus"

# shellcheck source=bench/router/haproxy-config.sh
source "$(dirname "${BASH_SOURCE[0]}")/haproxy-config.sh"
# shellcheck source=bench/router/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/../.." # the repository root
start_tmp affinity-router-pair

go build -o "$tmp/backend" ./bench/router/backend
write_key "$tmp/keys"
taskset -c 0 "$tmp/backend" -listen "$B1_ADDR" -name b1 >/dev/null 2>&1 &
pids+=($!)
taskset -c 0 "$tmp/backend" -listen "$B2_ADDR" -name b2 >/dev/null 2>&1 &
pids+=($!)

# start i proxy: starts proxy i and sets pid[i] and cookie[i].
declare -a pid cookie
start() {
	local i=$1 p=$2
	if [[ $p == haproxy ]]; then
		command -v haproxy >/dev/null || die "haproxy not found (bench/router/run.sh installs it)"
		haproxy_config "${ADDR[$i]}" 1 SRV "$B1_ADDR" "$B2_ADDR" >"$tmp/haproxy-$i.cfg"
		taskset -c 1 haproxy -db -f "$tmp/haproxy-$i.cfg" >"$tmp/proxy-$i.log" 2>&1 &
		pid[i]=$!
		cookie[i]="SRV=b1"
	else
		[[ -x $p ]] || die "$p is neither haproxy nor an executable"
		GOMAXPROCS=1 taskset -c 1 "$p" -listen "${ADDR[$i]}" -admin "${ADMIN[$i]}" -keys-file "$tmp/keys" \
			-backend "http://$B1_ADDR" -backend "http://$B2_ADDR" -cookie-name affinity -log-level warn \
			>"$tmp/proxy-$i.log" 2>&1 &
		pid[i]=$!
	fi
	pids+=("${pid[i]}")
	local n
	for n in $(seq 100); do
		curl -s -o /dev/null "http://${ADDR[$i]}/" && break
		kill -0 "${pid[i]}" 2>/dev/null || die "proxy $p exited (see its log: $(cat "$tmp/proxy-$i.log"))"
		sleep 0.1
	done
	if [[ $p != haproxy ]]; then
		cookie[i]=$(curl -s -D - -o /dev/null "http://${ADDR[$i]}/" | tr -d '\r' |
			awk -F'[:;] *' 'tolower($1) == "set-cookie" { print $2; exit }')
		[[ -n ${cookie[i]} ]] || die "proxy $p set no cookie"
	fi
}
start 0 "$1"
start 1 "$2"

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # clock ticks, user + system
load() { # i secs out
	taskset -c 0 wrk -t1 -c"$CONNS" -d"$2"s --latency -H "Cookie: ${cookie[$1]}" "http://${ADDR[$1]}/" >"$3"
}
field() { # file percent
	awk -v p="$2%" '$1 == p { print $2 }' "$1"
}

tick=$(getconf CLK_TCK)
echo "A: $1"
echo "B: $2"
echo "$RUNS run(s) of ${SECS}s, wrk -c$CONNS each, both proxies on cpu 1, wrk and the backends on cpu 0"
printf '%-4s %12s %12s %9s %22s %22s\n' run "A us/req" "B us/req" "B/A cpu" "A p50/p90/p99" "B p50/p90/p99"
for r in $(seq "$RUNS"); do
	load 0 2 /dev/null & # warm-up
	w=$!
	load 1 2 /dev/null
	wait "$w"
	a0=$(cpu "${pid[0]}")
	b0=$(cpu "${pid[1]}")
	load 0 "$SECS" "$tmp/a.txt" &
	w=$!
	load 1 "$SECS" "$tmp/b.txt"
	wait "$w"
	a1=$(cpu "${pid[0]}")
	b1=$(cpu "${pid[1]}")
	na=$(awk '/requests in/ { print $1 }' "$tmp/a.txt")
	nb=$(awk '/requests in/ { print $1 }' "$tmp/b.txt")
	awk -v r="$r" -v t="$tick" -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v na="$na" -v nb="$nb" \
		-v la="$(field "$tmp/a.txt" 50)/$(field "$tmp/a.txt" 90)/$(field "$tmp/a.txt" 99)" \
		-v lb="$(field "$tmp/b.txt" 50)/$(field "$tmp/b.txt" 90)/$(field "$tmp/b.txt" 99)" 'BEGIN {
		ua = a / t * 1e6 / na; ub = b / t * 1e6 / nb
		printf "%-4s %12.2f %12.2f %8.3fx %22s %22s\n", r, ua, ub, ub / ua, la, lb }'
done
