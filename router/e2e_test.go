package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func threeBackends(t *testing.T) []*testBackend {
	return []*testBackend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")}
}

func TestStickinessOverManyRequests(t *testing.T) {
	p := startRouter(t, testConfig(threeBackends(t)...))
	perBackend := map[string]int{}
	for i := 0; i < 60; i++ {
		c := newClient(t)
		code, first, _ := c.get(p.srv.URL)
		require.Equal(t, http.StatusOK, code)
		perBackend[first]++
		for j := 0; j < 20; j++ {
			code, got, _ := c.get(p.srv.URL + "/page")
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, first, got, "client %d request %d moved", i, j)
		}
	}
	require.Len(t, perBackend, 3, "60 sessions should land on every backend: %v", perBackend)
	m := p.Metrics()
	assert.EqualValues(t, 60, m.NewSessions)
	assert.EqualValues(t, 60*20, m.Hits)
	assert.EqualValues(t, 60*21, m.Requests)
	// One session actor per returning client, plus the one for first requests.
	assert.Equal(t, 61, p.rt.Stats().Sessions)
}

func TestClientsWithoutCookiesCostNoSessionActors(t *testing.T) {
	p := startRouter(t, testConfig(threeBackends(t)...))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := 0; i < 100; i++ {
		rawGet(t, hc, p.srv.URL, "")
	}
	require.EqualValues(t, 100, p.Metrics().NewSessions)
	require.Equal(t, 1, p.rt.Stats().Sessions)
}

// sessionOn returns a client whose session lives on backend name.
func sessionOn(t *testing.T, p *proxy, name string) *client {
	t.Helper()
	for i := 0; i < 200; i++ {
		c := newClient(t)
		if _, got, _ := c.get(p.srv.URL); got == name {
			return c
		}
	}
	t.Fatalf("no session landed on %s in 200 tries", name)
	return nil
}

func TestTemporaryFailoverAndReturn(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs...))
	c := sessionOn(t, p, "a")

	bs[0].kill()
	// The first request after the kill may still pick a (no check has run
	// yet): its refused connection is retried elsewhere, so no error.
	code, away, _ := c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.NotEqual(t, "a", away)
	waitHealthy(t, p.Router, "a", false)
	for i := 0; i < 10; i++ {
		code, got, _ := c.get(p.srv.URL)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, away, got, "a temporary fallback stays on one backend")
	}
	require.GreaterOrEqual(t, p.Metrics().Fallbacks, uint64(11))

	bs[0].restart()
	waitHealthy(t, p.Router, "a", true)
	code, got, _ := c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "a", got, "the session returns home")
	require.EqualValues(t, 1, p.Metrics().Returns)
	_, got, _ = c.get(p.srv.URL)
	require.Equal(t, "a", got)
	require.EqualValues(t, 1, p.Metrics().Returns, "a return is counted once")
}

func TestStickyFailoverMovesForGood(t *testing.T) {
	bs := threeBackends(t)
	cfg := testConfig(bs...)
	cfg.Failover = Sticky
	p := startRouter(t, cfg)
	c := sessionOn(t, p, "b")

	bs[1].kill()
	waitHealthy(t, p.Router, "b", false)
	code, moved, _ := c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.NotEqual(t, "b", moved)
	require.EqualValues(t, 1, p.Metrics().Rebinds)

	bs[1].restart()
	waitHealthy(t, p.Router, "b", true)
	for i := 0; i < 5; i++ {
		_, got, _ := c.get(p.srv.URL)
		require.Equal(t, moved, got, "sticky sessions do not return")
	}
	require.EqualValues(t, 1, p.Metrics().Rebinds)
	require.Zero(t, p.Metrics().Returns)
}

func TestStrictFailoverAnswers503(t *testing.T) {
	bs := threeBackends(t)
	cfg := testConfig(bs...)
	cfg.Failover = Strict
	p := startRouter(t, cfg)
	c := sessionOn(t, p, "c")

	bs[2].kill()
	waitHealthy(t, p.Router, "c", false)
	code, _, body := c.get(p.srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "strict")
	require.EqualValues(t, 1, p.Metrics().Strict)

	// New clients are still served, by healthy backends.
	code, got, _ := newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.NotEqual(t, "c", got)

	bs[2].restart()
	waitHealthy(t, p.Router, "c", true)
	code, got, _ = c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "c", got)
}

func TestAllBackendsDown(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs...))
	c := newClient(t)
	_, _, _ = c.get(p.srv.URL)
	for _, b := range bs {
		b.kill()
	}
	for _, b := range bs {
		waitHealthy(t, p.Router, b.name, false)
	}
	code, _, body := c.get(p.srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "no healthy backend")
	code, _, _ = newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
}

