package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests for issue 12: the router under abuse.

// Item 2: a web page must not be able to drive the admin API.
func TestAdminRefusesBrowsersAndStrangers(t *testing.T) {
	bs := threeBackends(t)
	cfg := testConfig(bs[0])
	p := startRouter(t, cfg)
	admin := httptest.NewServer(p.AdminHandler())
	defer admin.Close()
	hc := admin.Client()
	add := func(name string, h map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, admin.URL+"/backends", strings.NewReader(fmt.Sprintf(`{"name":%q,"url":%q}`, name, bs[1].url())))
		for k, v := range h {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	adminHost := strings.TrimPrefix(admin.URL, "http://")
	cases := []struct {
		name string
		h    map[string]string
		want int
	}{
		{"simple cross-origin POST", map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"text/plain from no origin", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"no content type", map[string]string{}, http.StatusUnsupportedMediaType},
		{"DNS rebinding", map[string]string{"Content-Type": "application/json", "Host": "evil.example:" + admin.URL[strings.LastIndex(admin.URL, ":")+1:]}, http.StatusForbidden},
		{"cross-site fetch", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"null origin", map[string]string{"Content-Type": "application/json", "Origin": "null"}, http.StatusForbidden},
	}
	for _, c := range cases {
		require.Equal(t, c.want, add("x", c.h), c.name)
	}
	require.Len(t, p.Backends(), 1, "nothing was added")
	require.Equal(t, http.StatusCreated, add("b", map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": "http://" + adminHost}))
	require.Equal(t, http.StatusCreated, add("c", map[string]string{"Content-Type": "application/json", "Host": "localhost"}))

	t.Run("token", func(t *testing.T) {
		cfg := testConfig(bs[0])
		cfg.Admin = AdminConfig{Token: "s3cret-token-0123456789", Hosts: []string{"admin.internal"}}
		p := startRouter(t, cfg)
		admin := httptest.NewServer(p.AdminHandler())
		defer admin.Close()
		do := func(method, path, token, host string) int {
			req, _ := http.NewRequest(method, admin.URL+path, strings.NewReader(fmt.Sprintf(`{"name":"b","url":%q}`, bs[1].url())))
			req.Header.Set("Content-Type", "application/json")
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			if host != "" {
				req.Host = host
			}
			resp, err := admin.Client().Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		require.Equal(t, http.StatusUnauthorized, do("GET", "/backends", "", ""))
		require.Equal(t, http.StatusUnauthorized, do("GET", "/metrics", "wrong-token-0123456789", ""))
		require.Equal(t, http.StatusUnauthorized, do("POST", "/backends", "", ""))
		require.Equal(t, http.StatusOK, do("GET", "/healthz", "", ""), "health checks need no token")
		require.Equal(t, http.StatusOK, do("GET", "/backends", cfg.Admin.Token, "admin.internal:9090"), "a configured host")
		require.Equal(t, http.StatusForbidden, do("GET", "/backends", cfg.Admin.Token, "other.internal"))
		require.Equal(t, http.StatusCreated, do("POST", "/backends", cfg.Admin.Token, ""))
	})
	t.Run("short token", func(t *testing.T) {
		cfg := testConfig(bs[0])
		cfg.Admin.Token = "short"
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

// Item 3: one slow response must not evict a backend.
func TestResponseTimeoutCountsTowardFall(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.ResponseHeaderTimeout = 50 * time.Millisecond
	cfg.Health.Interval = time.Hour // passive observations only
	cfg.Health.Fall = 3
	p := startRouter(t, cfg)
	c := newClient(t)
	for i := 1; i <= 3; i++ {
		code, _, _ := c.get(p.srv.URL + "/slow")
		require.Equal(t, http.StatusGatewayTimeout, code)
		require.EqualValues(t, i, p.Backends()[0].Failures)
		require.Equal(t, i < 3, p.Backends()[0].Healthy, "after %d timeouts (fall 3)", i)
	}
}

// Item 5: a response that sets the cookie is not for shared caches.
func TestCookieResponsesAreNotStoredBySharedCaches(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	c := newClient(t)
	resp, err := c.hc.Get(p.srv.URL + "/public")
	require.NoError(t, err)
	resp.Body.Close()
	require.Len(t, resp.Cookies(), 1)
	require.Equal(t, "max-age=60, private", resp.Header.Get("Cache-Control"), "public and s-maxage dropped, private added")

	resp, err = c.hc.Get(p.srv.URL + "/public")
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, resp.Cookies())
	require.Equal(t, "public, max-age=60, s-maxage=600", resp.Header.Get("Cache-Control"), "without a cookie the backend's policy stands")

	resp, err = newClient(t).hc.Get(p.srv.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "private", resp.Header.Get("Cache-Control"))

	h := http.Header{"Cache-Control": {"no-store"}}
	privateCache(h)
	require.Equal(t, []string{"no-store"}, h["Cache-Control"])
}

// Item 6: of several cookies with the router's name, the one that verifies
// wins.
func TestSeveralCookiesOfTheNameUseTheOneThatVerifies(t *testing.T) {
	p := startRouter(t, testConfig(threeBackends(t)...))
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	home, good := rawGet(t, hc, p.srv.URL, "")
	for _, cookie := range []string{
		DefaultCookieName + "=forged-by-a-parent-domain; " + good,
		good + "; " + DefaultCookieName + "=garbage",
		"theme=dark; " + DefaultCookieName + "=AAAA; " + good,
	} {
		before := p.Metrics()
		got, set := rawGet(t, hc, p.srv.URL, cookie)
		require.Equal(t, home, got, cookie)
		require.Empty(t, set, "no new session for %q", cookie)
		after := p.Metrics()
		require.Equal(t, before.Hits+1, after.Hits)
		require.Equal(t, before.Forged, after.Forged, "a cookie that verifies was found: nothing forged")
	}
	// A flood of cookies costs at most maxCookieTries signature checks.
	flood := strings.Repeat(DefaultCookieName+"=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; ", 1000)
	_, set := rawGet(t, hc, p.srv.URL, flood+good)
	require.NotEmpty(t, set, "the good cookie after the flood is not looked at")

	// Only bad ones: a new session, counted once.
	forged := p.Metrics().Forged
	_, set = rawGet(t, hc, p.srv.URL, DefaultCookieName+"=x; "+DefaultCookieName+"=y")
	require.NotEmpty(t, set)
	require.Equal(t, forged+1, p.Metrics().Forged)
}

// Item 7: lenient framing.
func TestRequestWithContentLengthAndChunkedClosesTheConnection(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	conn, br, resp, body := rawRequest(t, p.srv.URL, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "5", body, "Transfer-Encoding wins over Content-Length")
	require.True(t, resp.Close, "the response says Connection: close")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the router closed the connection")
}

func TestMalformedChunkSizeIsABadRequest(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	_, _, resp, body := rawRequest(t, p.srv.URL, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
	require.EqualValues(t, 1, p.Metrics().BadRequest)
	require.Zero(t, p.Metrics().BadGateway)
	require.Zero(t, p.Backends()[0].Failures, "the client's mistake is not the backend's")
	require.True(t, p.Backends()[0].Healthy)
}

// Item 8: Close ends upgraded connections instead of waiting for them.
func TestCloseEndsUpgradedConnections(t *testing.T) {
	b := startBackend(t, "a")
	r, err := New(testConfig(b))
	require.NoError(t, err)
	srv := httptest.NewServer(r)
	defer srv.Close()
	conn, br, resp := openWS(t, srv.URL, "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	require.EqualValues(t, 1, r.Metrics().Upgraded)

	// The client never closes the WebSocket: Close must end it. Its second
	// of waiting for the client's close answer leaves little of a tighter
	// deadline to a loaded machine (the whole suite under -race).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Close(ctx), "Close does not wait for the WebSocket to end by itself")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the connection ends with a FIN")
	require.Equal(t, []byte{0x88, 0x02, 0x03, 0xe9}, rest, "a WebSocket close frame, 1001 going away")
	require.Zero(t, r.Metrics().Upgraded)

	// An upgrade after Close is refused.
	_, _, resp = openWS(t, srv.URL, "")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// Item 8, the backend's side: it gets a client's close frame, 1001, masked,
// on Close and on the idle timeout, after the frames the client sent whole,
// and none when the client had begun the closing handshake itself.
func TestBackendSideOfAWebSocketGetsACloseFrame(t *testing.T) {
	clientFrame := []byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1} // masked text "hello"
	clientClose := []byte{0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xe8 ^ 9}                          // masked 1000
	for _, tc := range []struct {
		name   string
		idle   bool   // end by the idle timeout, not Close
		sent   []byte // what the client sends first
		closes bool   // the backend should get the router's close frame
	}{
		{"close", false, clientFrame, true},
		{"idle timeout", true, clientFrame, true},
		{"client closed first", false, append(append([]byte{}, clientFrame...), clientClose...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, "a")
			cfg := testConfig(b)
			if tc.idle {
				cfg.UpgradeIdleTimeout = 200 * time.Millisecond
			}
			r, err := New(cfg)
			require.NoError(t, err)
			srv := httptest.NewServer(r)
			defer srv.Close()
			defer r.Close(context.Background())
			conn, br, resp := openWSPath(t, srv.URL, "/ws-hold", "")
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			_, err = conn.Write(tc.sent)
			require.NoError(t, err)
			// The backend counts what it got: wait for all of it, so that
			// the close frame comes after the client's frames.
			for want := strconv.Itoa(len(tc.sent)); ; {
				hdr := make([]byte, 2)
				_, err := io.ReadFull(br, hdr)
				require.NoError(t, err)
				count := make([]byte, hdr[1])
				_, err = io.ReadFull(br, count)
				require.NoError(t, err)
				if string(count) == want {
					break
				}
			}
			if !tc.idle {
				require.NoError(t, r.Close(context.Background()))
			}
			var got []byte
			select {
			case got = <-b.wsGot:
			case <-time.After(10 * time.Second):
				t.Fatal("the backend's connection was not closed")
			}
			require.Equal(t, tc.sent, got[:min(len(got), len(tc.sent))], "the client's frames arrive whole, first")
			rest := got[len(tc.sent):]
			if !tc.closes {
				require.Empty(t, rest, "no second close frame")
				return
			}
			require.Len(t, rest, 8, "one masked close frame with a 2-byte status: %x", rest)
			require.Equal(t, []byte{0x88, 0x82}, rest[:2])
			m := rest[2:6]
			require.Equal(t, []byte{0x03, 0xe9}, []byte{rest[6] ^ m[0], rest[7] ^ m[1]}, "status 1001, going away")
		})
	}
}

// Item 8: Close sends its close frames without waiting on a client that
// stopped reading for longer than a second: the write stuck on that client
// fails then.
func TestCloseDoesNotWaitOnAClientThatStoppedReading(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.UpgradeIdleTimeout = time.Hour
	r, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(r)
	defer srv.Close()
	_, _, resp := openWSPath(t, srv.URL, "/ws-flood", "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	select {
	case <-b.wsFull:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's writes never stalled")
	}

	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits on a client that does not read")
	}
	require.Zero(t, r.Metrics().Upgraded)
}

// Item 8: Close closes a WebSocket once its client has answered the close
// frame (RFC 6455 section 7.1.1), not before, whatever the backend sends
// meanwhile (wsHold answers every read, the router's close frame included).
func TestCloseWaitsForTheClientsCloseAnswer(t *testing.T) {
	b := startBackend(t, "a")
	r, err := New(testConfig(b))
	require.NoError(t, err)
	r.closeHandshake = time.Minute // the client answers when the test says
	srv := httptest.NewServer(r)
	defer srv.Close()
	conn, br, resp := openWSPath(t, srv.URL, "/ws-hold", "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	frame := make([]byte, len(closeGoingAway))
	_, err = io.ReadFull(br, frame)
	require.NoError(t, err)
	require.Equal(t, closeGoingAway[:], frame)
	assert.Never(t, func() bool { return len(closed) > 0 }, 200*time.Millisecond, 5*time.Millisecond,
		"Close waits for the client's answer")

	answerClose(t, conn, br, closed) // nothing after the close frame: the backend's answer is not passed on
	select {
	case got := <-b.wsGot:
		require.Len(t, got, 8, "the backend got the router's close frame only: %x", got)
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's connection was not closed")
	}
}

// Item 8: Close waits for the close answers of WebSocket clients only. An
// upgrade still waiting for its backend, or a connection upgraded to
// another protocol, has no close frame to answer: Close cancels it at once
// instead of giving it the handshake's time.
func TestCloseDoesNotWaitForWhatHasNoCloseFrame(t *testing.T) {
	for _, path := range []string{"/slow", "/ws-hold"} {
		t.Run(path, func(t *testing.T) {
			b := startBackend(t, "a")
			r, err := New(testConfig(b))
			require.NoError(t, err)
			r.closeHandshake = time.Minute
			srv := httptest.NewServer(r)
			defer srv.Close()
			conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			require.NoError(t, err)
			defer conn.Close()
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: tcp-echo\r\n\r\n", path)
			if path == "/slow" { // the backend has it, and does not answer
				select {
				case <-b.arrived:
				case <-time.After(10 * time.Second):
					t.Fatal("the upgrade did not reach the backend")
				}
			} else {
				require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				require.NoError(t, err)
				require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
				require.Eventually(t, func() bool { return r.Metrics().Upgraded == 1 }, 10*time.Second, time.Millisecond)
			}
			closed := make(chan error, 1)
			go func() { closed <- r.Close(context.Background()) }()
			select {
			case err := <-closed:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close waits for an answer that cannot come")
			}
			require.Zero(t, r.Metrics().Upgraded)
		})
	}
}

// Item 8: a close frame never cuts a frame in two. When Close finds the
// backend mid-frame towards the client, the client gets the rest of that
// frame, then the close frame, and nothing the backend sends after it.
func TestCloseFrameWaitsForTheFrameToTheClient(t *testing.T) {
	b := startBackend(t, "a")
	r, err := New(testConfig(b))
	require.NoError(t, err)
	r.closeHandshake = time.Minute // the client answers when the test says
	srv := httptest.NewServer(r)
	defer srv.Close()
	conn, br, resp := openWSPath(t, srv.URL, "/ws-split", "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	start := make([]byte, 6)
	_, err = io.ReadFull(br, start)
	require.NoError(t, err)
	require.Equal(t, wsSplitFrame[:6], start)

	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	// The backend sends the rest once it has the router's close frame, which
	// goes after the client's side has been dealt with.
	select {
	case got := <-b.wsGot:
		require.Equal(t, []byte{0x88, 0x82}, got[:2], "the backend got a masked close frame: %x", got)
	case <-time.After(10 * time.Second):
		t.Fatal("the backend got no close frame")
	}
	rest := make([]byte, len(wsSplitFrame)-6+len(closeGoingAway))
	_, err = io.ReadFull(br, rest)
	require.NoError(t, err)
	require.Equal(t, wsSplitFrame[6:], rest[:6], "the frame under way arrives whole")
	require.Equal(t, closeGoingAway[:], rest[6:], "then the close frame, not the late frame")

	answerClose(t, conn, br, closed)
}

// answerClose sends the router's close frame back, as a client does, and
// checks that Close (its outcome on closed) then ends cleanly, and that
// nothing more came before the connection's end.
func answerClose(t *testing.T, conn net.Conn, br *bufio.Reader, closed <-chan error) {
	t.Helper()
	clientClose := []byte{0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xe9 ^ 9} // masked 1001
	_, err := conn.Write(clientClose)
	require.NoError(t, err)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end on the client's answer")
	}
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the connection ends with a FIN")
	require.Empty(t, rest, "nothing after the close frame")
}

// Item 8, the backend's side: when Close finds the client mid-frame, the
// backend gets the rest of that frame, then the router's close frame, and
// not what the client sends after it.
func TestCloseFrameWaitsForTheFrameToTheBackend(t *testing.T) {
	b := startBackend(t, "a")
	r, err := New(testConfig(b))
	require.NoError(t, err)
	r.closeHandshake = time.Minute
	srv := httptest.NewServer(r)
	defer srv.Close()
	conn, br, resp := openWSPath(t, srv.URL, "/ws-hold", "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	m := [4]byte{1, 2, 3, 4}
	frame := []byte{0x82, 0x8a, m[0], m[1], m[2], m[3]} // masked binary, 10 bytes
	for i, c := range []byte("partofone!") {
		frame = append(frame, c^m[i%4])
	}
	_, err = conn.Write(frame[:10])
	require.NoError(t, err)
	hdr := make([]byte, 4)
	_, err = io.ReadFull(br, hdr) // wsHold's count, "10": the backend has the start
	require.NoError(t, err)
	require.Equal(t, []byte{0x81, 2, '1', '0'}, hdr)

	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	got := make([]byte, len(closeGoingAway))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, closeGoingAway[:], got)
	clientClose := []byte{0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xe8 ^ 9} // masked 1000
	_, err = conn.Write(append(append([]byte{}, frame[10:]...), clientClose...))
	require.NoError(t, err)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end")
	}
	var sent []byte
	select {
	case sent = <-b.wsGot:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's connection was not closed")
	}
	require.Equal(t, frame, sent[:min(len(sent), len(frame))], "the frame under way arrives whole")
	tail := sent[len(frame):]
	require.Len(t, tail, 8, "then one close frame: %x", tail)
	require.Equal(t, []byte{0x88, 0x82}, tail[:2])
	require.Equal(t, []byte{0x03, 0xe9}, []byte{tail[6] ^ tail[2], tail[7] ^ tail[3]}, "the router's 1001, not the client's 1000")
}

// panicTransport panics on requests for /panic, as a bug met by one kind
// of request would, and passes the rest on.
type panicTransport struct{ http.RoundTripper }

func (p panicTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == "/panic" {
		panic("a bug met by this request")
	}
	return p.RoundTripper.RoundTrip(req)
}

// However often requests make the proxying code panic, the backend's
// worker actor is restarted: no restart budget runs out and leaves the
// backend answering 502 for good.
func TestRepeatedPanicsDoNotDisableABackend(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	cfg.Transport = panicTransport{transport}
	p := startRouter(t, cfg)
	c := newClient(t)
	const panics = 11 // one beyond the runtime's default budget of 10 a minute
	for i := 0; i < panics; i++ {
		// Each waits for the restart before it: a request that comes during
		// one goes to another backend, and there is none.
		require.Eventually(t, func() bool {
			code, _, _ := c.get(p.srv.URL + "/panic")
			return code == http.StatusBadGateway && p.rt.Stats().Pools[poolName].Restarts == uint64(i+1)
		}, 10*time.Second, time.Millisecond, "panic %d", i+1)
	}
	stats := p.rt.Stats().Pools[poolName]
	require.Zero(t, stats.Failed, "no worker actor ran out of restarts")
	require.Eventually(t, func() bool {
		code, got, _ := c.get(p.srv.URL)
		return code == http.StatusOK && got == "a"
	}, 10*time.Second, time.Millisecond, "the backend serves again")
}

// Item 1: WebSockets have their own cap and do not hold request slots.
func TestWebSocketsDoNotTakeRequestSlots(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.MaxConnsPerBackend = 1
	cfg.MaxUpgradesPerBackend = 2
	cfg.QueueTimeout = 20 * time.Millisecond
	p := startRouter(t, cfg)
	for i := 0; i < 2; i++ {
		_, _, resp := openWS(t, p.srv.URL, "")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	}
	code, _, _ := newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusOK, code, "open WebSockets leave the request slot free")

	_, _, resp := openWS(t, p.srv.URL, "")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "beyond MaxUpgradesPerBackend")
	require.EqualValues(t, 2, p.Metrics().Upgraded)
}

func TestIdleWebSocketIsClosed(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.UpgradeIdleTimeout = 100 * time.Millisecond
	p := startRouter(t, cfg)
	conn, br, resp := openWS(t, p.srv.URL, "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "closed after the idle timeout")
	require.Equal(t, []byte{0x88, 0x02, 0x03, 0xe9}, rest, "with a close frame")
	require.Eventually(t, func() bool { return p.Metrics().Upgraded == 0 }, 5*time.Second, time.Millisecond)
}

// Item 8: after the idle timeout's close frame, the client has time to
// answer it, and its answer ends the connection.
func TestIdleWebSocketWaitsForTheClientsCloseAnswer(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.UpgradeIdleTimeout = 100 * time.Millisecond
	p := startRouter(t, cfg)
	p.Router.closeHandshake = time.Minute // before the upgrade reads it
	conn, br, resp := openWSPath(t, p.srv.URL, "/ws-hold", "")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	frame := make([]byte, len(closeGoingAway))
	_, err := io.ReadFull(br, frame)
	require.NoError(t, err)
	require.Equal(t, closeGoingAway[:], frame)
	assert.Never(t, func() bool { return p.Metrics().Upgraded == 0 }, 200*time.Millisecond, 5*time.Millisecond,
		"the upgrade waits for the client's answer")

	_, err = conn.Write([]byte{0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xe9 ^ 9}) // masked 1001
	require.NoError(t, err)
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the connection ends with a FIN")
	require.Empty(t, rest, "the backend's answer to the close frame is not passed on")
	require.Eventually(t, func() bool { return p.Metrics().Upgraded == 0 }, 5*time.Second, time.Millisecond)
}

// startUpload sends the headers of a POST /upload announcing size bytes
// and returns the connection, for the test to trickle the body.
func startUpload(t *testing.T, proxyURL string, size int) net.Conn {
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	return conn
}

func readStatus(t *testing.T, conn net.Conn) int {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestStalledUploadGets408AndFreesTheSlot(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.BodyReadTimeout = 100 * time.Millisecond
	cfg.MaxConnsPerBackend = 1
	p := startRouter(t, cfg)
	conn := startUpload(t, p.srv.URL, 1000)
	_, err := io.WriteString(conn, "0123456789")
	require.NoError(t, err)
	require.Equal(t, http.StatusRequestTimeout, readStatus(t, conn))
	require.Eventually(t, func() bool { return p.rt.Stats().Pools[poolName].Inflight == 0 }, 5*time.Second, time.Millisecond)
	code, _, _ := newClient(t).get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Zero(t, p.Backends()[0].Failures, "a slow client is not the backend's failure")
	require.True(t, p.Backends()[0].Healthy)
}

func TestUploadBelowMinimumRateGets408(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.BodyReadTimeout = 100 * time.Millisecond
	cfg.MinUploadRate = 10_000
	p := startRouter(t, cfg)
	conn := startUpload(t, p.srv.URL, 1000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a client sending 50 B/s: every read is quick, the average is not
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte{'x'}); err != nil {
					return
				}
			}
		}
	}()
	code := readStatus(t, conn)
	close(stop)
	<-done
	require.Equal(t, http.StatusRequestTimeout, code)
	require.EqualValues(t, 1, p.Metrics().BadRequest)
}

func TestNewSessionsAvoidABackendAtCapacity(t *testing.T) {
	bs := []*testBackend{startBackend(t, "a"), startBackend(t, "b")}
	cfg := testConfig(bs...)
	cfg.MaxConnsPerBackend = 1
	cfg.QueueTimeout = 20 * time.Millisecond
	p := startRouter(t, cfg)
	c := sessionOn(t, p, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+"/slow", nil)
		if resp, err := c.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-bs[0].arrived
	for i := 0; i < 20; i++ {
		code, got, _ := newClient(t).get(p.srv.URL)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "b", got, "a is at capacity")
	}
	cancel()
	<-done
}

// Item 9: session actors are capped.
func TestMaxSessionsCapsSessionActors(t *testing.T) {
	cfg := testConfig(threeBackends(t)...)
	cfg.MaxSessions = 3
	p := startRouter(t, cfg)
	for i := 0; i < 6; i++ {
		c := newClient(t)
		_, first, _ := c.get(p.srv.URL)
		for j := 0; j < 2; j++ {
			code, got, _ := c.get(p.srv.URL)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, first, got, "routing does not depend on the cap")
		}
	}
	m := p.Metrics()
	assert.EqualValues(t, 3, m.Sessions)
	assert.EqualValues(t, 3*2, m.SessionsRefused)
	assert.Equal(t, 3+1, p.rt.Stats().Sessions, "three clients' own plus the shared one")
}

func TestSessionTableSweeps(t *testing.T) {
	st := newSessionTable(2)
	var a, b, c [16]byte
	a[0], b[0], c[0] = 1, 2, 3
	// tracked runs one request of sid from now to now.
	tracked := func(sid [16]byte, now uint32) bool {
		e := st.begin(sid)
		if e == nil {
			return false
		}
		require.Equal(t, sessionName(sid), e.name)
		e.end(now)
		return true
	}
	require.True(t, tracked(a, 10))
	require.True(t, tracked(b, 20))
	require.False(t, tracked(c, 20), "full")
	require.True(t, tracked(a, 30), "a known session stays")
	require.True(t, tracked(a, 30), "and keeps its name")
	st.sweep(25) // forgets b, last used at 20
	require.EqualValues(t, 1, st.count.Load())
	require.True(t, tracked(c, 31))
}

// A request that outlives the idle time keeps its session in the table:
// the runtime keeps its session actor meanwhile, so forgetting it would let
// one more session in than MaxSessions.
func TestSessionTableKeepsSessionsWithRequestsRunning(t *testing.T) {
	st := newSessionTable(1)
	var a, b [16]byte
	a[0], b[0] = 1, 2
	long := st.begin(a)
	require.NotNil(t, long)
	st.sweep(100)
	require.EqualValues(t, 1, st.count.Load(), "a's request still runs")
	require.Nil(t, st.begin(b), "full while a's request runs")

	long.end(200)
	st.sweep(150)
	require.EqualValues(t, 1, st.count.Load(), "idle time counts from the request's end")
	st.sweep(201)
	require.Zero(t, st.count.Load())
	require.NotNil(t, st.begin(b))
}

func TestFrameTrackerFindsBoundaries(t *testing.T) {
	var f frameTracker
	require.True(t, f.atBoundary())
	frame := func(n int, masked bool) []byte {
		b := []byte{0x82}
		m := byte(0)
		if masked {
			m = 0x80
		}
		switch {
		case n < 126:
			b = append(b, m|byte(n))
		case n < 1<<16:
			b = append(b, m|126, byte(n>>8), byte(n))
		default:
			b = append(b, m|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		}
		if masked {
			b = append(b, 1, 2, 3, 4)
		}
		return append(b, make([]byte, n)...)
	}
	var stream []byte
	var ends []int // where each frame of the stream ends
	for _, n := range []int{0, 5, 125, 126, 300, 70_000} {
		for _, masked := range []bool{false, true} {
			stream = append(stream, frame(n, masked)...)
			ends = append(ends, len(stream))
		}
	}
	// Fed in odd slices, it is at a boundary only at the end.
	for i := 0; i < len(stream); i += 7 {
		f.feed(stream[i:min(i+7, len(stream))])
		if i+7 < len(stream) && f.atBoundary() {
			// a slice may end exactly between frames: check against a fresh parse
			var g frameTracker
			g.feed(stream[:i+7])
			require.True(t, g.atBoundary())
		}
	}
	require.True(t, f.atBoundary())
	require.False(t, f.closed, "binary frames only")
	f.feed(frame(10, false)[:5])
	require.False(t, f.atBoundary(), "mid-frame")

	// From any point of the stream, frameEnd finds the next boundary, or
	// takes all it is given when the frame goes on beyond it.
	var g frameTracker
	next := 0
	for i := 0; i < len(stream); i += 13 {
		for ends[next] <= i {
			next++
		}
		require.Equal(t, ends[next]-i, g.frameEnd(stream[i:]), "from byte %d", i)
		cut := min(ends[next]-i, 3)
		require.Equal(t, cut, g.frameEnd(stream[i:i+cut]), "from byte %d, cut short", i)
		g.feed(stream[i:min(i+13, len(stream))])
	}

	var c frameTracker
	c.feed([]byte{0x88, 0x82, 1, 2})
	require.False(t, c.closed, "a close frame's header, not yet whole")
	c.feed([]byte{3, 4, 5, 6})
	require.True(t, c.closed, "a close frame went by")
	require.True(t, c.atBoundary())
}

// With a token set, a browser logs in to the live page once: the form
// trades the token for a cookie that opens the page's reads and nothing
// else.
func TestAdminLivePageLogin(t *testing.T) {
	cfg := testConfig(startBackend(t, "a"))
	cfg.Admin.Token = "s3cret-token-0123456789"
	p := startRouter(t, cfg)
	admin := httptest.NewServer(p.AdminHandler())
	defer admin.Close()
	do := func(method, path, token string, cookie *http.Cookie, contentType string) *http.Response {
		return adminDo(t, admin, method, path, token, cookie, contentType)
	}

	page := do("GET", "/ui/", "", nil, "")
	require.Equal(t, http.StatusUnauthorized, page.StatusCode)
	body, _ := io.ReadAll(page.Body)
	require.Contains(t, string(body), `<form id="login">`, "the page asks for the token")
	require.Equal(t, http.StatusUnauthorized, do("GET", "/ui/state", "", nil, "").StatusCode)

	require.Equal(t, http.StatusUnauthorized, do("POST", "/ui/login", "wrong-token-0123456789", nil, "application/json").StatusCode)
	require.Equal(t, http.StatusUnsupportedMediaType, do("POST", "/ui/login", cfg.Admin.Token, nil, "text/plain").StatusCode,
		"a cross-site form cannot log a browser in")
	login := do("POST", "/ui/login", cfg.Admin.Token, nil, "application/json")
	require.Equal(t, http.StatusNoContent, login.StatusCode)
	require.Len(t, login.Cookies(), 1)
	c := login.Cookies()[0]
	require.Equal(t, "/ui/", c.Path)
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, c.SameSite)

	require.Equal(t, http.StatusOK, do("GET", "/ui/", "", c, "").StatusCode)
	state := do("GET", "/ui/state", "", c, "")
	require.Equal(t, http.StatusOK, state.StatusCode)
	require.Contains(t, state.Header.Get("Content-Type"), "json")
	for _, r := range []struct{ method, path string }{{"GET", "/backends"}, {"GET", "/metrics"}, {"POST", "/backends"}, {"POST", "/ui/login"}} {
		require.Equal(t, http.StatusUnauthorized, do(r.method, r.path, "", c, "application/json").StatusCode,
			"the cookie opens the live page only: %s %s", r.method, r.path)
	}
	forged := *c
	forged.Value = uiCookieValue("another-token-0123456789")
	require.Equal(t, http.StatusUnauthorized, do("GET", "/ui/state", "", &forged, "").StatusCode, "a cookie of another token")
}

// Rotating the admin token revokes the old one and the live-page cookies
// made from it; a short token is refused; "" removes the token.
func TestAdminTokenRotation(t *testing.T) {
	cfg := testConfig(startBackend(t, "a"))
	cfg.Admin.Token = "first-token-0123456789"
	p := startRouter(t, cfg)
	admin := httptest.NewServer(p.AdminHandler())
	defer admin.Close()
	do := func(method, path, token string, cookie *http.Cookie) *http.Response {
		return adminDo(t, admin, method, path, token, cookie, "application/json")
	}
	login := do(http.MethodPost, "/ui/login", "first-token-0123456789", nil)
	require.Equal(t, http.StatusNoContent, login.StatusCode)
	require.Len(t, login.Cookies(), 1)
	cookie := login.Cookies()[0]
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/ui/", "", cookie).StatusCode)

	require.NoError(t, p.SetAdminToken("second-token-0123456789"))
	require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/backends", "first-token-0123456789", nil).StatusCode)
	require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/ui/", "", cookie).StatusCode, "the old cookie is revoked")
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/backends", "second-token-0123456789", nil).StatusCode)

	require.ErrorIs(t, p.SetAdminToken("short"), ErrInvalidConfig)
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/backends", "second-token-0123456789", nil).StatusCode)

	require.NoError(t, p.SetAdminToken(""))
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/backends", "", nil).StatusCode)
	require.Equal(t, http.StatusNotFound, do(http.MethodPost, "/ui/login", "", nil).StatusCode, "no token: nothing to log in to")
}

// adminDo sends a request with body "{}" to the admin server, with the
// bearer token, cookie and content type when set; the body is closed when
// the test ends.
func adminDo(t *testing.T, admin *httptest.Server, method, path, token string, cookie *http.Cookie, contentType string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, admin.URL+path, strings.NewReader("{}"))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := admin.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
