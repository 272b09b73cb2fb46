package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/metrics"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// crashy panics on "crash" and answers anything else.
func crashy(_ context.Context, c messages.Call) (any, error) {
	if c.Payload == "crash" {
		panic("boom")
	}
	return "ok", nil
}

func startRuntime(t *testing.T) *actors.Runtime {
	t.Helper()
	// An event subscriber makes every call timed (not a sample), so the
	// histograms' counts are exact.
	rt, err := actors.Start(actors.Config{RecordTimings: true, OnEvent: func(messages.Event) {}, Pools: []actors.PoolConfig{{
		Name: "models", Size: 2, Affinity: actors.StrictQueue,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(crashy), nil },
	}}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rt.Shutdown(context.Background())) })
	return rt
}

func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// value returns the value of the series of name whose labels include want.
func value(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	for _, m := range family(t, reg, name).GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, want)
	return 0
}

func TestMetricsFollowTheRuntime(t *testing.T) {
	rt := startRuntime(t)
	reg := prometheus.NewRegistry()
	require.NoError(t, metrics.Register(reg, rt))
	ctx := context.Background()
	for _, s := range []string{"a", "b", "c"} {
		for range 2 {
			_, err := rt.Session(s).Call(ctx, "predict")
			require.NoError(t, err)
		}
	}
	_, err := rt.Session("a").Call(ctx, "crash")
	require.ErrorIs(t, err, actors.ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["models"].Restarts == 1 }, 10*time.Second, time.Millisecond)
	_, err = rt.Session("a").Call(ctx, "predict")
	require.ErrorIs(t, err, actors.ErrSessionWorkerUnavailable)

	pool := map[string]string{"pool": "models"}
	strict := func(outcome string) map[string]string {
		return map[string]string{"pool": "models", "mode": "strict_queue", "outcome": outcome}
	}
	assert.Equal(t, 3.0, value(t, reg, "affinity_calls_total", strict("bound")))
	assert.Equal(t, 4.0, value(t, reg, "affinity_calls_total", strict("hit")), "3 repeat calls and the crash")
	assert.Equal(t, 1.0, value(t, reg, "affinity_calls_total", strict("failed")))
	assert.Equal(t, 0.0, value(t, reg, "affinity_calls_total", map[string]string{"mode": "hint", "outcome": "hit"}))
	assert.Equal(t, 7.0, value(t, reg, "affinity_calls_executed_total", pool))
	assert.Equal(t, 1.0, value(t, reg, "affinity_call_errors_total", pool))
	assert.Equal(t, 7.0, value(t, reg, "affinity_call_duration_seconds", pool), "one observation per executed call")
	assert.Equal(t, 7.0, value(t, reg, "affinity_call_wait_seconds", pool))
	assert.Equal(t, 1.0, value(t, reg, "affinity_worker_taints_total", map[string]string{"reason": "panic"}))
	assert.Equal(t, 0.0, value(t, reg, "affinity_worker_taints_total", map[string]string{"reason": "recycle"}))
	assert.Equal(t, 1.0, value(t, reg, "affinity_worker_restarts_total", pool))
	assert.Equal(t, 2.0, value(t, reg, "affinity_workers", map[string]string{"state": "ready"}))
	assert.Equal(t, 3.0, value(t, reg, "affinity_sessions", nil))
	assert.Equal(t, 0.0, value(t, reg, "affinity_queue_depth", pool))

	var incarnations float64
	for _, w := range []string{"0", "1"} {
		incarnations += value(t, reg, "affinity_worker_incarnation", map[string]string{"worker": w})
	}
	assert.Equal(t, 3.0, incarnations, "one worker restarted once")

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems, "names and help follow Prometheus conventions")
}

func TestHandlerServesTheExpositionFormat(t *testing.T) {
	rt := startRuntime(t)
	reg := prometheus.NewRegistry()
	require.NoError(t, metrics.Register(reg, rt))
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Equal(t, 200, res.StatusCode)
	assert.Contains(t, string(body), `affinity_workers{pool="models",state="ready"} 2`)
	assert.Contains(t, string(body), "# TYPE affinity_call_duration_seconds histogram")
}

func TestRegisterRefusesBadInput(t *testing.T) {
	rt := startRuntime(t)
	assert.ErrorIs(t, metrics.Register(nil, rt), metrics.ErrNilArgument)
	assert.ErrorIs(t, metrics.Register(prometheus.NewRegistry(), nil), metrics.ErrNilArgument)
	reg := prometheus.NewRegistry()
	require.NoError(t, metrics.Register(reg, rt))
	var already prometheus.AlreadyRegisteredError
	assert.True(t, errors.As(metrics.Register(reg, rt), &already), "the same runtime twice on one registry")
}

func ExampleRegister() {
	rt, err := actors.Start(actors.Config{RecordTimings: true, Pools: []actors.PoolConfig{{
		Name: "models", Size: 1,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(crashy), nil },
	}}})
	if err != nil {
		panic(err)
	}
	defer rt.Shutdown(context.Background())
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, rt); err != nil {
		panic(err)
	}
	_, _ = rt.Session("user-1").Call(context.Background(), "predict")

	// Serve metrics.Handler(reg) on /metrics; here, a few of its lines.
	rec := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "affinity_calls_total{") && !strings.HasSuffix(line, " 0") ||
			strings.HasPrefix(line, "affinity_workers{") || strings.HasPrefix(line, "affinity_calls_executed_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// affinity_calls_executed_total{pool="models"} 1
	// affinity_calls_total{mode="hint",outcome="bound",pool="models"} 1
	// affinity_workers{pool="models",state="ready"} 1
	// affinity_workers{pool="models",state="restarting"} 0
	// affinity_workers{pool="models",state="starting"} 0
}
