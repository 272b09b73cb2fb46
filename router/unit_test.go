package router

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidation(t *testing.T) {
	good := func() Config {
		return Config{Backends: []Backend{{URL: "http://127.0.0.1:1"}}, Keys: [][]byte{testKey1}}
	}
	cases := map[string]func(*Config){
		"no backends":          func(c *Config) { c.Backends = nil },
		"no keys":              func(c *Config) { c.Keys = nil },
		"short key":            func(c *Config) { c.Keys = [][]byte{[]byte("short")} },
		"bad scheme":           func(c *Config) { c.Backends[0].URL = "ftp://x" },
		"no host":              func(c *Config) { c.Backends[0].URL = "http://" },
		"unparsable URL":       func(c *Config) { c.Backends[0].URL = "http://[::1" },
		"empty URL":            func(c *Config) { c.Backends[0].URL = "" },
		"query in URL":         func(c *Config) { c.Backends[0].URL = "http://h/?a=b" },
		"duplicate name":       func(c *Config) { c.Backends = append(c.Backends, c.Backends[0]) },
		"name with space":      func(c *Config) { c.Backends[0].Name = "a b" },
		"negative weight":      func(c *Config) { c.Backends[0].Weight = -1 },
		"weight over max":      func(c *Config) { c.Backends[0].Weight = MaxWeight + 1 },
		"bad failover":         func(c *Config) { c.Failover = 9 },
		"bad cookie name":      func(c *Config) { c.Cookie.Name = "a;b" },
		"negative max age":     func(c *Config) { c.Cookie.MaxAge = -time.Second },
		"sub-second max age":   func(c *Config) { c.Cookie.MaxAge = time.Millisecond },
		"relative health path": func(c *Config) { c.Health.Path = "healthz" },
		"negative interval":    func(c *Config) { c.Health.Interval = -1 },
		"negative rise":        func(c *Config) { c.Health.Rise = -1 },
		"negative conns":       func(c *Config) { c.MaxConnsPerBackend = -1 },
		"negative queue":       func(c *Config) { c.QueueTimeout = -1 },
		"negative upgrades":    func(c *Config) { c.MaxUpgradesPerBackend = -1 },
		"negative body read":   func(c *Config) { c.BodyReadTimeout = -1 },
		"negative sessions":    func(c *Config) { c.MaxSessions = -1 },
		"short admin token":    func(c *Config) { c.Admin.Token = "short" },
		"bad admin host":       func(c *Config) { c.Admin.Hosts = []string{"http://x/"} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := good()
			mutate(&c)
			r, err := New(c)
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.Nil(t, r)
		})
	}
	t.Run("defaults", func(t *testing.T) {
		c, specs, err := good().validated()
		require.NoError(t, err)
		require.Len(t, specs, 1)
		assert.Equal(t, "http://127.0.0.1:1", specs[0].name, "the name defaults to the URL")
		assert.Equal(t, DefaultCookieName, c.Cookie.Name)
		assert.Equal(t, DefaultCookieMaxAge, c.Cookie.MaxAge)
		assert.Equal(t, DefaultHealthInterval, c.Health.Interval)
		assert.Equal(t, DefaultMaxConnsPerBackend, c.MaxConnsPerBackend)
		assert.Equal(t, Temporary, c.Failover)
		assert.Equal(t, DefaultMinUploadRate, c.MinUploadRate)
		assert.Equal(t, DefaultMaxUpgradesPerBackend, c.MaxUpgradesPerBackend)
		assert.Equal(t, DefaultMaxSessions, c.MaxSessions)
		assert.Equal(t, DefaultBodyReadTimeout, c.BodyReadTimeout)
	})
	t.Run("every problem at once", func(t *testing.T) {
		_, err := New(Config{})
		require.ErrorContains(t, err, "no backends")
		require.ErrorContains(t, err, "no cookie keys")
	})
}

func TestParseFailover(t *testing.T) {
	for _, f := range []Failover{Temporary, Sticky, Strict} {
		got, err := ParseFailover(f.String())
		require.NoError(t, err)
		require.Equal(t, f, got)
	}
	_, err := ParseFailover("sometimes")
	require.ErrorIs(t, err, ErrInvalidFailover)
	require.Equal(t, "Failover(7)", Failover(7).String())
}