// collectSessions starts n sessions and returns their cookies and backends.
func collectSessions(t *testing.T, url string, n int) (cookies, backends []string) {
	cookies = make([]string, n)
	backends = sendAll(t, url, make([]string, n), cookies)
	return cookies, backends
}

// routeAll sends one request per cookie and returns the backends.
func routeAll(t *testing.T, url string, cookies []string) []string {
	return sendAll(t, url, cookies, nil)
}

// sendAll sends one request per cookie ("" for none), 8 at a time, and
// returns the backends; setCookies, when given, receives the cookies set.
func sendAll(t *testing.T, url string, cookies, setCookies []string) []string {
	backends := make([]string, len(cookies))
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	parallel(len(cookies), func(i int) {
		var set string
		backends[i], set = rawGet(t, hc, url, cookies[i])
		if setCookies != nil {
			setCookies[i] = set
		}
	})
	return backends
}

func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

func TestScaleUpMovesFairShare(t *testing.T) {
	const sessions = 10_000
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c"), startBackend(t, "d")}
	p := startRouter(t, testConfig(bs...))
	cookies, before := collectSessions(t, p.srv.URL, sessions)

	e := startBackend(t, "e")
	require.NoError(t, p.AddBackend(context.Background(), Backend{Name: "e", URL: e.url()}))
	after := routeAll(t, p.srv.URL, cookies)

	moved := 0
	count := map[string]int{}
	for i := range cookies {
		count[after[i]]++
		if after[i] != before[i] {
			moved++
			require.Equal(t, "e", after[i], "a session moved between old backends")
		}
	}
	fraction := float64(moved) / sessions
	want := 1.0 / 5
	t.Logf("moved %.4f of sessions (want %.4f), per backend %v", fraction, want, count)
	require.InDelta(t, want, fraction, want*0.10, "moved fraction within 10%% of 1/(N+1)")
	mean := float64(sessions) / 5
	for name, n := range count {
		require.LessOrEqual(t, float64(n)/mean, 1.1, "backend %s holds %d sessions, mean %.0f", name, n, mean)
	}
}

// Weights end to end: a heavier backend is home to its share of new
// sessions, and a new weight moves sessions only to or from its backend.
func TestBackendWeights(t *testing.T) {
	const sessions = 4_000
	a, b := startBackend(t, "a"), startBackend(t, "b")
	cfg := testConfig(a, b)
	cfg.Backends[1].Weight = 3
	p := startRouter(t, cfg)
	cookies, before := collectSessions(t, p.srv.URL, sessions)
	count := map[string]int{}
	for _, name := range before {
		count[name]++
	}
	t.Logf("weights 1:3 homes %v", count)
	require.InDelta(t, 0.75, float64(count["b"])/sessions, 0.05, "b, of weight 3 against 1, is home to about 3/4: %v", count)

	require.NoError(t, p.SetBackends(context.Background(), []Backend{{Name: "a", URL: a.url()}, {Name: "b", URL: b.url()}}))
	after := routeAll(t, p.srv.URL, cookies)
	moved := 0
	for i := range cookies {
		if after[i] != before[i] {
			moved++
			require.Equal(t, "b", before[i], "only sessions of the backend that lost weight move")
		}
	}
	t.Logf("reweighted to 1:1: %d of %d sessions moved", moved, sessions)
	require.InDelta(t, 0.25, float64(moved)/sessions, 0.05, "b gives up a third of its sessions to end even")
}

func TestScaleDownMovesOnlyRemovedSessions(t *testing.T) {
	const sessions = 2000
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c"), startBackend(t, "d")}
	p := startRouter(t, testConfig(bs...))
	cookies, before := collectSessions(t, p.srv.URL, sessions)

	require.NoError(t, p.RemoveBackend(context.Background(), "b"))
	after := routeAll(t, p.srv.URL, cookies)
	spread := map[string]int{}
	for i := range cookies {
		if before[i] == "b" {
			require.NotEqual(t, "b", after[i])
			spread[after[i]]++
			continue
		}
		require.Equal(t, before[i], after[i], "a session not on the removed backend moved")
	}
	require.Len(t, spread, 3, "the removed backend's sessions spread over the others: %v", spread)
}

