#!/usr/bin/env bash
# Measures the HTTP throughput, tail latency and CPU cost per request of
# affinity-router next to its peers doing the same job (session affinity over
# two backends): HAProxy (cookie insert), nginx (hash of a client cookie,
# consistent) and Caddy (lb_policy cookie), with a direct-to-backend run as
# the ceiling and a bare Go httputil.ReverseProxy to one backend
# (bench/router/bareproxy, no affinity) as the floor of Go's net/http stack.
# Everything listens on loopback; every server is started and stopped by
# this script, with its config in a temp dir (no system services).
#
#   bench/router/run.sh                       # one round, wrk -t2 -c64 -d10s
#   ROUNDS=3 bench/router/run.sh              # 3 interleaved rounds, medians
#   DURATION=30s CONNS=128 THREADS=2 bench/router/run.sh
#   TARGETS="direct haproxy" bench/router/run.sh   # without the Go proxies
#
# Other knobs: WARMUP (2s, before every measurement), PIN (auto|0|1),
# LOAD_CPUS (0: wrk and the backends), PROXY_CPUS (1: the proxy under test),
# TARGET_RATIO (0.9: affinity-router's requests per CPU-second over
# HAProxy's), CADDY_RATIO (1.5: the same over Caddy's), READY_TIMEOUT (30 s), QUIET_WAIT (120 s: how long to
# wait before each measurement for other work on the machine to stop; a
# measurement taken on a busy machine is flagged), NOISE_LIMIT (15: percent
# of a core that other processes may use during a measured run) and
# NOISE_RETRIES (2: how often a run over that limit is taken again before it
# is kept and flagged), KEEP_TMP=1 (keep logs and configs).
#
# Every affinity proxy is measured on sticky hits only: a cookie is first
# obtained from each with curl (nginx sets none: a fixed client cookie is
# hashed), checked to route twice to the same backend, and sent with every
# wrk request. reverseproxy has one backend (b1) and needs no cookie.
#
# CPU layout (PIN=1, the default on 2+ cores): wrk and both backends share
# LOAD_CPUS, the proxy under test runs alone on PROXY_CPUS, with as many
# threads as it has CPUs there: HAProxy's nbthread, nginx's worker_processes
# (one process: master_process off) and the GOMAXPROCS of Caddy,
# affinity-router and bareproxy are all set to that number (1 by default), so
# each proxy gets exactly the same CPU. The cpu-s column is the CPU time
# (user + system) the target process (the proxy; backend b1 for direct) used
# during the measured run, cpu% the same per second of it (100% = one core):
# a proxy well under 100% of its cores was not the bottleneck, the load side
# was. req/cpu-s (requests per CPU-second the target used) is then the fair
# measure of the proxy's own cost, and the targets are stated on it.
#
# The last lines compare affinity-router with bareproxy (its overhead over
# Go's stdlib proxy), HAProxy and Caddy (the targets: at least TARGET_RATIO
# of HAProxy's and CADDY_RATIO of Caddy's requests per CPU-second, and a p99
# no worse than HAProxy's). Exits 1 when a target is missed, 2 when something
# could not be set up or measured.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-1}
ALL_TARGETS="direct haproxy nginx caddy reverseproxy affinity"
TARGETS=${TARGETS:-$ALL_TARGETS}
TARGET_RATIO=${TARGET_RATIO:-0.9}
CADDY_RATIO=${CADDY_RATIO:-1.5}
PIN=${PIN:-auto}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
READY_TIMEOUT=${READY_TIMEOUT:-30}
QUIET_WAIT=${QUIET_WAIT:-120}
NOISE_LIMIT=${NOISE_LIMIT:-15}
NOISE_RETRIES=${NOISE_RETRIES:-2}
ROUTER_COOKIE=${ROUTER_COOKIE:-affinity}
HAPROXY_COOKIE=SRV
CADDY_COOKIE=lb
NGINX_COOKIE=SRVN
NGINX_SESSION=${NGINX_SESSION:-bench-session} # the client cookie nginx hashes (a number is appended)

B1_ADDR=127.0.0.1:19001
B2_ADDR=127.0.0.1:19002
HAPROXY_ADDR=127.0.0.1:18081
ROUTER_ADDR=127.0.0.1:18080
BAREPROXY_ADDR=127.0.0.1:18082
CADDY_ADDR=127.0.0.1:18083
NGINX_ADDR=127.0.0.1:18084
ROUTER_ADMIN=127.0.0.1:18090

