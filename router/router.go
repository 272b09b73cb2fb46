package router

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/admin"
	"github.com/affinity-go/affinity/supervisor"
)

// poolName is the runtime pool holding one worker actor per backend.
const poolName = "backends"

// Errors returned by the membership API.
var (
	ErrBackendExists  = errors.New("affinity router: backend already exists")
	ErrUnknownBackend = errors.New("affinity router: unknown backend")
	ErrLastBackend    = errors.New("affinity router: cannot remove the last backend")
	ErrClosed         = errors.New("affinity router: closed")
)

// Router is an http.Handler that proxies each client session to one backend,
// chosen by rendezvous hashing of the session id carried in a signed
// cookie. Every backend is a worker actor of an actors.Runtime (capped at
// MaxConnsPerBackend concurrent requests, FIFO beyond) and every client
// session a session actor of it. Create one with New; all methods are safe
// for concurrent use.
type Router struct {
	cfg       Config
	log       zerolog.Logger
	rt        *actors.Runtime
	transport http.RoundTripper
	probe     *http.Client
	// dialer reaches backends on the fast path (fastpath.go); nil when
	// Config.Transport is set, which then carries every request.
	dialer       *net.Dialer
	cookiePrefix string // the cookie's name and "="
	signer       atomic.Pointer[signer]
	adminAuth    atomic.Pointer[adminAuth] // nil: no admin token
	tbl          atomic.Pointer[table]
	m            metrics

	mu      sync.Mutex    // membership changes, one at a time; guards slot.b
	slotsMu sync.Mutex    // guards slots; worker factories take it too
	slots   map[int]*slot // by worker id

	started  time.Time
	sessions *sessionTable

	// Upgraded connections: counted under upMu so Close sees every one,
	// and ended by cancelling closing.
	upMu        sync.Mutex
	pages       []*admin.Handler // live pages made by AdminHandler, under upMu
	upWG        sync.WaitGroup
	upConns     map[*idleConn]struct{} // hijacked client connections
	closing     context.Context
	stopClosing context.CancelFunc

	stopHealth context.CancelFunc
	healthDone chan struct{}
	closeOnce  sync.Once
	// closeHandshake bounds Close's wait for WebSocket clients to answer
	// its close frames.
	closeHandshake time.Duration
	closeErr       error
	closed         atomic.Bool
}

// New validates cfg, starts the runtime with one worker actor per backend
// and starts health checking. Backends start healthy; a backend that is
// not turns down on the first refused connection or after Health.Fall
// failed checks.
func New(cfg Config) (*Router, error) {
	cfg, specs, err := cfg.validated()
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: zerolog.Nop(), slots: make(map[int]*slot),
		started: time.Now(), closeHandshake: time.Second, sessions: newSessionTable(cfg.MaxSessions), upConns: make(map[*idleConn]struct{})}
	r.closing, r.stopClosing = context.WithCancel(context.Background())
	if cfg.Logger != nil {
		r.log = *cfg.Logger
	}
	r.signer.Store(newSigner(cfg.Keys))
	r.adminAuth.Store(newAdminAuth(cfg.Admin.Token))
	r.cookiePrefix = cfg.Cookie.Name + "="
	r.transport = cfg.Transport
	if r.transport == nil {
		r.transport = newTransport(cfg)
		r.dialer = &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	}
	r.probe = &http.Client{
		Transport:     r.transport,
		Timeout:       cfg.Health.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	r.rt, err = actors.Start(actors.Config{
		Pools: []actors.PoolConfig{{
			Name:         poolName,
			Size:         len(specs),
			NewWorker:    r.newWorker,
			Affinity:     actors.StrictQueue,
			Capacity:     cfg.MaxConnsPerBackend,
			QueueSize:    cfg.QueueSize,
			QueueTimeout: cfg.QueueTimeout,
			Restart:      &backendRestarts,
		}},
		SessionIdleTTL: cfg.SessionIdleTTL,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("affinity router: starting runtime: %w", err)
	}
	bs := make([]*backend, len(specs))
	weights := make(map[string]int, len(specs))
	for i, s := range specs {
		bs[i] = r.newBackend(s, r.slotFor(i))
		weights[s.name] = s.weight
	}
	r.tbl.Store(newTable(bs, weights))

	ctx, cancel := context.WithCancel(context.Background())
	r.stopHealth, r.healthDone = cancel, make(chan struct{})
	go r.healthLoop(ctx) // also runs sessionLoop; both stop with ctx
	r.log.Info().Int("backends", len(bs)).Str("failover", cfg.Failover.String()).Msg("affinity router started")
	return r, nil
}

func newTransport(cfg Config) *http.Transport {
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // never send backend traffic through an environment proxy
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // bounded per host below
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerBackend,
		MaxConnsPerHost:       0, // the worker actor's capacity bounds concurrency
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ForceAttemptHTTP2:     false, // HTTP/1.1 keeps WebSocket upgrades simple
	}
}

