// Package admin serves a live page of an Affinity runtime: its pools and
// workers (state, incarnation, calls running and waiting, bound sessions),
// how the sessions are spread over the workers, and the taints and
// restarts as they happen; a router adds its backends (health, share of
// sessions, fallbacks and returns). The page and its assets are embedded:
// it needs no CDN and no network beyond the handler itself.
//
//	h, err := admin.New(admin.Config{Runtime: rt, Metrics: reg})
//	http.Handle("/", h) // /, /state (JSON), /events (server-sent events), /metrics
//
// The page loads the state as a script (/state.js) before its own, so it is
// complete when loaded, then follows /events.
//
// The page updates itself from /events, which sends the state every
// Config.Interval. Taints and restarts are recorded as they happen
// (Runtime.WatchWorkers), each one, however many come between two looks;
// those before the handler was made are found in the workers' state when
// it first looks. Close stops the watch.
package admin

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/metrics"
)

//go:embed static
var static embed.FS

// ErrInvalidConfig: New was given an unusable configuration.
var ErrInvalidConfig = errors.New("admin: invalid configuration")

// Backend is one router backend as the page shows it.
type Backend struct {
	URL       string  `json:"url"`
	Healthy   bool    `json:"healthy"`
	Weight    int     `json:"weight"`   // its relative share of sessions
	Sessions  int     `json:"sessions"` // sessions whose home it is
	Share     float64 `json:"share"`    // of all sessions, 0..1
	Fallbacks uint64  `json:"fallbacks"`
	Returns   uint64  `json:"returns"`
}

// Config configures the page.
type Config struct {
	// Runtime is the runtime shown. Required.
	Runtime *actors.Runtime
	// Title heads the page. Default "Affinity".
	Title string
	// Metrics, when set, is served on /metrics.
	Metrics prometheus.Gatherer
	// Backends, when set, lists a router's backends for the page.
	Backends func() []Backend
	// Interval is how often /events sends the state. Default 500 ms.
	Interval time.Duration
	// History is how many taints and restarts the page keeps. Default 50.
	History int
}

// Handler serves the page. It is safe for concurrent use.
type Handler struct {
	cfg Config
	mux *http.ServeMux

	mu  sync.Mutex
	log []Event // newest last

	stopWatch func()
}

// Event is a worker's taint or restart.
type Event struct {
	Time        time.Time `json:"time"`
	Pool        string    `json:"pool"`
	Worker      int       `json:"worker"`
	Kind        string    `json:"kind"` // "tainted" or "restarted"
	Incarnation uint64    `json:"incarnation"`
	Reason      string    `json:"reason,omitempty"`
	// Earlier: it happened before the handler first looked at the worker;
	// Time is when it was found.
	Earlier bool `json:"earlier,omitempty"`
}

// New validates cfg and returns the page's handler.
func New(cfg Config) (*Handler, error) {
	var problems []error
	if cfg.Runtime == nil {
		problems = append(problems, errors.New("a Runtime is required"))
	}
	if cfg.Interval < 0 || cfg.History < 0 {
		problems = append(problems, errors.New("the Interval and History must not be negative"))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(problems...))
	}
	if cfg.Title == "" {
		cfg.Title = "Affinity"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.History == 0 {
		cfg.History = 50
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.stopWatch = cfg.Runtime.WatchWorkers(h.workerEvent)
	h.firstLook()
	assets, _ := fs.Sub(static, "static") // cannot fail: the directory is embedded
	h.mux.Handle("GET /", http.FileServerFS(assets))
	h.mux.HandleFunc("GET /state", h.serveState)
	h.mux.HandleFunc("GET /state.js", h.serveStateScript)
	h.mux.HandleFunc("GET /events", h.serveEvents)
	if cfg.Metrics != nil {
		h.mux.Handle("GET /metrics", metrics.Handler(cfg.Metrics))
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// State is what /state returns and /events sends.
type State struct {
	Title    string      `json:"title"`
	Time     time.Time   `json:"time"`
	Sessions int         `json:"sessions"`
	Pools    []PoolState `json:"pools"`
	Events   []Event     `json:"events"`
	Backends []Backend   `json:"backends,omitempty"`
}

// PoolState is one pool on the page.
type PoolState struct {
	Name     string               `json:"name"`
	Queued   int                  `json:"queued"`
	Inflight int                  `json:"inflight"`
	Restarts uint64               `json:"restarts"`
	Failed   uint64               `json:"failed"`
	Workers  []actors.WorkerStats `json:"workers"`
}

// Snapshot takes the runtime's state now, with the taints and restarts
// recorded so far.
func (h *Handler) Snapshot() State {
	st := h.cfg.Runtime.Stats()
	s := State{Title: h.cfg.Title, Time: time.Now(), Sessions: st.Sessions}
	for _, name := range poolNames(st) {
		ps := st.Pools[name]
		s.Pools = append(s.Pools, PoolState{Name: name, Queued: ps.Queued, Inflight: ps.Inflight,
			Restarts: ps.Restarts, Failed: ps.Failed, Workers: ps.Workers})
	}
	h.mu.Lock()
	s.Events = append([]Event(nil), h.log...)
	h.mu.Unlock()
	if h.cfg.Backends != nil {
		s.Backends = h.cfg.Backends()
	}
	return s
}

// poolNames lists st's pools by name.
func poolNames(st actors.Stats) []string {
	names := make([]string, 0, len(st.Pools))
	for name := range st.Pools {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Close stops recording the runtime's taints and restarts.
func (h *Handler) Close() { h.stopWatch() }

// workerEvent records a taint or a restart as it happens.
func (h *Handler) workerEvent(ev messages.Event) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch e := ev.(type) {
	case messages.WorkerTainted:
		h.record(Event{Time: now, Pool: e.Pool, Worker: e.Worker, Kind: "tainted", Incarnation: e.Incarnation,
			Reason: messages.TaintText(e.Reason, e.Err)})
	case messages.WorkerRestarted:
		h.record(Event{Time: now, Pool: e.Pool, Worker: e.Worker, Kind: "restarted", Incarnation: e.Incarnation})
	}
}

// firstLook records the restarts that came before the handler: a worker
// past its first incarnation was tainted and restarted at least once.
func (h *Handler) firstLook() {
	st := h.cfg.Runtime.Stats()
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range poolNames(st) {
		for _, w := range st.Pools[name].Workers {
			if w.Incarnation > 1 {
				h.record(Event{Time: now, Pool: name, Worker: w.ID, Kind: "tainted", Incarnation: w.Incarnation - 1, Reason: w.LastTaint, Earlier: true})
				h.record(Event{Time: now, Pool: name, Worker: w.ID, Kind: "restarted", Incarnation: w.Incarnation, Earlier: true})
			}
		}
	}
}

func (h *Handler) record(e Event) {
	h.log = append(h.log, e)
	if over := len(h.log) - h.cfg.History; over > 0 {
		h.log = append(h.log[:0], h.log[over:]...)
	}
}

func (h *Handler) serveState(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(h.Snapshot())
}

// serveStateScript is the state as a script the page loads before its
// own, so that the page is rendered by the time it has loaded.
func (h *Handler) serveStateScript(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	b, err := json.Marshal(h.Snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = fmt.Fprintf(w, "window.affinityState = %s;\n", b)
}

// serveEvents streams the state as server-sent events until the client
// leaves.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		b, err := json.Marshal(h.Snapshot())
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}
