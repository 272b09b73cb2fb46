package router

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// sessionTable bounds the client sessions that get their own session actor.
// The runtime keeps about 330 B per session for its idle TTL, so a client
// minting cookies could otherwise grow memory without limit. Each entry is
// a session id, its last use (seconds since the router started) and its
// session actor's name (made once, not per request), much smaller than
// what it stands for.
type sessionTable struct {
	max    int64
	count  atomic.Int64
	shards [sessionShards]sessionShard
}

const sessionShards = 64

type sessionShard struct {
	mu sync.RWMutex
	m  map[[16]byte]sessionEntry
}

type sessionEntry struct {
	last uint32
	name string // sessionName(sid)
}

func newSessionTable(max int) *sessionTable {
	t := &sessionTable{max: int64(max)}
	for i := range t.shards {
		t.shards[i].m = make(map[[16]byte]sessionEntry)
	}
	return t
}

// track records a use of sid at now and returns its session actor's name,
// or ok false when the session may not have its own: the table is full and
// sid is not in it.
func (t *sessionTable) track(sid [16]byte, now uint32) (name string, ok bool) {
	sh := &t.shards[sid[0]%sessionShards] // sid is random: its first byte spreads evenly
	sh.mu.RLock()
	e, ok := sh.m[sid]
	sh.mu.RUnlock()
	if ok && e.last == now {
		return e.name, true // the common case: a read lock only
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok = sh.m[sid]
	if !ok {
		// Reserve first, so concurrent inserts cannot overshoot max.
		if t.count.Add(1) > t.max {
			t.count.Add(-1)
			return "", false
		}
		e.name = sessionName(sid)
	}
	e.last = now
	sh.m[sid] = e
	return e.name, true
}

// sweep forgets sessions last used before cutoff.
func (t *sessionTable) sweep(cutoff uint32) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for sid, e := range sh.m {
			if e.last < cutoff {
				delete(sh.m, sid)
				t.count.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// sessionClock is the router's coarse clock for the session table.
func (r *Router) sessionClock(now time.Time) uint32 {
	return uint32(now.Sub(r.started) / time.Second)
}

// sessionLoop forgets sessions idle for longer than the runtime keeps them.
// An entry outlives its session actor by one runtime sweep (a quarter of
// the TTL), so every session actor the router started is still counted.
func (r *Router) sessionLoop(ctx context.Context) {
	ttl := r.cfg.SessionIdleTTL
	keep := ttl + ttl/4 + time.Second
	every := min(max(ttl/4, time.Second), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if idle := now.Sub(r.started) - keep; idle > 0 {
				r.sessions.sweep(uint32(idle / time.Second))
			}
		}
	}
}
