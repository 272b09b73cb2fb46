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
BenchmarkParallel/affinity/hint-8                	 1000	  300 ns/op	  64 B/op	  2 allocs/op
BenchmarkParallel/affinity/hint-8                	 1000	  100 ns/op	  64 B/op	  2 allocs/op
BenchmarkParallel/affinity/hint-8                	 1000	  200 ns/op	  64 B/op	  3 allocs/op
BenchmarkParallel/affinity/strict_queue-8        	 1000	  400 ns/op	  64 B/op	  2 allocs/op
BenchmarkParallel/protoactor-consistent-hash-8   	 1000	 1000 ns/op	 500 B/op	 10 allocs/op
BenchmarkParallel/channel-pool-8                 	 1000	  100 ns/op	   0 B/op	  0 allocs/op
BenchmarkSequential/affinity-8                   	 1000	  900 ns/op
BenchmarkSequential/protoactor-request-future-8  	 1000	 2000 ns/op
BenchmarkSequential/protoactor-request-future-8  	 1000	 2200 ns/op
BenchmarkIdleSessions-8                          	    5	 2e+08 ns/op	  183.5 B/session
PASS
`

func TestParseMedians(t *testing.T) {
	m, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	assert.Equal(t, 200.0, m[hint]["ns/op"], "median of three, GOMAXPROCS suffix dropped")
	assert.Equal(t, 2.0, m[hint]["allocs/op"])
	assert.Equal(t, 2100.0, m[seqFuture]["ns/op"], "median of two is their mean")
	assert.Equal(t, 183.5, m[idle]["B/session"])
}

func TestReport(t *testing.T) {
	m, err := parse(strings.NewReader(sample))
	require.NoError(t, err)
	var out bytes.Buffer
	assert.False(t, report(&out, m), "strict_queue misses the 3x router target")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, len(targets))
	for i, want := range []string{"5.00x", "2.50x", "2.00x", "4.00x", "0.43x", "2 allocs/op", "183.5 B/session"} {
		assert.Contains(t, lines[i], want)
	}
	for i, verdict := range []string{"PASS", "MISS", "PASS", "MISS", "PASS", "PASS", "PASS"} {
		assert.True(t, strings.HasSuffix(lines[i], verdict), "line %q", lines[i])
	}
}

func TestRunMissingBenchmark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.txt")
	require.NoError(t, os.WriteFile(path, []byte("BenchmarkParallel/channel-pool 10 5 ns/op\n"), 0o644))
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run([]string{path}, &out, &errOut))
	assert.Contains(t, out.String(), "MISSING")
	assert.Equal(t, 2, run(nil, &out, &errOut))
}