func TestForgedAndWrongKeyCookiesStartNewSessions(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs...))
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	_, good := rawGet(t, hc, p.srv.URL, "")
	require.NotEmpty(t, good)
	value := strings.TrimPrefix(good, DefaultCookieName+"=")

	other := newSigner([][]byte{testKey2})
	tk, st := newSigner([][]byte{testKey1}).decode(value, time.Now(), time.Hour)
	require.Equal(t, cookieValid, st)
	resigned := other.encode(&tk) // same session, signed with a key the router does not have

	flipped := []byte(value)
	flipped[5] ^= 1
	if flipped[5] == value[5] || !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", rune(flipped[5])) {
		flipped[5] = 'A' + (value[5]-'A'+1)%26
	}
	old := tk
	old.issued = time.Now().Add(-48 * time.Hour).Unix()
	expired := newSigner([][]byte{testKey1}).encode(&old)

	cases := map[string]string{
		"tampered":  string(flipped),
		"wrong key": resigned,
		"garbage":   "not-a-cookie",
		"empty":     "",
		"too long":  value + "AAAA",
		"expired":   expired,
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			before := p.Metrics().NewSessions
			_, set := rawGet(t, hc, p.srv.URL, DefaultCookieName+"="+v)
			require.NotEmpty(t, set, "a new session gets a fresh cookie")
			require.NotEqual(t, good, set)
			require.Equal(t, before+1, p.Metrics().NewSessions)
		})
	}
	m := p.Metrics()
	require.EqualValues(t, 5, m.Forged) // all but "expired"
	require.EqualValues(t, 1, m.Expired)
}

func TestKeyRotation(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs...))
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	home, cookie := rawGet(t, hc, p.srv.URL, "")

	// Step 1: the new key verifies but does not sign yet.
	require.NoError(t, p.SetKeys([][]byte{testKey1, testKey2}))
	got, set := rawGet(t, hc, p.srv.URL, cookie)
	require.Equal(t, home, got)
	require.Empty(t, set)

	// Step 2: the new key signs; cookies signed with the old one still
	// work and are re-signed on the way back.
	require.NoError(t, p.SetKeys([][]byte{testKey2, testKey1}))
	got, set = rawGet(t, hc, p.srv.URL, cookie)
	require.Equal(t, home, got)
	require.NotEmpty(t, set, "a cookie signed with an old key is re-signed")

	// Step 3: the old key is retired; the re-signed cookie keeps the session.
	require.NoError(t, p.SetKeys([][]byte{testKey2}))
	got, again := rawGet(t, hc, p.srv.URL, set)
	require.Equal(t, home, got)
	require.Empty(t, again)
	require.Zero(t, p.Metrics().Forged)

	// The original cookie, signed with the retired key, is now a new client.
	_, fresh := rawGet(t, hc, p.srv.URL, cookie)
	require.NotEmpty(t, fresh)
	require.EqualValues(t, 1, p.Metrics().Forged)

	require.ErrorIs(t, p.SetKeys([][]byte{[]byte("short")}), ErrInvalidConfig)
	require.ErrorIs(t, p.SetKeys(nil), ErrInvalidConfig)
}

func TestTwoInstancesAgree(t *testing.T) {
	bs := threeBackends(t)
	cfg1 := testConfig(bs...)
	cfg2 := testConfig(bs[2], bs[0], bs[1]) // same backends, listed in another order
	p1, p2 := startRouter(t, cfg1), startRouter(t, cfg2)
	cookies, on1 := collectSessions(t, p1.srv.URL, 300)
	on2 := routeAll(t, p2.srv.URL, cookies)
	require.Equal(t, on1, on2)
	require.EqualValues(t, 300, p2.Metrics().Hits, "the second router accepts every cookie of the first")
}

func TestCookieAttributes(t *testing.T) {
	bs := threeBackends(t)
	cfg := testConfig(bs...)
	cfg.Cookie = CookieConfig{Name: "sess", MaxAge: time.Hour}
	r, err := New(cfg)
	require.NoError(t, err)
	defer r.Close(context.Background())

	for _, useTLS := range []bool{false, true} {
		var srv *httptest.Server
		if useTLS {
			srv = httptest.NewTLSServer(r)
		} else {
			srv = httptest.NewServer(r)
		}
		hc := srv.Client()
		resp, err := hc.Get(srv.URL)
		require.NoError(t, err)
		resp.Body.Close()
		cs := resp.Cookies()
		require.Len(t, cs, 1)
		c := cs[0]
		assert.Equal(t, "sess", c.Name)
		assert.True(t, c.HttpOnly)
		assert.Equal(t, http.SameSiteLaxMode, c.SameSite)
		assert.Equal(t, 3600, c.MaxAge)
		assert.Equal(t, useTLS, c.Secure, "Secure exactly under TLS")
		raw, err := cookieEncoding.DecodeString(c.Value)
		require.NoError(t, err)
		for _, b := range bs {
			host, port, _ := net.SplitHostPort(b.addr)
			assert.NotContains(t, string(raw), host)
			assert.NotContains(t, string(raw), port)
		}
		hc.CloseIdleConnections()
		srv.Close()
	}
}