die() {
	echo "run.sh: $*" >&2
	exit 2
}

has() { [[ " $TARGETS " == *" $1 "* ]]; }

# shellcheck source=bench/router/haproxy-config.sh
source "$(dirname "${BASH_SOURCE[0]}")/haproxy-config.sh"
# shellcheck source=bench/router/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for t in $TARGETS; do
	case $t in direct | haproxy | nginx | caddy | reverseproxy | affinity) ;; *) die "unknown target '$t' in TARGETS ($ALL_TARGETS)" ;; esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"

cd "$(dirname "${BASH_SOURCE[0]}")/../.." # the repository root
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found"
unset GOMAXPROCS # set explicitly below where it matters

# --- tools -------------------------------------------------------------------

install_tools() {
	local missing=() sudo=()
	local t
	for t in haproxy nginx caddy; do # the Debian packages are named as the commands
		if has "$t" && ! command -v "$t" >/dev/null; then missing+=("$t"); fi
	done
	command -v wrk >/dev/null || missing+=(wrk)
	command -v curl >/dev/null || missing+=(curl)
	((${#missing[@]} == 0)) && return 0
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
		sudo=(sudo)
	fi
	echo "== installing ${missing[*]} (Debian packages)"
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install_tools

if [[ $PIN == auto ]]; then
	if (($(nproc) >= 2)) && command -v taskset >/dev/null; then PIN=1; else PIN=0; fi
fi
if ((PIN)); then
	load=(taskset -c "$LOAD_CPUS")
	proxy=(taskset -c "$PROXY_CPUS")
	proxy_threads=$(taskset -c "$PROXY_CPUS" nproc)
	layout="wrk + backends on cpu $LOAD_CPUS, proxy alone on cpu $PROXY_CPUS ($proxy_threads thread(s))"
else
	load=()
	proxy=()
	proxy_threads=$(nproc)
	layout="not pinned: wrk, backends and proxy share all $(nproc) cpus (proxy: $proxy_threads threads)"
fi

# --- processes and cleanup ---------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/affinity-router-bench.XXXXXX")
pids=()

cleanup() {
	local rc=$? pid i alive
	trap - EXIT INT TERM
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for ((i = 0; i < 50; i++)); do # up to 5 s to exit, then SIGKILL
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if ((rc == 2)); then
		for f in "$tmp"/*.log; do
			[[ -s $f ]] || continue
			echo "--- last lines of $(basename "$f")" >&2
			tail -n 20 "$f" >&2
		done
	fi
	if [[ ${KEEP_TMP:-0} == 1 ]]; then
		echo "kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { # host:port
	(exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

for addr in "$B1_ADDR" "$B2_ADDR" \
	$(has haproxy && echo "$HAPROXY_ADDR") \
	$(has reverseproxy && echo "$BAREPROXY_ADDR") \
	$(has caddy && echo "$CADDY_ADDR") \
	$(has nginx && echo "$NGINX_ADDR") \
	$(has affinity && echo "$ROUTER_ADDR $ROUTER_ADMIN"); do
	port_busy "$addr" && die "$addr is already in use (a stale run?)"
done

wait_ready() { # name pid url: polls until the url answers 200
	local name=$1 pid=$2 url=$3 code deadline=$((SECONDS + READY_TIMEOUT))
	while ((SECONDS < deadline)); do
		kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready (see $name.log below)"
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
		[[ $code == 200 ]] && return 0
		sleep 0.05
	done
	die "$name not ready at $url after ${READY_TIMEOUT}s (last status: ${code:-none})"
}

# --- build -------------------------------------------------------------------

echo "== building"
go build -o "$tmp/backend" ./bench/router/backend
if has reverseproxy; then
	go build -o "$tmp/bareproxy" ./bench/router/bareproxy
fi
if has affinity; then
	go build -o "$tmp/affinity-router" ./cmd/affinity-router ||
		die "cmd/affinity-router does not build (TARGETS=\"direct haproxy reverseproxy\" measures without it)"
fi

# --- start -------------------------------------------------------------------

echo "== starting"
"${load[@]}" "$tmp/backend" -listen "$B1_ADDR" -name b1 >"$tmp/backend-b1.log" 2>&1 &
b1_pid=$!
pids+=("$b1_pid")
"${load[@]}" "$tmp/backend" -listen "$B2_ADDR" -name b2 >"$tmp/backend-b2.log" 2>&1 &
b2_pid=$!
pids+=("$b2_pid")
wait_ready backend-b1 "$b1_pid" "http://$B1_ADDR/"
wait_ready backend-b2 "$b2_pid" "http://$B2_ADDR/"

# HAProxy and nginx send the backends the X-Forwarded-For, -Host and -Proto
# headers affinity-router sends (see haproxy-config.sh).
if has haproxy; then
	haproxy_config "$HAPROXY_ADDR" "$proxy_threads" "$HAPROXY_COOKIE" "$B1_ADDR" "$B2_ADDR" >"$tmp/haproxy.cfg"
	haproxy -c -q -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 || die "haproxy rejects its config (see haproxy.log below)"
	"${proxy[@]}" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
	haproxy_pid=$!
	pids+=("$haproxy_pid")
	wait_ready haproxy "$haproxy_pid" "http://$HAPROXY_ADDR/"
fi

if has nginx; then
	# One process (master_process off) doing the worker's job: its CPU time
	# is the whole proxy's, like HAProxy's with nbthread 1. The upstream is
	# chosen by a consistent hash of a client cookie; nginx sets no cookie of
	# its own (that needs the commercial sticky module).
	mkdir -p "$tmp/nginx"
	cat >"$tmp/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes $proxy_threads;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 30s;

    upstream backends {
        hash \$cookie_$NGINX_COOKIE consistent;
        server $B1_ADDR;
        server $B2_ADDR;
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen $NGINX_ADDR;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
	nginx -t -q -p "$tmp/nginx" -c "$tmp/nginx.conf" >"$tmp/nginx.log" 2>&1 || die "nginx rejects its config (see nginx.log below)"
	"${proxy[@]}" nginx -p "$tmp/nginx" -c "$tmp/nginx.conf" >>"$tmp/nginx.log" 2>&1 &
	nginx_pid=$!
	pids+=("$nginx_pid")
	wait_ready nginx "$nginx_pid" "http://$NGINX_ADDR/"
fi

if has caddy; then
	# No admin endpoint, no automatic HTTPS; whatever it saves (its config
	# autosave) goes to the temp dir. Its idle pool per backend is raised from
	# Caddy's 32 to 256, as the other proxies keep up to 256.
	mkdir -p "$tmp/caddy"
	cat >"$tmp/Caddyfile" <<EOF
{
	admin off
	auto_https off
	storage file_system $tmp/caddy
}

http://$CADDY_ADDR {
	reverse_proxy $B1_ADDR $B2_ADDR {
		lb_policy cookie $CADDY_COOKIE
		health_uri /
		health_interval 2s
		transport http {
			keepalive 30s
			keepalive_idle_conns 512
			keepalive_idle_conns_per_host 256
		}
	}
}
EOF
	caddy_env=(env HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy")
	"${caddy_env[@]}" caddy validate --adapter caddyfile --config "$tmp/Caddyfile" >"$tmp/caddy.log" 2>&1 ||
		die "caddy rejects its config (see caddy.log below)"
	"${caddy_env[@]}" GOMAXPROCS="$proxy_threads" "${proxy[@]}" \
		caddy run --adapter caddyfile --config "$tmp/Caddyfile" >>"$tmp/caddy.log" 2>&1 &
	caddy_pid=$!
	pids+=("$caddy_pid")
	wait_ready caddy "$caddy_pid" "http://$CADDY_ADDR/"
fi

if has reverseproxy; then
	GOMAXPROCS=$proxy_threads "${proxy[@]}" "$tmp/bareproxy" \
		-listen "$BAREPROXY_ADDR" -backend "http://$B1_ADDR" >"$tmp/bareproxy.log" 2>&1 &
	bareproxy_pid=$!
	pids+=("$bareproxy_pid")
	wait_ready bareproxy "$bareproxy_pid" "http://$BAREPROXY_ADDR/"
fi

if has affinity; then
	write_key "$tmp/keys"
	GOMAXPROCS=$proxy_threads "${proxy[@]}" "$tmp/affinity-router" \
		-listen "$ROUTER_ADDR" -admin "$ROUTER_ADMIN" -keys-file "$tmp/keys" \
		-backend "http://$B1_ADDR" -backend "http://$B2_ADDR" \
		-cookie-name "$ROUTER_COOKIE" -log-level warn >"$tmp/affinity-router.log" 2>&1 &
	router_pid=$!
	pids+=("$router_pid")
	wait_ready affinity-router "$router_pid" "http://$ROUTER_ADMIN/healthz"
	wait_ready affinity-router "$router_pid" "http://$ROUTER_ADDR/"
fi

# --- sticky cookies ----------------------------------------------------------

header() { # name: the first value of that header in the headers on stdin
	tr -d '\r' | awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$1")" '
		{ i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); print v; exit } }'
}

sticky_cookie() { # label url cookie-name [value]: prints name=value after checking it sticks
	# Without a value, the cookie is the one the proxy sets on a first
	# request; with one (nginx, which sets none), the client makes it up.
	# Every proxy is measured on backend b1, the one the direct row uses:
	# new sessions (or made-up values) are drawn until one lands there.
	local label=$1 url=$2 name=$3 value=${4:-} hdrs cookie first b1 b2 try
	for try in $(seq 50); do
		if [[ -n $value ]]; then
			cookie=$name=$value-$try
			hdrs=$(curl -s -D - -o /dev/null --max-time 5 -H "Cookie: $cookie" "$url") || die "$label: no answer from $url"
		else
			hdrs=$(curl -s -D - -o /dev/null --max-time 5 "$url") || die "$label: no answer from $url"
			cookie=$(tr -d '\r' <<<"$hdrs" | awk -v n="$name" '
				tolower($1) == "set-cookie:" { sub(/^[^:]*:[ \t]*/, ""); split($0, a, ";"); if (index(a[1], n "=") == 1) { print a[1]; exit } }')
			[[ -n $cookie ]] || die "$label: no $name cookie in the first answer:"$'\n'"$hdrs"
		fi
		first=$(header X-Backend <<<"$hdrs")
		[[ $first == b1 ]] && break
	done
	[[ $first == b1 ]] || die "$label: no session landed on backend b1 in 50 tries"
	hdrs=$(curl -s -D - -o /dev/null --max-time 5 -H "Cookie: $cookie" "$url") || die "$label: no answer from $url"
	b1=$(header X-Backend <<<"$hdrs")
	hdrs=$(curl -s -D - -o /dev/null --max-time 5 -H "Cookie: $cookie" "$url") || die "$label: no answer from $url"
	b2=$(header X-Backend <<<"$hdrs")
	if [[ -z $b1 || $b1 != "$b2" || $b1 != "$first" ]]; then
		die "$label: cookie $cookie does not stick: backends '$first', '$b1', '$b2'"
	fi
	echo "$label: cookie sticks to backend $b1 ($(head -c 60 <<<"$cookie")...)" >&2
	if [[ -n $(header Set-Cookie <<<"$hdrs") ]]; then
		echo "$label: note: a sticky hit still answers with Set-Cookie: $(header Set-Cookie <<<"$hdrs" | head -c 80)" >&2
	fi
	echo "$cookie"
}

declare -A url cookie pid
url[direct]=http://$B1_ADDR/
cookie[direct]=
pid[direct]=$b1_pid
if has haproxy; then
	url[haproxy]=http://$HAPROXY_ADDR/
	cookie[haproxy]=$(sticky_cookie haproxy "${url[haproxy]}" "$HAPROXY_COOKIE")
	pid[haproxy]=$haproxy_pid
fi
if has nginx; then
	url[nginx]=http://$NGINX_ADDR/
	cookie[nginx]=$(sticky_cookie nginx "${url[nginx]}" "$NGINX_COOKIE" "$NGINX_SESSION")
	pid[nginx]=$nginx_pid
fi
if has caddy; then
	url[caddy]=http://$CADDY_ADDR/
	cookie[caddy]=$(sticky_cookie caddy "${url[caddy]}" "$CADDY_COOKIE")
	pid[caddy]=$caddy_pid
fi
if has reverseproxy; then
	url[reverseproxy]=http://$BAREPROXY_ADDR/
	cookie[reverseproxy]= # one backend, no affinity
	pid[reverseproxy]=$bareproxy_pid
fi
if has affinity; then
	url[affinity]=http://$ROUTER_ADDR/
	cookie[affinity]=$(sticky_cookie affinity "${url[affinity]}" "$ROUTER_COOKIE")
	pid[affinity]=$router_pid
fi

# --- measure -----------------------------------------------------------------

cpu_ticks() { # pid: user + system CPU ticks so far
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

to_ms() { # a wrk latency (850.00us, 1.23ms, 2.00s, 1.00m): milliseconds
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
		if (f < 0) exit 1
		printf "%.3f\n", n * f }'
}

wrk_once() { # target duration out-file
	local t=$1 hdr=()
	[[ -n ${cookie[$t]} ]] && hdr=(-H "Cookie: ${cookie[$t]}")
	"${load[@]}" wrk -t "$THREADS" -c "$CONNS" -d "$2" --latency "${hdr[@]}" "${url[$t]}" >"$3" 2>&1 ||
		die "$t: wrk failed: $(cat "$3")"
}

tick=$(getconf CLK_TCK)
results=$tmp/results.tsv
: >"$results"

router_counts() { # requests and sticky hits so far, from affinity-router's /metrics (if it has them)
	curl -s --max-time 2 "http://$ROUTER_ADMIN/metrics" | awk '
		$1 == "affinity_router_requests_total" { r = $2 }
		$1 == "affinity_router_affinity_hits_total" { h = $2 }
		END { if (r != "" && h != "") print r, h }' || true
}

check_router_hits() { # round: were all requests of the measured run sticky hits?
	local r0 h0 r1 h1
	read -r r0 h0 <"$tmp/counts0" || return 0
	read -r r1 h1 < <(router_counts) || return 0
	awk -v r0="$r0" -v h0="$h0" -v r1="$r1" -v h1="$h1" -v round="$1" 'BEGIN {
		printf "%saffinity round %s: %d of %d requests were sticky hits (router metrics)\n",
			(r1 - r0 == h1 - h0 ? "" : "note: "), round, h1 - h0, r1 - r0 }' >&2
}

others_cpu() { # var: sets it to the CPU seconds so far of everything but this benchmark
	local ours=0 p
	for p in "${pids[@]}"; do ours=$((ours + $(cpu_ticks "$p"))); done
	# The shell's reaped children: every wrk (and curl) so far. Not in a
	# $(...): a subshell's children start from zero.
	times >"$tmp/times"
	printf -v "$1" '%s' "$(awk -v hz="$tick" -v ours="$ours" -v kids="$(tail -n1 "$tmp/times")" -v stat="$(head -n1 /proc/stat)" 'BEGIN {
		split(kids, k, " "); for (i = 1; i <= 2; i++) { split(k[i], a, /[ms]/); w += a[1] * 60 + a[2] }
		n = split(stat, x, " "); for (i = 2; i <= n && i <= 9; i++) if (i != 5 && i != 6) busy += x[i]
		printf "%.3f\n", (busy - ours) / hz - w }')"
}

