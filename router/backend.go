package router

import (
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
)

// backend is one upstream and its health. It runs its requests on one
// worker actor of the router's runtime (its slot).
type backend struct {
	name string
	url  *url.URL
	key  uint64 // nameKey(name)
	slot *slot
	pool *connPool // keep-alive connections of the fast path; nil without one

	up atomic.Bool

	healthMu   sync.Mutex
	goodStreak int
	badStreak  int

	requests atomic.Uint64 // requests proxied to it
	failures atomic.Uint64 // passive failures (refused, timeouts)

	inflight atomic.Int64 // ordinary requests holding or waiting for a slot
	upgrades atomic.Int64 // upgraded connections open

	sessions  atomic.Uint64 // client sessions started with it as their home
	fallbacks atomic.Uint64 // requests it served for sessions whose home was down
	returns   atomic.Uint64 // sessions served at home here again after a fallback
	latency   latency       // time to proxy each request (slot wait included)
}

// acquireUpgrade takes one of the backend's max upgraded-connection places.
func (b *backend) acquireUpgrade(max int) bool {
	for {
		n := b.upgrades.Load()
		if n >= int64(max) {
			return false
		}
		if b.upgrades.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// slot is one worker actor of the runtime's backend pool. Backends borrow a
// slot for their lifetime; a removed backend's slot is reused by the next
// added one, so worker ids stay few.
type slot struct {
	id  int
	inc atomic.Uint64 // current incarnation, written by the worker factory
	b   *backend      // guarded by Router.mu
}

// table is an immutable snapshot of the backends and their weights,
// swapped on every change, so the request path reads it without locks.
type table struct {
	backends []*backend // sorted by name: ties in score break the same way everywhere
	weights  []int      // weights[i] is backends[i]'s
	uniform  bool       // every weight is the same: plain scores rank alike
	byName   map[string]*backend
}

// newTable builds a table of bs, with the weight of each name (1 if absent).
func newTable(bs []*backend, weight map[string]int) *table {
	t := &table{backends: bs, weights: make([]int, len(bs)), uniform: true, byName: make(map[string]*backend, len(bs))}
	sort.Slice(t.backends, func(i, j int) bool { return t.backends[i].name < t.backends[j].name })
	for i, b := range t.backends {
		t.byName[b.name] = b
		t.weights[i] = max(weight[b.name], 1)
		t.uniform = t.uniform && t.weights[i] == t.weights[0]
	}
	return t
}

// weightOf returns the weight of the backend named name (0: none).
func (t *table) weightOf(name string) int {
	for i, b := range t.backends {
		if b.name == name {
			return t.weights[i]
		}
	}
	return 0
}

// home returns the backend with the highest score for session key k,
// healthy or not: the session's home.
func (t *table) home(k uint64) *backend { return t.best(k, false) }

// bestUp returns the healthy backend with the highest score for k, or nil.
// For a session whose home is down this is its next choice in rendezvous
// order, so the sessions of a down backend spread evenly over the others.
func (t *table) bestUp(k uint64) *backend { return t.best(k, true) }

func (t *table) best(k uint64, upOnly bool) *backend {
	var best *backend
	var bestScore uint64
	var bestWeighted float64
	for i, b := range t.backends {
		if upOnly && !b.up.Load() {
			continue
		}
		s := score(k, b.key)
		if t.uniform {
			if best == nil || s > bestScore {
				best, bestScore = b, s
			}
			continue
		}
		if w := weighted(s, t.weights[i]); best == nil || w > bestWeighted {
			best, bestWeighted = b, w
		}
	}
	return best
}

// observe records one health observation and reports whether the backend
// changed state. An immediate failure (a refused connection) takes it down
// at once; other failures (failed checks, response timeouts) need fall in a
// row, and rise good checks bring it back.
func (b *backend) observe(ok, immediate bool, rise, fall int) (changed, up bool) {
	b.healthMu.Lock()
	defer b.healthMu.Unlock()
	was := b.up.Load()
	if ok {
		b.badStreak = 0
		b.goodStreak++
		if !was && b.goodStreak >= rise {
			b.up.Store(true)
		}
	} else {
		b.goodStreak = 0
		b.badStreak++
		if was && (immediate || b.badStreak >= fall) {
			b.up.Store(false)
		}
	}
	now := b.up.Load()
	return now != was, now
}

// closeIdle closes the backend's idle fast-path connections, for good.
func (b *backend) closeIdle() {
	if b.pool != nil {
		b.pool.close()
	}
}