func (r *Router) newBackend(s *backendSpec, sl *slot) *backend {
	b := &backend{name: s.name, url: s.url, key: nameKey(s.name), slot: sl}
	if r.dialer != nil && s.url.Scheme == "http" {
		b.pool = newConnPool(s.url, r.dialer, r.cfg.MaxIdleConnsPerBackend)
	}
	b.up.Store(true)
	sl.b = b
	return b
}

// backendRestarts restarts a backend's worker actor after any number of
// panics: a panic is a bug met by one request, and a restart budget would
// let a client who found one take a backend out for good. The backoff,
// capped at a second, still slows a crash loop; requests arriving while
// the actor restarts go to another backend.
var backendRestarts = supervisor.Policy{MaxRestarts: -1, MaxBackoff: time.Second}

// slotFor returns the slot of worker id, creating it on first use.
func (r *Router) slotFor(id int) *slot {
	r.slotsMu.Lock()
	defer r.slotsMu.Unlock()
	s := r.slots[id]
	if s == nil {
		s = &slot{id: id}
		r.slots[id] = s
	}
	return s
}

// newWorker is the runtime's worker factory: it records the incarnation
// requests must address.
func (r *Router) newWorker(_ context.Context, info actors.WorkerInfo) (actors.Worker, error) {
	r.slotFor(info.ID).inc.Store(info.Incarnation)
	return backendWorker{}, nil
}

// sessionName is the runtime session id of a client session.
func sessionName(sid [16]byte) string { return base64.RawURLEncoding.EncodeToString(sid[:]) }

// Close stops health checks, closes upgraded connections (they would not
// end on their own: both ends of a WebSocket get a close frame, 1001 going
// away, and the connections are closed once the client answers, or after a
// second, or when ctx ends), lets running requests finish (until ctx ends)
// and stops the runtime. Requests after Close get 503. Idempotent.
func (r *Router) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		upDone := r.goingAway(ctx)
		r.upMu.Lock()
		for _, p := range r.pages {
			p.Close()
		}
		r.upMu.Unlock()
		r.stopClosing()
		r.stopHealth()
		<-r.healthDone
		upErr := waitUpgrades(ctx, upDone)
		r.closeErr = errors.Join(upErr, r.rt.Shutdown(ctx))
		if t, ok := r.transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
		for _, b := range r.tbl.Load().backends {
			b.closeIdle()
		}
		r.log.Info().Msg("affinity router stopped")
	})
	return r.closeErr
}

// goingAway refuses new upgrades, sends every WebSocket's ends a close
// frame and waits, for r.closeHandshake at most or until ctx ends, for
// those WebSockets to end: a client's answer ends its own. Other upgraded
// connections, and an upgrade still waiting for its backend's answer, are
// not waited for: they get no close frame, and Close cancels them. The result is closed once
// every upgrade has ended.
func (r *Router) goingAway(ctx context.Context) <-chan struct{} {
	r.upMu.Lock()
	r.closed.Store(true)
	conns := make([]*idleConn, 0, len(r.upConns))
	for c := range r.upConns {
		conns = append(conns, c)
	}
	r.upMu.Unlock()
	deadline := time.Now().Add(r.closeHandshake) // one for all: slow readers cannot stack up
	answering := conns[:0]                       // the WebSockets whose client got a close frame to answer
	for _, c := range conns {
		if c.goingAway(deadline) {
			answering = append(answering, c)
		}
	}
	done := make(chan struct{})
	go func() { // ends once the upgrades return, which Close makes them do
		r.upWG.Wait()
		close(done)
	}()
	wait, stop := context.WithDeadline(ctx, deadline)
	defer stop()
	for _, c := range answering {
		select {
		case <-c.ended:
		case <-wait.Done():
			return done
		}
	}
	return done
}