func TestCookieCodec(t *testing.T) {
	s := newSigner([][]byte{testKey1, testKey2})
	now := time.Unix(1_800_000_000, 0)
	tk := ticket{sid: newSessionID(), epoch: 7, away: true, issued: now.Unix()}
	v := s.encode(&tk)
	got, st := s.decode(v, now, time.Hour)
	require.Equal(t, cookieValid, st)
	require.Equal(t, tk, got)

	t.Run("every flipped bit is forged", func(t *testing.T) {
		raw, err := cookieEncoding.DecodeString(v)
		require.NoError(t, err)
		for i := range raw {
			for bit := 0; bit < 8; bit++ {
				bad := append([]byte(nil), raw...)
				bad[i] ^= 1 << bit
				_, st := s.decode(cookieEncoding.EncodeToString(bad), now, time.Hour)
				require.Equal(t, cookieForged, st, "byte %d bit %d", i, bit)
			}
		}
	})
	t.Run("old key", func(t *testing.T) {
		old := newSigner([][]byte{testKey2}).encode(&tk)
		_, st := s.decode(old, now, time.Hour)
		require.Equal(t, cookieOldKey, st)
	})
	t.Run("expired and future", func(t *testing.T) {
		_, st := s.decode(v, now.Add(2*time.Hour), time.Hour)
		require.Equal(t, cookieExpired, st)
		_, st = s.decode(v, now.Add(-time.Hour), time.Hour)
		require.Equal(t, cookieExpired, st)
	})
	t.Run("malformed", func(t *testing.T) {
		for _, bad := range []string{"", "x", v[:len(v)-1], v + "A", strings.Repeat("!", len(v))} {
			_, st := s.decode(bad, now, time.Hour)
			require.Equal(t, cookieForged, st, "%q", bad)
		}
	})
}

// A connection's memo answers for the cookie that verified last, under the
// same keys only, checks its age every time, and is never filled by a
// cookie that did not verify.
func TestCookieMemo(t *testing.T) {
	s := newSigner([][]byte{testKey1})
	now := time.Unix(1_800_000_000, 0)
	tk := ticket{sid: newSessionID(), issued: now.Unix()}
	v := s.encode(&tk)
	var m cookieMemo
	got, st := m.decode(s, v, now, time.Hour)
	require.Equal(t, cookieValid, st)
	require.Equal(t, tk, got)
	require.Equal(t, v, m.value, "remembered")

	m.tk.epoch = 9 // what only the memo can answer
	got, st = m.decode(s, v, now, time.Hour)
	require.Equal(t, cookieValid, st)
	require.EqualValues(t, 9, got.epoch, "the same value again: no decoding")

	_, st = m.decode(s, v, now.Add(2*time.Hour), time.Hour)
	require.Equal(t, cookieExpired, st, "its age is checked every time")

	raw, err := cookieEncoding.DecodeString(v)
	require.NoError(t, err)
	raw[len(raw)-1] ^= 1
	_, st = m.decode(s, cookieEncoding.EncodeToString(raw), now, time.Hour)
	require.Equal(t, cookieForged, st)
	require.Equal(t, v, m.value, "a forged cookie is not remembered")

	rotated := newSigner([][]byte{testKey2})
	_, st = m.decode(rotated, v, now, time.Hour)
	require.Equal(t, cookieForged, st, "new keys: verified again, and it fails")

	_, st = (*cookieMemo)(nil).decode(s, v, now, time.Hour)
	require.Equal(t, cookieValid, st, "no memo: plain decoding")
}

// Routers built from different versions of this code must keep agreeing on
// every cookie: pin the hash.
func TestRendezvousIsStable(t *testing.T) {
	var sid [16]byte
	for i := range sid {
		sid[i] = byte(i)
	}
	require.Equal(t, uint64(0x1ada45471726dbcf), sessionKey(sid, 0))
	require.Equal(t, uint64(0x363540f699aea3ce), nameKey("backend-1"))
	require.Equal(t, uint64(0x8785c22946a0d99a), score(sessionKey(sid, 0), nameKey("backend-1")))
}

func tableOf(names ...string) *table { return weightedTable(nil, names...) }

// weightedTable builds a table of names with the weights given (1 if
// absent).
func weightedTable(weights map[string]int, names ...string) *table {
	var bs []*backend
	for i, n := range names {
		b := &backend{name: n, key: nameKey(n), slot: &slot{id: i}}
		b.up.Store(true)
		bs = append(bs, b)
	}
	return newTable(bs, weights)
}

