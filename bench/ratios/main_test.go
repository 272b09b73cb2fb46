package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sample = `goos: linux
BenchmarkParallel/c64-s1k-w8/affinity/hint-8                  1000   300 ns/op  9000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity/hint-8                  1000   100 ns/op  7000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity/hint-8                  1000   200 ns/op  8000 p99-ns  64 B/op  3 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity/strict_queue-8          1000   400 ns/op  8000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity-cancellable/hint-8      1000   320 ns/op  9000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity-cancellable/strict_queue-8 1000 480 ns/op  9000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity-runoncaller/hint-8      1000   240 ns/op  9000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/affinity-runoncaller/strict_queue-8 1000 320 ns/op  9000 p99-ns  64 B/op  2 allocs/op
BenchmarkParallel/c64-s1k-w8/sticky-channels-8                1000   160 ns/op  5000 p99-ns   0 B/op  0 allocs/op
BenchmarkParallel/c64-s1k-w8/protoactor-consistent-hash-8     1000  1000 ns/op 20000 p99-ns 500 B/op 10 allocs/op
BenchmarkParallel/c64-s1k-w8/channel-pool-8                   1000   100 ns/op  4000 p99-ns   0 B/op  0 allocs/op
BenchmarkParallel/c256-s100k-w16/affinity/hint-8              1000   200 ns/op  9000 p99-ns
BenchmarkParallel/c256-s100k-w16/affinity/strict_queue-8      1000   200 ns/op  9000 p99-ns
BenchmarkParallel/c256-s100k-w16/sticky-channels-8            1000   100 ns/op  6000 p99-ns
BenchmarkParallel/c256-s100k-w16/protoactor-consistent-hash-8 1000   900 ns/op 30000 p99-ns
BenchmarkActorRoundTrip/affinity-session-8                    1000   900 ns/op
BenchmarkSequential/protoactor-request-future-8               1000  2000 ns/op
BenchmarkSequential/protoactor-request-future-8               1000  2200 ns/op
BenchmarkIdleSessions-8                                          5 2e+08 ns/op  1100 B/live-session  183.5 B/session
PASS
`

const hintSmall = parallel + smallLoad + hint

func TestParseMedians(t *testing.T) {
	m, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	assert.Equal(t, 200.0, m[hintSmall][nsUnit], "median of three, GOMAXPROCS suffix dropped")
	assert.Equal(t, 8000.0, m[hintSmall][p99Unit])
	assert.Equal(t, 2.0, m[hintSmall][allocsUnit])
	assert.Equal(t, 2100.0, m[seqFuture][nsUnit], "median of two is their mean")
	assert.Equal(t, 183.5, m[idle][sessionUnit])
}

func TestReport(t *testing.T) {
	m, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	var out bytes.Buffer
	assert.False(t, report(&out, m), "strict_queue misses its targets")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []struct{ figure, verdict string }{
		{"1.25x", "PASS"}, {"5.00x", "PASS"}, // small load, hint
		{"2.50x", "MISS"}, {"2.50x", "PASS"}, // small load, strict_queue
		{"2.00x", "info"}, {"3.00x", "info"}, // small load, cancellable contexts
		{"1.50x", "info"}, {"2.00x", "info"}, // small load, cancellable contexts with RunOnCaller
		{"2.00x", "MISS"}, {"4.50x", "PASS"}, // large load, hint
		{"2.00x", "MISS"}, {"4.50x", "PASS"}, // large load, strict_queue (no cancellable rows: not measured)
		{"0.43x", "PASS"}, {"2 allocs/op", "PASS"}, {"183.5 B/session", "PASS"},
	}
	require.Len(t, lines, len(want))
	for i, w := range want {
		assert.Contains(t, lines[i], w.figure, "line %q", lines[i])
		assert.True(t, strings.HasSuffix(lines[i], w.verdict), "line %q", lines[i])
	}
}

func TestTable(t *testing.T) {
	m, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	var out bytes.Buffer
	table(&out, m)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 1+9+4, "a header, nine contenders of the small load, four of the large")
	assert.Regexp(t, `c64-s1k-w8\s+affinity/hint\s+200\s+8µs`, lines[1])
	assert.Regexp(t, `c64-s1k-w8\s+affinity-cancellable/strict_queue\s+480\s+9µs`, lines[4])
	assert.Regexp(t, `c64-s1k-w8\s+affinity-runoncaller/hint\s+240\s+9µs`, lines[5])
	assert.Regexp(t, `c256-s100k-w16\s+protoactor-consistent-hash\s+900\s+30µs`, lines[13])
}

func TestRunMissingBenchmark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.txt")
	require.NoError(t, os.WriteFile(path, []byte("BenchmarkParallel/channel-pool 10 5 ns/op\n"), 0o644))
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run([]string{path}, &out, &errOut))
	assert.Contains(t, out.String(), "MISSING")
	assert.Equal(t, 2, run(nil, &out, &errOut))
}
