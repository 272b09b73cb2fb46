// Package bench holds benchmarks that run Affinity next to its baselines in
// one process: protoactor's consistent-hash router with RequestFuture, a
// plain channel worker pool, and a bare RequestFuture round trip.
//
//	go test -run '^$' -bench . -count 6 ./bench | tee new.txt
//	go run golang.org/x/perf/cmd/benchstat new.txt
package bench