func TestWeightedRendezvous(t *testing.T) {
	const sessions = 100_000
	names := []string{"a", "b", "c"}
	keys := make([]uint64, sessions)
	for i := range keys {
		var sid [16]byte
		binary.LittleEndian.PutUint64(sid[:], uint64(i))
		keys[i] = sessionKey(sid, 0)
	}
	homes := func(tbl *table) (map[uint64]string, map[string]int) {
		home, count := make(map[uint64]string, sessions), map[string]int{}
		for _, k := range keys {
			h := tbl.home(k).name
			home[k] = h
			count[h]++
		}
		return home, count
	}
	plain, _ := homes(tableOf(names...))
	same, _ := homes(weightedTable(map[string]int{"a": 5, "b": 5, "c": 5}, names...))
	require.Equal(t, plain, same, "equal weights, whatever their value, rank as no weights")

	// a:b:c = 1:2:5 in a table that is not uniform, so the weighted
	// scores are in use.
	w1 := weightedTable(map[string]int{"a": 1, "b": 2, "c": 5}, names...)
	require.False(t, w1.uniform)
	before, count := homes(w1)
	for name, w := range map[string]float64{"a": 1, "b": 2, "c": 5} {
		require.InDelta(t, w/8, float64(count[name])/sessions, 0.01, "backend %s's share follows its weight", name)
	}

	// c's weight from 5 to 1: sessions only leave c, and the three end even.
	after, count := homes(weightedTable(map[string]int{"a": 1, "b": 2, "c": 1}, names...))
	for _, k := range keys {
		if before[k] != after[k] {
			require.Equal(t, "c", before[k], "only the reweighted backend's sessions move")
		}
	}
	require.InDelta(t, 0.5, float64(count["b"])/sessions, 0.01)

	// A new backend of weight 4 in a total of 8+4 takes a third, all moved to it.
	added, count := homes(weightedTable(map[string]int{"a": 1, "b": 2, "c": 5, "d": 4}, "a", "b", "c", "d"))
	for _, k := range keys {
		if before[k] != added[k] {
			require.Equal(t, "d", added[k])
		}
	}
	require.InDelta(t, 1.0/3, float64(count["d"])/sessions, 0.01)
}

func TestRendezvousBalanceAndMinimalMoves(t *testing.T) {
	const sessions = 100_000
	for n := 1; n <= 8; n++ {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("backend-%d", i)
		}
		before, after := tableOf(names...), tableOf(append(names, "new")...)
		moved, count := 0, map[string]int{}
		for i := 0; i < sessions; i++ {
			k := sessionKey(newSessionID(), 0)
			h0, h1 := before.home(k), after.home(k)
			count[h1.name]++
			if h0.name != h1.name {
				moved++
				require.Equal(t, "new", h1.name)
			}
		}
		want := 1 / float64(n+1)
		require.InDelta(t, want, float64(moved)/sessions, want*0.05, "n=%d", n)
		for name, c := range count {
			require.LessOrEqual(t, float64(c)/(sessions/float64(n+1)), 1.05, "n=%d backend %s", n, name)
		}
	}
}

func TestDecide(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tbl := tableOf("a", "b", "c")
	r := &Router{cfg: Config{Cookie: CookieConfig{MaxAge: time.Hour}}}
	sessionOnA := func() ticket {
		for {
			tk := ticket{sid: newSessionID(), issued: now.Unix()}
			if tbl.home(sessionKey(tk.sid, 0)).name == "a" {
				return tk
			}
		}
	}
	a := tbl.byName["a"]

	t.Run("hit needs no cookie", func(t *testing.T) {
		d, err := r.decide(tbl, sessionOnA(), cookieValid, now)
		require.NoError(t, err)
		require.Equal(t, "a", d.target.name)
		require.Equal(t, outcomeHit, d.outcome)
		require.False(t, d.setCookie)
	})
	t.Run("half-expired cookie is refreshed", func(t *testing.T) {
		tk := sessionOnA()
		tk.issued = now.Add(-31 * time.Minute).Unix()
		d, err := r.decide(tbl, tk, cookieValid, now)
		require.NoError(t, err)
		require.True(t, d.setCookie)
		require.Equal(t, now.Unix(), d.tk.issued)
	})
	t.Run("new sessions start at a healthy home", func(t *testing.T) {
		a.up.Store(false)
		defer a.up.Store(true)
		for i := 0; i < 200; i++ {
			d, err := r.decide(tbl, ticket{}, cookieNone, now)
			require.NoError(t, err)
			require.NotEqual(t, "a", d.target.name)
			require.Equal(t, d.target, tbl.home(sessionKey(d.tk.sid, 0)))
			require.False(t, d.tk.away)
		}
	})
	for _, mode := range []Failover{Temporary, Sticky, Strict} {
		t.Run(mode.String(), func(t *testing.T) {
			r := &Router{cfg: Config{Failover: mode, Cookie: CookieConfig{MaxAge: time.Hour}}}
			tk := sessionOnA()
			a.up.Store(false)
			d, err := r.decide(tbl, tk, cookieValid, now)
			next := tbl.bestUp(sessionKey(tk.sid, 0))
			a.up.Store(true)
			if mode == Strict {
				require.ErrorIs(t, err, errStrictDown)
				return
			}
			require.NoError(t, err)
			require.NotEqual(t, "a", d.target.name)
			require.True(t, d.setCookie)
			d2, err := r.decide(tbl, d.tk, cookieValid, now) // a is back
			require.NoError(t, err)
			if mode == Temporary {
				require.Equal(t, outcomeFallback, d.outcome)
				require.Equal(t, next, d.target, "the next choice in rendezvous order")
				require.Equal(t, "a", d2.target.name)
				require.Equal(t, outcomeReturn, d2.outcome)
			} else {
				require.Equal(t, outcomeRebind, d.outcome)
				require.Equal(t, d.target, d2.target)
				require.Equal(t, outcomeHit, d2.outcome)
			}
		})
	}
	t.Run("no backend up", func(t *testing.T) {
		for _, b := range tbl.backends {
			b.up.Store(false)
		}
		defer func() {
			for _, b := range tbl.backends {
				b.up.Store(true)
			}
		}()
		_, err := r.decide(tbl, sessionOnA(), cookieValid, now)
		require.ErrorIs(t, err, errNoBackend)
		_, err = r.decide(tbl, ticket{}, cookieNone, now)
		require.ErrorIs(t, err, errNoBackend)
	})
}

