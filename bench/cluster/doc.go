// Package cluster holds the benchmarks of Affinity's cluster mode, each next
// to its baseline in the same process and run: a session call that crosses
// members against protoactor's own cluster.Request to a grain on that same
// remote member, a call on the member hosting the worker against a
// single-process runtime, and the heap a session costs in a three-member
// cluster. Members talk over gRPC on loopback, found by protoactor's
// in-memory test provider.
//
//	go test -run '^$' -bench . -benchtime 3s -count 3 ./bench/cluster
//
// They do not build under -race: protoactor's cluster races inside itself.
package cluster