func TestForwardedHeadersAndCookieStripping(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	c := newClient(t)
	c.get(p.srv.URL) // gets the affinity cookie
	req, _ := http.NewRequest(http.MethodGet, p.srv.URL+"/headers", nil)
	req.Header.Set("Cookie", "theme=dark")
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // spoofed: replaced
	resp, err := c.hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var seen map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&seen))
	assert.Equal(t, "127.0.0.1", seen["xff"])
	assert.Equal(t, "http", seen["proto"])
	assert.Equal(t, strings.TrimPrefix(p.srv.URL, "http://"), seen["xhost"])
	assert.Contains(t, seen["cookie"], "theme=dark")
	assert.NotContains(t, seen["cookie"], DefaultCookieName+"=", "the backend never sees the router's cookie")
}

func TestTrustedProxiesForwardedHeaders(t *testing.T) {
	for _, tc := range []struct {
		name              string
		trusted           string
		xff, xhost, proto string
		secureCookie      bool
	}{
		{"trusted peer", "127.0.0.0/8", "203.0.113.7, 10.1.1.1, 127.0.0.1", "app.example", "https", true},
		{"other peer", "10.0.0.0/8", "127.0.0.1", "", "http", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, "a")
			cfg := testConfig(b)
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trusted)}
			p := startRouter(t, cfg)
			xhost := tc.xhost
			if xhost == "" {
				xhost = strings.TrimPrefix(p.srv.URL, "http://") // what the router saw
			}
			// GET takes the fast path; POST, with a body, ReverseProxy.
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				seen, resp := headersSeen(t, p.srv.URL, method, func(req *http.Request) {
					req.Header["X-Forwarded-For"] = []string{"203.0.113.7", "10.1.1.1"}
					req.Header.Set("X-Forwarded-Host", "app.example")
					req.Header.Set("X-Forwarded-Proto", "HTTPS")
				})
				assert.Equal(t, tc.xff, seen["xff"], method)
				assert.Equal(t, xhost, seen["xhost"], method)
				assert.Equal(t, tc.proto, seen["proto"], method)
				require.Len(t, resp.Cookies(), 1, method)
				assert.Equal(t, tc.secureCookie, resp.Cookies()[0].Secure, "%s: the cookie is Secure behind a trusted TLS proxy", method)
			}
		})
	}
}

func TestPreserveHost(t *testing.T) {
	for _, preserve := range []bool{false, true} {
		t.Run(fmt.Sprint("preserve=", preserve), func(t *testing.T) {
			b := startBackend(t, "a")
			cfg := testConfig(b)
			cfg.PreserveHost = preserve
			p := startRouter(t, cfg)
			want := b.addr
			if preserve {
				want = "app.example:8080"
			}
			// GET takes the fast path; POST, with a body, ReverseProxy.
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				seen, _ := headersSeen(t, p.srv.URL, method, func(req *http.Request) {
					req.Host = "app.example:8080"
				})
				assert.Equal(t, want, seen["host"], method)
				assert.Equal(t, "app.example:8080", seen["xhost"], method)
			}
		})
	}
}

func TestForwardedHeader(t *testing.T) {
	for _, tc := range []struct {
		name      string
		on        bool
		trusted   string
		wantPrior bool
	}{
		{"off", false, "", false},
		{"on, other peer", true, "10.0.0.0/8", false},
		{"on, trusted peer", true, "127.0.0.0/8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, "a")
			cfg := testConfig(b)
			cfg.Forwarded = tc.on
			if tc.trusted != "" {
				cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trusted)}
			}
			p := startRouter(t, cfg)
			hop := `for=127.0.0.1;host="` + strings.TrimPrefix(p.srv.URL, "http://") + `";proto=http`
			want := ""
			switch {
			case tc.wantPrior:
				want = `for=203.0.113.7;proto=https, ` + hop
			case tc.on:
				want = hop
			}
			// GET takes the fast path; POST, with a body, ReverseProxy.
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				seen, _ := headersSeen(t, p.srv.URL, method, func(req *http.Request) {
					req.Header.Set("Forwarded", "for=203.0.113.7;proto=https")
				})
				assert.Equal(t, want, seen["fwd"], method)
			}
		})
	}
}

