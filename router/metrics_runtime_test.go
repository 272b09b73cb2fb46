package router

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The router's metrics include its runtime's (one worker per backend), and
// the whole text parses as the Prometheus exposition format.
func TestMetricsIncludeTheRuntime(t *testing.T) {
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b")}
	p := startRouter(t, testConfig(bs...))
	c := newClient(t)
	for range 3 {
		c.get(p.srv.URL)
	}
	var buf bytes.Buffer
	require.NoError(t, p.WriteMetrics(&buf))
	text := buf.String()
	assert.Contains(t, text, "affinity_router_requests_total 3\n")
	assert.Contains(t, text, `affinity_workers{pool="backends",state="ready"} 2`)
	assert.Contains(t, text, "# TYPE affinity_calls_total counter")
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(&buf)
	require.NoError(t, err, "valid exposition format")
	assert.Contains(t, fams, "affinity_sessions")
	assert.Contains(t, fams, "affinity_router_backend_up")
}
