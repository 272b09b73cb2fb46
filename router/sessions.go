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
// what it stands for. An entry with requests running is never forgotten:
// the runtime keeps a session actor while a call is in progress, however
// long (a download, an event stream), so forgetting it would let the table
// admit more sessions than max.
type sessionTable struct {
	max    int64
	count  atomic.Int64
	shards [sessionShards]sessionShard
}

const sessionShards = 64

type sessionShard struct {
	mu sync.RWMutex
	m  map[[16]byte]*sessionEntry
}

type sessionEntry struct {
	last    atomic.Uint32 // when its last request ended, in seconds since the router started
	running atomic.Int32  // requests begun and not yet ended
	name    string        // sessionName(sid)
}

func newSessionTable(max int) *sessionTable {
	t := &sessionTable{max: int64(max)}
	for i := range t.shards {
		t.shards[i].m = make(map[[16]byte]*sessionEntry)
	}
	return t
}

// begin records that a request of sid started and returns its session
// entry, or nil when the session may not have its own session actor: the
// table is full and sid is not in it. The caller calls end when the
// request ends. No clock is read here: an entry is swept only with no
// request running, so its idle time counts from its last request's end.
func (t *sessionTable) begin(sid [16]byte) *sessionEntry {
	sh := &t.shards[sid[0]%sessionShards] // sid is random: its first byte spreads evenly
	sh.mu.RLock()
	e := sh.m[sid]
	if e != nil {
		// Under the read lock, so sweep (which takes the write lock)
		// sees the request running.
		e.running.Add(1)
		sh.mu.RUnlock()
		return e // the common case: a read lock only
	}
	sh.mu.RUnlock()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e = sh.m[sid]; e == nil {
		// Reserve first, so concurrent inserts cannot overshoot max.
		if t.count.Add(1) > t.max {
			t.count.Add(-1)
			return nil
		}
		e = &sessionEntry{name: sessionName(sid)}
		sh.m[sid] = e
	}
	e.running.Add(1)
	return e
}

// end records that a request begun on e ended at now: the session's idle
// time counts from then.
func (e *sessionEntry) end(now uint32) {
	e.last.Store(now)
	e.running.Add(-1)
}

// sweep forgets sessions last used before cutoff with no request running.
func (t *sessionTable) sweep(cutoff uint32) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for sid, e := range sh.m {
			if e.running.Load() == 0 && e.last.Load() < cutoff {
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