func TestForwardedValues(t *testing.T) {
	assert.Equal(t, "example.com", forwardedValue("example.com"))
	assert.Equal(t, `"example.com:8080"`, forwardedValue("example.com:8080"))
	r := &Router{cfg: Config{Forwarded: true}}
	in := httptest.NewRequest(http.MethodGet, "/", nil)
	in.RemoteAddr, in.Host = "[2001:db8::1]:4321", "app.example"
	assert.Equal(t, `for="[2001:db8::1]";host=app.example;proto=http`, r.forwardedHeader(in))
}

func TestTrustedProxiesMustBeValid(t *testing.T) {
	cfg := testConfig(startBackend(t, "a"))
	cfg.TrustedProxies = []netip.Prefix{{}}
	_, err := New(cfg)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorContains(t, err, "trusted proxy")
}

func TestRequestAndResponseBodiesStream(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	const size = 32 << 20
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, p.srv.URL+"/upload", pr)
	resp, err := newClient(t).hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, fmt.Sprint(size), string(body))
}

func TestServerSentEventsFlushAsTheyCome(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	resp, err := newClient(t).hc.Get(p.srv.URL + "/sse")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ {
		// The backend sends event i+1 only after this one arrived: a proxy
		// that buffered would deadlock here (and the test time out).
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("data: event %d\n", i), line)
		_, _ = br.ReadString('\n')
		if i < 2 {
			b.sseNext <- struct{}{}
		}
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	bs := threeBackends(t)
	p := startRouter(t, testConfig(bs...))
	c := newClient(t)
	_, home, _ := c.get(p.srv.URL)
	u := p.srv.URL + "/ws"
	cookies := c.hc.Jar.Cookies(mustURL(t, u))
	require.Len(t, cookies, 1)

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: %s=%s\r\n\r\n",
		cookies[0].Name, cookies[0].Value)
	br := bufio.NewReader(conn)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	require.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", resp.Header.Get("Sec-WebSocket-Accept"))
	require.Equal(t, home, resp.Header.Get("X-Backend"), "the upgrade goes to the session's backend")
	fmt.Fprint(conn, "ping\n")
	require.Equal(t, home+" says ping\n", readLine(t, conn, br))
}

func TestClientDisconnectCancelsBackendRequest(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := newClient(t).hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-b.arrived
	require.EqualValues(t, 1, p.rt.Stats().Pools[poolName].Inflight)
	cancel()
	require.Error(t, <-errc)
	select {
	case <-b.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend request was not cancelled")
	}
	require.Eventually(t, func() bool { return p.Metrics().ClientGone == 1 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return p.rt.Stats().Pools[poolName].Inflight == 0 }, 5*time.Second, time.Millisecond)
}

func TestBackendAtCapacityAnswers503(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.MaxConnsPerBackend = 1
	cfg.QueueTimeout = 20 * time.Millisecond
	p := startRouter(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+"/slow", nil)
		if resp, err := newClient(t).hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-b.arrived
	code, _, body := newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "capacity")
	require.EqualValues(t, 1, p.Metrics().Busy)
	cancel()
	<-done
}

func TestRefusedPostGoesWholeToAnotherBackend(t *testing.T) {
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b")}
	cfg := testConfig(bs...)
	cfg.Health.Interval = time.Hour // only passive checks in this test
	p := startRouter(t, cfg)
	c := sessionOn(t, p, "a")
	bs[0].kill()
	// A health probe may have left a connection to a in the transport's
	// pool, which the kill broke: the POST must meet a refused dial.
	p.transport.(*http.Transport).CloseIdleConnections()
	resp, err := c.hc.Post(p.srv.URL+"/upload", "text/plain", strings.NewReader("payload"))
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "nothing reached a, so the request went on, body and all")
	require.Equal(t, "b", resp.Header.Get("X-Backend"))
	require.Equal(t, "7", string(got), "b read the whole body")
	waitHealthy(t, p.Router, "a", false) // the refused dial marked a down
	code, home, _ := c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "b", home)
}

func TestPostBrokenMidBodyIsNotReplayed(t *testing.T) {
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b")}
	cfg := testConfig(bs...)
	cfg.Health.Interval = time.Hour
	p := startRouter(t, cfg)
	c := sessionOn(t, p, "a")
	resp, err := c.hc.Post(p.srv.URL+"/upload-drop", "text/plain", strings.NewReader("payload"))
	require.NoError(t, err)
	resp.Body.Close()
	<-bs[0].arrived
	require.Equal(t, http.StatusBadGateway, resp.StatusCode, "a read part of the body: it is not sent again")
	select {
	case <-bs[1].arrived:
		t.Fatal("the request was replayed on b")
	default:
	}
	require.Zero(t, p.Metrics().Fallbacks)
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}
