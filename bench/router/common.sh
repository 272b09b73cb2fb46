# Sourced by pair.sh and netpoll-order.sh (run.sh uses write_key): what the
# scripts that start proxies and backends share.

# start_tmp NAME makes tmp, a temporary directory, and sets an EXIT trap
# that stops every process whose pid is in the array pids and removes tmp.
start_tmp() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	pids=()
	trap stop_all EXIT
}

stop_all() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}

# write_key FILE writes a random signing key for affinity-router: 32 bytes,
# 64 hex characters, readable by its owner only.
write_key() {
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
	echo >>"$1"
	chmod 600 "$1"
}