func TestHealthObserve(t *testing.T) {
	b := &backend{}
	b.up.Store(true)
	changed, up := b.observe(false, false, 2, 2)
	require.False(t, changed)
	require.True(t, up, "one failed active check is not enough")
	changed, up = b.observe(false, false, 2, 2)
	require.True(t, changed)
	require.False(t, up)
	changed, _ = b.observe(true, false, 2, 2)
	require.False(t, changed)
	changed, up = b.observe(true, false, 2, 2)
	require.True(t, changed)
	require.True(t, up)
	changed, up = b.observe(false, true, 2, 2)
	require.True(t, changed, "a passive failure takes it down at once")
	require.False(t, up)
}

func TestCookieHeaderHelpers(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; affinity=XYZ; b=2", "c=3"}}
	_, rest, ok := nextCookie("a=1; affinity=XYZ; b=2", "affinity")
	require.False(t, ok)
	v, _, ok := nextCookie(rest, "affinity")
	require.True(t, ok)
	require.Equal(t, "XYZ", v)
	_, _, ok = nextCookie(rest, "affin")
	require.False(t, ok)
	removeCookie(h, "affinity")
	require.Equal(t, []string{"a=1; b=2", "c=3"}, h["Cookie"])
	h = http.Header{"Cookie": {"affinity=1"}}
	removeCookie(h, "affinity")
	require.NotContains(t, h, "Cookie")
}