// SetKeys replaces the cookie keys: keys[0] signs, all verify.
func (r *Router) SetKeys(keys [][]byte) error {
	if err := validateKeys(keys); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.signer.Store(newSigner(keys))
	return nil
}

// SetAdminToken replaces the admin API's bearer token ("" removes it; at
// least MinAdminTokenLen bytes otherwise). The old token, and the live
// page's cookies made from it, stop working at once: rotating the token is
// how those cookies are revoked.
func (r *Router) SetAdminToken(token string) error {
	if err := checkAdminToken(token); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.adminAuth.Store(newAdminAuth(token))
	return nil
}

// AddBackend adds a backend. It takes its share of sessions at once: about
// 1/(N+1) of them when every weight is equal, its weight over the new
// total otherwise.
func (r *Router) AddBackend(ctx context.Context, b Backend) error {
	s, err := parseBackend(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.tbl.Load().byName[s.name]; ok {
		return fmt.Errorf("%w: %q", ErrBackendExists, s.name)
	}
	return r.apply(ctx, []*backendSpec{s}, nil, nil)
}

// RemoveBackend removes a backend: only its sessions move. Requests already
// running on it finish.
func (r *Router) RemoveBackend(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tbl.Load()
	if _, ok := t.byName[name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownBackend, name)
	}
	return r.apply(ctx, nil, []string{name}, nil)
}

// SetWeight changes the weight of the backend named name (0 means 1):
// only sessions between it and the others move, and it keeps its health
// state and counters.
func (r *Router) SetWeight(ctx context.Context, name string, weight int) error {
	weight, err := checkWeight(weight)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.tbl.Load().byName[name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownBackend, name)
	}
	return r.apply(ctx, nil, nil, map[string]int{name: weight})
}

// SetBackends makes the backend list equal to bs: new names are added,
// missing ones removed, and a name whose URL changed is replaced (its
// sessions stay, since hashing uses names). A backend whose weight alone
// changed keeps its health state, as unchanged ones do; only sessions
// between it and the others move.
func (r *Router) SetBackends(ctx context.Context, bs []Backend) error {
	if len(bs) == 0 {
		return fmt.Errorf("%w: no backends", ErrInvalidConfig)
	}
	specs, errs := parseBackends(bs)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	want := make(map[string]*backendSpec, len(specs))
	for _, s := range specs {
		want[s.name] = s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tbl.Load()
	var add []*backendSpec
	var remove []string
	reweight := map[string]int{}
	for _, b := range t.backends {
		if s, ok := want[b.name]; !ok || s.url.String() != b.url.String() {
			remove = append(remove, b.name)
		}
	}
	for name, s := range want {
		switch b, ok := t.byName[name]; {
		case !ok || s.url.String() != b.url.String():
			add = append(add, s)
		case s.weight != t.weightOf(name):
			reweight[name] = s.weight
		}
	}
	if len(add) == 0 && len(remove) == 0 && len(reweight) == 0 {
		return nil
	}
	return r.apply(ctx, add, remove, reweight)
}

// apply removes then adds backends, sets the weights in reweight, and
// publishes one new table. Caller holds mu.
func (r *Router) apply(ctx context.Context, add []*backendSpec, remove []string, reweight map[string]int) error {
	if r.closed.Load() {
		return ErrClosed
	}
	old := r.tbl.Load()
	gone := make(map[string]bool, len(remove))
	for _, name := range remove {
		gone[name] = true
	}
	if len(old.backends)-len(gone)+len(add) == 0 {
		return ErrLastBackend
	}
	free := r.freeSlots(gone)
	if need := len(add) - len(free); need > 0 {
		size := r.rt.Stats().Pools[poolName].Size
		if err := r.rt.Resize(ctx, poolName, size+need); err != nil {
			return fmt.Errorf("affinity router: adding worker actors: %w", err)
		}
		free = r.freeSlots(gone)
		if len(free) < len(add) {
			return fmt.Errorf("affinity router: %d worker actors free after resize, need %d", len(free), len(add))
		}
	}
	next := make([]*backend, 0, len(old.backends)+len(add))
	weights := make(map[string]int, len(old.backends)+len(add))
	for i, b := range old.backends {
		if gone[b.name] {
			b.slot.b = nil
			b.closeIdle()
			r.log.Info().Str("backend", b.name).Msg("backend removed")
			continue
		}
		next = append(next, b)
		weights[b.name] = old.weights[i]
		if w, ok := reweight[b.name]; ok {
			weights[b.name] = w
			r.log.Info().Str("backend", b.name).Int("weight", w).Msg("backend weight changed")
		}
	}
	for i, s := range add {
		next = append(next, r.newBackend(s, free[i]))
		weights[s.name] = s.weight
		r.log.Info().Str("backend", s.name).Str("url", s.url.String()).Int("weight", s.weight).Msg("backend added")
	}
	r.tbl.Store(newTable(next, weights))
	return nil
}

// freeSlots lists ready slots not kept by a staying backend, lowest id
// first. Caller holds mu.
func (r *Router) freeSlots(gone map[string]bool) []*slot {
	r.slotsMu.Lock()
	defer r.slotsMu.Unlock()
	var free []*slot
	for _, s := range r.slots {
		if s.inc.Load() != 0 && (s.b == nil || gone[s.b.name]) {
			free = append(free, s)
		}
	}
	sort.Slice(free, func(i, j int) bool { return free[i].id < free[j].id })
	return free
}

// BackendStatus describes one backend.
type BackendStatus struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Weight   int    `json:"weight"`
	Healthy  bool   `json:"healthy"`
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// Fallbacks: requests it served for sessions whose home was down;
	// Returns: sessions served at home here again after a fallback.
	Fallbacks uint64 `json:"fallbacks"`
	Returns   uint64 `json:"returns"`
}

