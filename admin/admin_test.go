package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/admin"
	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/metrics"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// crashy panics on "crash" and answers anything else.
func crashy(_ context.Context, c messages.Call) (any, error) {
	if c.Payload == "crash" {
		panic("model corrupted")
	}
	return "ok", nil
}

func startRuntime(t *testing.T) *actors.Runtime {
	t.Helper()
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{{
		Name: "models", Size: 2, Affinity: actors.StrictQueue,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) { return actors.WorkerFunc(crashy), nil },
	}}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rt.Shutdown(context.Background())) })
	return rt
}

// crash makes the worker of session s panic and waits for its restart;
// it returns that worker's id.
func crash(t *testing.T, rt *actors.Runtime, s string) int {
	t.Helper()
	ctx := context.Background()
	_, err := rt.Session(s).Call(ctx, "crash")
	require.ErrorIs(t, err, actors.ErrWorkerFailed)
	var id int
	require.Eventually(t, func() bool {
		for _, w := range rt.Stats().Pools["models"].Workers {
			if w.Incarnation == 2 && w.State == "ready" {
				id = w.ID
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond)
	return id
}

func TestNewValidates(t *testing.T) {
	_, err := admin.New(admin.Config{})
	assert.ErrorIs(t, err, admin.ErrInvalidConfig)
	_, err = admin.New(admin.Config{Runtime: startRuntime(t), Interval: -time.Second})
	assert.ErrorIs(t, err, admin.ErrInvalidConfig)
}

func TestStateShowsWorkersSpreadAndRestarts(t *testing.T) {
	rt := startRuntime(t)
	h, err := admin.New(admin.Config{Runtime: rt, Title: "models"})
	require.NoError(t, err)
	ctx := context.Background()
	for _, s := range []string{"a", "b", "c", "d"} {
		_, err := rt.Session(s).Call(ctx, "predict")
		require.NoError(t, err)
	}
	st := h.Snapshot()
	require.Len(t, st.Pools, 1)
	p := st.Pools[0]
	assert.Equal(t, "models", p.Name)
	require.Len(t, p.Workers, 2)
	assert.Equal(t, 4, p.Workers[0].Bound+p.Workers[1].Bound, "the spread of the 4 sessions")
	assert.Empty(t, st.Events)

	id := crash(t, rt, "a")
	require.Eventually(t, func() bool { return len(h.Snapshot().Events) == 2 }, 10*time.Second, time.Millisecond)
	st = h.Snapshot()
	assert.Equal(t, admin.Event{Time: st.Events[0].Time, Pool: "models", Worker: id, Kind: "tainted", Incarnation: 1,
		Reason: "panic: model corrupted"}, st.Events[0])
	assert.Equal(t, admin.Event{Time: st.Events[1].Time, Pool: "models", Worker: id, Kind: "restarted", Incarnation: 2}, st.Events[1])
	assert.Len(t, h.Snapshot().Events, 2, "a restart is recorded once")
}

func TestHistoryIsBounded(t *testing.T) {
	rt := startRuntime(t)
	h, err := admin.New(admin.Config{Runtime: rt, History: 3})
	require.NoError(t, err)
	h.Snapshot()
	for i := range 3 {
		s := "s" + string(rune('0'+i))
		_, err := rt.Session(s).Call(context.Background(), "predict")
		require.NoError(t, err)
		w := rt.Stats().Pools["models"].Workers
		before := w[0].Incarnation + w[1].Incarnation
		_, err = rt.Session(s).Call(context.Background(), "crash")
		require.ErrorIs(t, err, actors.ErrWorkerFailed)
		require.Eventually(t, func() bool {
			w := rt.Stats().Pools["models"].Workers
			return w[0].Incarnation+w[1].Incarnation == before+1 && w[0].State == "ready" && w[1].State == "ready"
		}, 10*time.Second, time.Millisecond)
		h.Snapshot()
	}
	require.Eventually(t, func() bool {
		events := h.Snapshot().Events
		return len(events) == 3 && events[2].Kind == "restarted"
	}, 10*time.Second, time.Millisecond, "the newest are kept")
}

// Every taint and restart is recorded as it happens, however many come
// between two looks.
func TestTaintsBetweenTwoLooksAreAllShown(t *testing.T) {
	rt := startRuntime(t)
	h, err := admin.New(admin.Config{Runtime: rt})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	for i := 0; i < 3; i++ {
		_, err := rt.Session("a").Call(context.Background(), "crash", actors.WithAffinity(actors.Hint))
		require.ErrorIs(t, err, actors.ErrWorkerFailed)
	}
	require.Eventually(t, func() bool { return len(h.Snapshot().Events) == 6 }, 10*time.Second, time.Millisecond)
	kinds := map[string]int{}
	for _, e := range h.Snapshot().Events {
		kinds[e.Kind]++
		assert.False(t, e.Earlier)
	}
	assert.Equal(t, map[string]int{"tainted": 3, "restarted": 3}, kinds)

	h.Close()
	_, err = rt.Session("b").Call(context.Background(), "crash", actors.WithAffinity(actors.Hint))
	require.ErrorIs(t, err, actors.ErrWorkerFailed)
	require.Eventually(t, func() bool { return rt.Stats().Pools["models"].Restarts == 4 }, 10*time.Second, time.Millisecond)
	assert.Len(t, h.Snapshot().Events, 6, "nothing recorded after Close")
}

func TestEventsStreamTheState(t *testing.T) {
	rt := startRuntime(t)
	h, err := admin.New(admin.Config{Runtime: rt, Interval: 10 * time.Millisecond,
		Backends: func() []admin.Backend {
			return []admin.Backend{{URL: "http://127.0.0.1:9001", Healthy: true, Weight: 2, Sessions: 3, Share: 1}}
		}})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	require.NoError(t, err)
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	assert.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	next := func() admin.State {
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var s admin.State
				require.NoError(t, json.Unmarshal([]byte(data), &s))
				return s
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return admin.State{}
	}
	assert.Empty(t, next().Events)
	id := crash(t, rt, "a")
	var s admin.State
	for s = next(); len(s.Events) < 2; s = next() {
	}
	assert.Equal(t, "restarted", s.Events[1].Kind)
	assert.Equal(t, id, s.Events[1].Worker)
	require.Len(t, s.Backends, 1)
	assert.Equal(t, "http://127.0.0.1:9001", s.Backends[0].URL)
	assert.Equal(t, 2, s.Backends[0].Weight)
}

func TestPageAndMetricsAreServedWithoutTheNetwork(t *testing.T) {
	rt := startRuntime(t)
	reg := prometheus.NewRegistry()
	require.NoError(t, metrics.Register(reg, rt))
	h, err := admin.New(admin.Config{Runtime: rt, Metrics: reg})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (string, string) {
		res, err := srv.Client().Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, 200, res.StatusCode, path)
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return string(b), res.Header.Get("Content-Type")
	}
	page, ctype := get("/")
	assert.Contains(t, ctype, "text/html")
	assert.Contains(t, page, `<script src="app.js">`)
	external := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`)
	for _, asset := range []string{"/", "/app.js", "/style.css"} {
		body, _ := get(asset)
		assert.False(t, external.MatchString(body), "%s loads nothing from elsewhere", asset)
		assert.NotContains(t, body, "http://", asset)
		assert.NotContains(t, body, "https://", asset)
	}
	m, _ := get("/metrics")
	assert.Contains(t, m, "affinity_workers{")
}

func TestRestartsBeforeTheFirstLookAreShown(t *testing.T) {
	rt := startRuntime(t)
	_, err := rt.Session("a").Call(context.Background(), "predict")
	require.NoError(t, err)
	id := crash(t, rt, "a")
	h, err := admin.New(admin.Config{Runtime: rt})
	require.NoError(t, err)
	events := h.Snapshot().Events
	require.Len(t, events, 2)
	assert.Equal(t, admin.Event{Time: events[0].Time, Pool: "models", Worker: id, Kind: "tainted", Incarnation: 1,
		Reason: "panic: model corrupted", Earlier: true}, events[0])
	assert.Equal(t, "restarted", events[1].Kind)
	assert.True(t, events[1].Earlier)
}
