package router

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/admin"
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

// The admin listener serves the live page with the backends and their
// fallbacks and returns, and /metrics the per-backend latency histogram.
func TestAdminPageAndBackendMetrics(t *testing.T) {
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b")}
	p := startRouter(t, testConfig(bs...))
	c := newClient(t)
	_, home, _ := c.get(p.srv.URL)
	for range 2 {
		c.get(p.srv.URL)
	}
	adminSrv := httptest.NewServer(p.AdminHandler())
	defer adminSrv.Close()

	res, err := adminSrv.Client().Get(adminSrv.URL + "/ui/state")
	require.NoError(t, err)
	var st admin.State
	require.NoError(t, json.NewDecoder(res.Body).Decode(&st))
	res.Body.Close()
	require.Len(t, st.Backends, 2)
	sessions := 0
	for _, b := range st.Backends {
		assert.True(t, b.Healthy, b.URL)
		sessions += b.Sessions
	}
	assert.Equal(t, 1, sessions, "the one client session, started on its home backend")
	res, err = adminSrv.Client().Get(adminSrv.URL + "/ui/")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)

	// Home down: the next request falls back; home back: it returns.
	homeBackend := bs[0]
	if home == "b" {
		homeBackend = bs[1]
	}
	homeBackend.kill()
	require.Eventually(t, func() bool { return !backendUp(p, home) }, 5*time.Second, time.Millisecond)
	c.get(p.srv.URL)
	homeBackend.restart()
	require.Eventually(t, func() bool { return backendUp(p, home) }, 5*time.Second, time.Millisecond)
	c.get(p.srv.URL)
	var fallbacks, returns uint64
	for _, b := range p.Backends() {
		fallbacks += b.Fallbacks
		if b.Name == home {
			returns = b.Returns
		}
	}
	assert.Equal(t, uint64(1), fallbacks, "served away from home once")
	assert.Equal(t, uint64(1), returns, "and back home")

	var buf bytes.Buffer
	require.NoError(t, p.WriteMetrics(&buf))
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(&buf)
	require.NoError(t, err)
	h := fams["affinity_router_backend_request_duration_seconds"]
	require.NotNil(t, h)
	var count uint64
	for _, m := range h.GetMetric() {
		count += m.GetHistogram().GetSampleCount()
	}
	assert.Equal(t, uint64(5), count, "every proxied request is timed")
	assert.Contains(t, fams, "affinity_router_backend_fallbacks_total")
}

func backendUp(p *proxy, name string) bool {
	for _, b := range p.Backends() {
		if b.Name == name {
			return b.Healthy
		}
	}
	return false
}
