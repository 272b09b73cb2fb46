#!/usr/bin/env bash
# netpoll-order.sh tests one explanation of affinity-router's tail being
# wider than HAProxy's: the order in which Go's poller wakes goroutines.
# runtime.netpoll (src/runtime/netpoll_epoll.go) walks epoll's events in
# the order the kernel reports them (the order the sockets became ready)
# but collects their goroutines with gList.push, which prepends: the batch
# then runs last-ready-first, where HAProxy serves its events in order.
#
# The script builds affinity-router twice, with the Go toolchain as it is
# and with a copy of it whose netpoll walks the events backwards (one line
# changed, so the batch runs first-ready-first), and measures both and
# HAProxy in alternating rounds, with run.sh's layout: wrk and the two
# backends on cpu 0, the proxy alone on cpu 1 (GOMAXPROCS=1).
#
#   bench/router/netpoll-order.sh             # 6 rounds of 8 s each
#   ROUNDS=12 SECS=10 bench/router/netpoll-order.sh
#
# The patched toolchain is an experiment, never a build of the product.
# Needs haproxy, wrk, curl and taskset (run.sh installs them) and about
# 300 MB in TMPDIR for the toolchain's copy.
set -euo pipefail

ROUNDS=${ROUNDS:-6}
SECS=${SECS:-8}
CONNS=${CONNS:-64}
B1_ADDR=127.0.0.1:19201
B2_ADDR=127.0.0.1:19202
declare -A ADDR=([haproxy]=127.0.0.1:18281 [stock]=127.0.0.1:18282 [fifo]=127.0.0.1:18283)
declare -A ADMIN=([stock]=127.0.0.1:18292 [fifo]=127.0.0.1:18293)

die() {
	echo "netpoll-order.sh: $*" >&2
	exit 2
}
for t in haproxy wrk curl taskset; do command -v "$t" >/dev/null || die "$t not found (bench/router/run.sh installs it)"; done
(($(nproc) >= 2)) || die "needs two cpus"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

# shellcheck source=bench/router/haproxy-config.sh
source "$(dirname "${BASH_SOURCE[0]}")/haproxy-config.sh"
# shellcheck source=bench/router/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/../.." # the repository root
start_tmp affinity-netpoll-order

echo "== building (stock toolchain, and a copy with first-ready-first netpoll)"
goroot=$(go env GOROOT)
cp -a "$goroot" "$tmp/goroot"
poll=$tmp/goroot/src/runtime/netpoll_epoll.go
grep -q '^	for i := int32(0); i < n; i++ {$' "$poll" || die "netpoll_epoll.go's event loop is not the one this script patches ($(go version))"
sed -i 's/^	for i := int32(0); i < n; i++ {$/	for i := n - 1; i >= 0; i-- { \/\/ experiment: push reverses, so the batch runs in epoll order/' "$poll"
go build -o "$tmp/stock" ./cmd/affinity-router
GOROOT=$tmp/goroot "$tmp/goroot/bin/go" build -o "$tmp/fifo" ./cmd/affinity-router
go build -o "$tmp/backend" ./bench/router/backend
cmp -s "$tmp/stock" "$tmp/fifo" && die "the two builds are identical: the patch did not take"

write_key "$tmp/keys"
taskset -c 0 "$tmp/backend" -listen "$B1_ADDR" -name b1 >/dev/null 2>&1 &
pids+=($!)
taskset -c 0 "$tmp/backend" -listen "$B2_ADDR" -name b2 >/dev/null 2>&1 &
pids+=($!)
haproxy_config "${ADDR[haproxy]}" 1 SRV "$B1_ADDR" "$B2_ADDR" >"$tmp/haproxy.cfg"
taskset -c 1 haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
declare -A pid=([haproxy]=$!) cookie=([haproxy]=SRV=b1)
for t in stock fifo; do
	GOMAXPROCS=1 taskset -c 1 "$tmp/$t" -listen "${ADDR[$t]}" -admin "${ADMIN[$t]}" -keys-file "$tmp/keys" \
		-backend "http://$B1_ADDR" -backend "http://$B2_ADDR" -cookie-name affinity -log-level warn >"$tmp/$t.log" 2>&1 &
	pids+=($!)
	pid[$t]=$!
done

# sticky_cookie t: a cookie of proxy t that routes to b1.
sticky_cookie() {
	local a=${ADDR[$1]} c b n
	for n in $(seq 200); do
		c=$(curl -s -D - -o /dev/null "http://$a/" | tr -d '\r' | awk -F'[:;] *' 'tolower($1) == "set-cookie" { print $2; exit }') || true
		b=$(curl -s -D - -o /dev/null -H "Cookie: $c" "http://$a/" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-backend" { print $2 }') || true
		[[ $b == b1 ]] && { echo "$c"; return; }
		sleep 0.05
	done
	die "no cookie of $1 routes to b1"
}
curl -s --retry 50 --retry-connrefused --retry-delay 0 -o /dev/null "http://${ADDR[haproxy]}/" || die "haproxy did not start"
for t in stock fifo; do cookie[$t]=$(sticky_cookie "$t"); done

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system ticks
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), nproc $(nproc), $(uname -r), $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== wrk -t2 -c$CONNS -d${SECS}s, $ROUNDS round(s), each starting one target later"
targets=(haproxy stock fifo)
declare -A shapes
for r in $(seq "$ROUNDS"); do
	for k in 0 1 2; do
		t=${targets[$(((k + r) % 3))]}
		taskset -c 0 wrk -t2 -c"$CONNS" -d2s -H "Cookie: ${cookie[$t]}" "http://${ADDR[$t]}/" >/dev/null
		p0=$(cpu "${pid[$t]}")
		taskset -c 0 wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "Cookie: ${cookie[$t]}" "http://${ADDR[$t]}/" >"$tmp/wrk.txt"
		p1=$(cpu "${pid[$t]}")
		line=$(awk -v r="$r" -v t="$t" -v p=$((p1 - p0)) -v secs="${SECS%s}" -v conns="$CONNS" -v hz="$(getconf CLK_TCK)" '
			function ms(x) { if (x ~ /us$/) return x / 1000; if (x ~ /ms$/) return x + 0; return x * 1000 }
			/requests in/ { n = $1 } $1 == "99%" { p99 = $2 }
			END { rps = n / secs; mean = conns * 1000 / rps
				printf "round %d  %-8s %7.0f req/s  %6.0f req/cpu-s  p99 %8s  p99/mean %.3f\n", r, t, rps, n / (p / hz), p99, ms(p99) / mean }' "$tmp/wrk.txt")
		echo "$line"
		shapes[$t]+="${line##* } "
	done
done
echo "== median p99/mean over the rounds (lower: a narrower tail)"
for t in "${targets[@]}"; do
	printf '%-8s %s\n' "$t" "$(tr ' ' '\n' <<<"${shapes[$t]}" | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }')"
done