// Backends lists the backends, sorted by name.
func (r *Router) Backends() []BackendStatus {
	t := r.tbl.Load()
	out := make([]BackendStatus, len(t.backends))
	for i, b := range t.backends {
		out[i] = BackendStatus{Name: b.name, URL: b.url.String(), Weight: t.weights[i], Healthy: b.up.Load(),
			Requests: b.requests.Load(), Failures: b.failures.Load(), Fallbacks: b.fallbacks.Load(), Returns: b.returns.Load()}
	}
	return out
}

// waitUpgrades waits until the upgraded connections, cancelled by Close,
// have been torn down (done closed).
func waitUpgrades(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("affinity router: closing upgraded connections: %w", ctx.Err())
	}
}

// healthLoop probes every backend each Health.Interval.
func (r *Router) healthLoop(ctx context.Context) {
	defer close(r.healthDone)
	tick := time.NewTicker(r.cfg.Health.Interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var sessions sync.WaitGroup
	defer sessions.Wait()
	sessions.Add(1)
	go func() {
		defer sessions.Done()
		r.sessionLoop(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, b := range r.tbl.Load().backends {
				if b.pool != nil {
					b.pool.prune(now)
				}
			}
		}
		for _, b := range r.tbl.Load().backends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.checkHealth(ctx, b)
			}()
		}
		wg.Wait() // one round at a time: a slow backend cannot pile up probes
	}
}

func (r *Router) checkHealth(ctx context.Context, b *backend) {
	u := *b.url
	u.Path = joinPath(u.Path, r.cfg.Health.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return
	}
	ok := false
	resp, err := r.probe.Do(req)
	if err == nil {
		ok = resp.StatusCode >= 200 && resp.StatusCode < 400
		resp.Body.Close()
	}
	if ctx.Err() != nil {
		return // shutting down: not the backend's fault
	}
	if changed, up := b.observe(ok, false, r.cfg.Health.Rise, r.cfg.Health.Fall); changed {
		r.logHealth(b, up, err, "active")
	}
}

// passiveFailure records a failure seen on live traffic: a refused
// connection marks b down at once (immediate); a timeout counts as one
// failed check toward Health.Fall.
func (r *Router) passiveFailure(b *backend, err error, immediate bool) {
	b.failures.Add(1)
	if changed, up := b.observe(false, immediate, r.cfg.Health.Rise, r.cfg.Health.Fall); changed {
		r.logHealth(b, up, err, "passive")
	}
}

func (r *Router) logHealth(b *backend, up bool, err error, how string) {
	if up {
		r.log.Info().Str("backend", b.name).Str("check", how).Msg("backend up")
		return
	}
	ev := r.log.Warn().Str("backend", b.name).Str("check", how)
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("backend down")
}

func joinPath(base, p string) string {
	switch {
	case base == "" || base == "/":
		return p
	case base[len(base)-1] == '/':
		return base + p[1:]
	}
	return base + p
}