func TestAdminAPI(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs[0], bs[1]))
	admin := httptest.NewServer(p.AdminHandler())
	defer admin.Close()
	hc := admin.Client()
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, admin.URL+path, strings.NewReader(body))
		if method != http.MethodGet {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := do("GET", "/healthz", "")
	require.Equal(t, http.StatusOK, code, body)

	code, body = do("POST", "/backends", fmt.Sprintf(`{"name":"c","url":%q}`, bs[2].url()))
	require.Equal(t, http.StatusCreated, code, body)
	code, _ = do("POST", "/backends", fmt.Sprintf(`{"name":"c","url":%q}`, bs[2].url()))
	require.Equal(t, http.StatusConflict, code)
	code, _ = do("POST", "/backends", `{"name":"d","url":"gopher://x"}`)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = do("POST", "/backends", `{"nme":"d"}`)
	require.Equal(t, http.StatusBadRequest, code)

	code, body = do("GET", "/backends", "")
	require.Equal(t, http.StatusOK, code)
	var list []BackendStatus
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list, 3)
	require.Equal(t, "c", list[2].Name)
	require.Equal(t, 1, list[2].Weight)

	code, body = do("PATCH", "/backends/c", `{"weight": 4}`)
	require.Equal(t, http.StatusNoContent, code, body)
	require.Equal(t, 4, p.Backends()[2].Weight)
	code, _ = do("PATCH", "/backends/c", `{"weight": -4}`)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = do("PATCH", "/backends/zz", `{"weight": 2}`)
	require.Equal(t, http.StatusNotFound, code)
	code, _ = do("PATCH", "/backends/c", `{"wait": 2}`)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = do("PATCH", "/backends/c", `{"weight": 0}`)
	require.Equal(t, http.StatusNoContent, code)
	require.Equal(t, 1, p.Backends()[2].Weight, "0 means 1")

	// Traffic, then metrics.
	c := newClient(t)
	for i := 0; i < 3; i++ {
		c.get(p.srv.URL)
	}
	code, body = do("GET", "/metrics", "")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		"affinity_router_requests_total 3",
		"affinity_router_affinity_hits_total 2",
		"affinity_router_new_sessions_total 1",
		"affinity_router_fallbacks_total 0",
		"affinity_router_returns_total 0",
		"affinity_router_rebinds_total 0",
		"affinity_router_forged_cookies_total 0",
		`affinity_router_backend_up{backend="c"} 1`,
		"# TYPE affinity_router_backend_requests_total counter",
	} {
		require.Contains(t, body, want+"\n")
	}

	code, _ = do("DELETE", "/backends/c", "")
	require.Equal(t, http.StatusNoContent, code)
	code, _ = do("DELETE", "/backends/c", "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = do("DELETE", "/backends/a", "")
	require.Equal(t, http.StatusNoContent, code)
	code, body = do("DELETE", "/backends/b", "")
	require.Equal(t, http.StatusConflict, code, "the last backend stays: %s", body)

	for _, b := range bs[:2] {
		b.kill()
	}
	waitHealthy(t, p.Router, "b", false)
	code, _ = do("GET", "/healthz", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
}

func TestSetBackendsAndSlotReuse(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs[0], bs[1]))
	ctx := context.Background()
	require.ErrorIs(t, p.SetBackends(ctx, nil), ErrInvalidConfig)
	require.ErrorIs(t, p.SetBackends(ctx, []Backend{{URL: "nope"}}), ErrInvalidConfig)

	// b out, c in: c takes b's worker actor.
	require.NoError(t, p.SetBackends(ctx, []Backend{{Name: "a", URL: bs[0].url()}, {Name: "c", URL: bs[2].url()}}))
	names := []string{}
	for _, b := range p.Backends() {
		names = append(names, b.Name)
	}
	require.Equal(t, []string{"a", "c"}, names)
	require.Equal(t, 2, p.rt.Stats().Pools[poolName].Size, "the freed worker actor was reused")
	code, got, _ := newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, []string{"a", "c"}, got)

	// Same name, new URL: replaced in place.
	require.NoError(t, p.SetBackends(ctx, []Backend{{Name: "a", URL: bs[1].url()}, {Name: "c", URL: bs[2].url()}}))
	u, _ := url.Parse(bs[1].url())
	for _, b := range p.Backends() {
		if b.Name == "a" {
			require.Equal(t, u.String(), b.URL)
		}
	}
	require.ErrorIs(t, p.RemoveBackend(ctx, "zzz"), ErrUnknownBackend)
	require.ErrorIs(t, p.AddBackend(ctx, Backend{Name: "c", URL: bs[2].url()}), ErrBackendExists)

	// A new weight alone: the same backend, its counters and health kept.
	before := p.tbl.Load().byName["c"]
	require.NoError(t, p.SetBackends(ctx, []Backend{{Name: "a", URL: bs[1].url()}, {Name: "c", URL: bs[2].url(), Weight: 3}}))
	tbl := p.tbl.Load()
	require.Same(t, before, tbl.byName["c"])
	require.False(t, tbl.uniform)
	weights := map[string]int{}
	for _, b := range p.Backends() {
		weights[b.Name] = b.Weight
	}
	require.Equal(t, map[string]int{"a": 1, "c": 3}, weights)
	require.Equal(t, 2, p.rt.Stats().Pools[poolName].Size)
	require.ErrorIs(t, p.SetBackends(ctx, []Backend{{Name: "a", URL: bs[1].url(), Weight: -2}}), ErrInvalidConfig)
}

func TestClosedRouter(t *testing.T) {
	b := startBackend(t, "a")
	r, err := New(testConfig(b))
	require.NoError(t, err)
	require.NoError(t, r.Close(context.Background()))
	require.NoError(t, r.Close(context.Background()), "Close is idempotent")
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.ErrorIs(t, r.AddBackend(context.Background(), Backend{URL: "http://127.0.0.1:2"}), ErrClosed)
}