cpu_busy() { # percent of all cpus busy over 0.5 s, from /proc/stat
	local a b
	a=$(head -n1 /proc/stat)
	sleep 0.5
	b=$(head -n1 /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {
		n = split(a, x); split(b, y)
		for (i = 2; i <= n; i++) { d = y[i] - x[i]; all += d; if (i == 5 || i == 6) idle += d }
		printf "%.0f\n", (all > 0 ? (all - idle) * 100 / all : 0) }'
}

wait_quiet() { # label: waits up to QUIET_WAIT s for other work on the machine to stop
	# Nothing of ours runs now, so what keeps the cpus busy is someone else's.
	local busy deadline=$((SECONDS + QUIET_WAIT))
	busy=$(cpu_busy)
	while ((busy > 10 && SECONDS < deadline)); do
		sleep 1
		busy=$(cpu_busy)
	done
	if ((busy > 10)); then
		echo "note: $1: the machine is still ${busy}% busy with other work after ${QUIET_WAIT}s: measuring anyway" >&2
	fi
}

measure() { # target round
	local t=$1 out=$tmp/wrk-$1-$2.txt c0 c1 o0 o1 w0 w1 rps n p99 shape cpu cpus eff other try
	for ((try = 0; ; try++)); do
		wait_quiet "$t round $2"
		wrk_once "$t" "$WARMUP" "$tmp/warmup.txt"
		[[ $t == affinity ]] && router_counts >"$tmp/counts0"
		c0=$(cpu_ticks "${pid[$t]}")
		others_cpu o0
		w0=$(date +%s%N)
		wrk_once "$t" "$DURATION" "$out"
		w1=$(date +%s%N)
		others_cpu o1
		c1=$(cpu_ticks "${pid[$t]}")
		other=$(awk -v a="$o0" -v b="$o1" -v ns="$((w1 - w0))" 'BEGIN { d = b - a; printf "%.0f\n", (d > 0 ? d / (ns / 1e9) * 100 : 0) }')
		((other > NOISE_LIMIT && try < NOISE_RETRIES)) || break
		echo "note: $t round $2: other work took ${other}% of a core during the run: measuring again" >&2
	done
	if ((other > NOISE_LIMIT)); then
		echo "note: $t round $2: other work took ${other}% of a core during the run: this one is noisy" >&2
	fi
	[[ $t == affinity ]] && check_router_hits "$2"
	if grep -q 'Non-2xx or 3xx responses' "$out"; then
		die "$t: errors in the measured run:"$'\n'"$(cat "$out")"
	fi
	if grep -q 'Socket errors' "$out"; then
		echo "note: $t round $2: $(grep 'Socket errors' "$out" | sed 's/^ *//')" >&2
	fi
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
	n=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")
	p99=$(awk '$1 == "99%" { print $2 }' "$out")
	[[ -n $rps && -n $n && -n $p99 ]] || die "$t: cannot read wrk's output:"$'\n'"$(cat "$out")"
	p99=$(to_ms "$p99") || die "$t: unknown latency unit in '$p99'"
	# CPU-seconds of the target during the measured run; requests per
	# CPU-second is every request wrk counted over them.
	cpus=$(awk -v d="$((c1 - c0))" -v hz="$tick" 'BEGIN { printf "%.2f\n", d / hz }')
	cpu=$(awk -v c="$cpus" -v ns="$((w1 - w0))" 'BEGIN { printf "%.0f\n", c / (ns / 1e9) * 100 }')
	eff=$(awk -v n="$n" -v c="$cpus" 'BEGIN { printf "%.0f\n", (c > 0 ? n / c : 0) }')
	# p99 over the mean latency, which wrk's closed loop fixes at CONNS
	# over the throughput: the tail's shape, free of the machine's drift.
	shape=$(awk -v p="$p99" -v r="$rps" -v c="$CONNS" 'BEGIN { printf "%.2f\n", (r > 0 ? p / (c * 1000 / r) : 0) }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$2" "$t" "$rps" "$p99" "$cpu" "$eff" "$other" "$cpus" "$shape" >>"$results"
	printf '  round %d  %-12s %10.0f req/s  p99 %8.2f ms (%s x mean)  cpu %6.2f s (%3s%%)  %8s req/cpu-s  (others: %s%%)\n' \
		"$2" "$t" "$rps" "$p99" "$shape" "$cpus" "$cpu" "$eff" "$other"
}

version() { # command...: the first line it prints, or "-"
	"$@" 2>&1 | head -n1 || true
}

echo
echo "== machine"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu:      $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown), nproc $(nproc)"
echo "kernel:   $(uname -sr)"
echo "layout:   $layout"
has haproxy && echo "haproxy:  $(version haproxy -v)"
has nginx && echo "nginx:    $(version nginx -v)"
has caddy && echo "caddy:    $(version caddy version)"
echo "wrk:      $(version wrk -v)"
echo "go:       $(go version)"
echo "commit:   $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "load:     wrk -t $THREADS -c $CONNS -d $DURATION --latency (warm-up $WARMUP before each), $ROUNDS round(s), each starting one target later"
echo

echo "== measuring"
# Each round starts one target later than the one before, so that no
# target always runs right after the same others (whose idle connections
# the backend still holds) or in the same place in a round.
read -ra order <<<"$ALL_TARGETS"
for ((r = 1; r <= ROUNDS; r++)); do
	for ((i = 0; i < ${#order[@]}; i++)); do
		t=${order[(i + r - 1) % ${#order[@]}]}
		has "$t" && measure "$t" "$r"
	done
done

# --- report ------------------------------------------------------------------

median() { # column target: the median of that column over the rounds
	awk -F'\t' -v c="$1" -v t="$2" '$2 == t { print $c }' "$results" | sort -g |
		awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

spread() { # column target: "min-max" of that column over the rounds
	awk -F'\t' -v c="$1" -v t="$2" '$2 == t { v = $c + 0; if (n++ == 0 || v < lo) lo = v; if (n == 1 || v > hi) hi = v }
		END { if (n > 1) printf "%.0f-%.0f\n", lo, hi; else print "-" }' "$results"
}

declare -A rps p99 p99mean cpu cpus eff effspread
for t in $ALL_TARGETS; do
	has "$t" || continue
	rps[$t]=$(median 3 "$t")
	p99[$t]=$(median 4 "$t")
	p99mean[$t]=$(median 9 "$t")
	cpu[$t]=$(median 5 "$t")
	eff[$t]=$(median 6 "$t")
	cpus[$t]=$(median 8 "$t")
	effspread[$t]=$(spread 6 "$t")
done

ratio() { # a b: a/b as "1.23x", or "-" without b
	awk -v a="$1" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2fx\n", a / b; else print "-" }'
}

noisy=$(awk -F'\t' -v l="$NOISE_LIMIT" '$7 > l' "$results" | wc -l)
echo
if ((noisy > 0)); then
	echo "note: $noisy of $(wc -l <"$results") measurements ran while other work took over ${NOISE_LIMIT}% of a core: see above"
fi
if ((ROUNDS > 1)); then
	echo "== result (median of $ROUNDS rounds; req/cpu-s range over the rounds)"
else
	echo "== result"
fi
printf '%-12s %11s %9s %8s %6s %5s %10s %13s %11s %9s\n' target requests/s p99 p99/mean cpu-s cpu% req/cpu-s range vs-haproxy vs-caddy
for t in $ALL_TARGETS; do
	has "$t" || continue
	printf '%-12s %11.0f %7.2fms %8.2f %6.2f %4.0f%% %10.0f %13s %11s %9s\n' "$t" "${rps[$t]}" "${p99[$t]}" "${p99mean[$t]}" "${cpus[$t]}" "${cpu[$t]}" \
		"${eff[$t]}" "${effspread[$t]}" "$(ratio "${eff[$t]}" "${eff[haproxy]:-}")" "$(ratio "${eff[$t]}" "${eff[caddy]:-}")"
done
echo "(vs-haproxy and vs-caddy compare requests per CPU-second; p99/mean is p99 over wrk's mean latency, $CONNS connections / requests/s)"

has affinity || exit 0
echo
if has reverseproxy; then
	echo "affinity/reverseproxy requests per CPU-second: $(ratio "${eff[affinity]}" "${eff[reverseproxy]}")"
fi
missed=0
verdict() { # label measured ok(0|1)
	if (($3)); then
		echo "$1: $2: met"
	else
		echo "$1: $2: MISSED"
		missed=1
	fi
}
if has haproxy; then
	r=$(ratio "${eff[affinity]}" "${eff[haproxy]}")
	verdict "affinity/haproxy requests per CPU-second (target >= ${TARGET_RATIO}x)" "$r" \
		"$(awk -v a="${eff[affinity]}" -v b="${eff[haproxy]}" -v w="$TARGET_RATIO" 'BEGIN { print (a >= w * b) ? 1 : 0 }')"
	verdict "affinity p99 vs haproxy's (target: no worse)" "${p99[affinity]} ms vs ${p99[haproxy]} ms" \
		"$(awk -v a="${p99[affinity]}" -v b="${p99[haproxy]}" 'BEGIN { print (a <= b) ? 1 : 0 }')"
	echo "affinity p99/mean vs haproxy's (no target; steadier than p99 across the machine's drift): ${p99mean[affinity]} vs ${p99mean[haproxy]}"
fi
if has caddy; then
	r=$(ratio "${eff[affinity]}" "${eff[caddy]}")
	verdict "affinity/caddy requests per CPU-second (target >= ${CADDY_RATIO}x)" "$r" \
		"$(awk -v a="${eff[affinity]}" -v b="${eff[caddy]}" -v w="$CADDY_RATIO" 'BEGIN { print (a >= w * b) ? 1 : 0 }')"
fi
exit "$missed"
