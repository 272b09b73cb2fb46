package router

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptedBackend is a raw HTTP/1.1 backend on loopback: answer writes the
// response to each request by hand, and reports whether the connection
// stays open for another one. It counts connections and records the raw
// header block of the last request.
type scriptedBackend struct {
	ln     net.Listener
	answer func(req *http.Request, w *bufio.Writer) (keep bool)

	conns atomic.Int64
	mu    sync.Mutex
	last  string // the last request's line and headers, as received
	open  map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startScripted(t *testing.T, answer func(req *http.Request, w *bufio.Writer) bool) *scriptedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &scriptedBackend{ln: ln, answer: answer, open: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.stop)
	return b
}

func (b *scriptedBackend) url() string { return "http://" + b.ln.Addr().String() }

func (b *scriptedBackend) accept() {
	defer b.wg.Done()
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return // stop closed the listener
		}
		b.conns.Add(1)
		b.mu.Lock()
		b.open[conn] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(conn) // ends when the connection closes; stop closes it
	}
}

func (b *scriptedBackend) serve(conn net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.open, conn)
		b.mu.Unlock()
		conn.Close()
	}()
	br, bw := bufio.NewReader(conn), bufio.NewWriter(conn)
	for {
		var raw strings.Builder
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(&headerOnly{br: br}, &raw)))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		b.mu.Lock()
		b.last = raw.String()
		b.mu.Unlock()
		keep := b.answer(req, bw)
		if bw.Flush() != nil || !keep {
			return
		}
	}
}

func (b *scriptedBackend) lastRequest() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *scriptedBackend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// headerOnly reads a request's header block byte by byte, up to the blank
// line, so the recorded text is exactly the header (fast-path requests
// carry no body).
type headerOnly struct {
	br   *bufio.Reader
	tail [4]byte
	done bool
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if h.done || len(p) == 0 {
		return 0, io.EOF
	}
	c, err := h.br.ReadByte()
	if err != nil {
		return 0, err
	}
	copy(h.tail[:], h.tail[1:])
	h.tail[3] = c
	h.done = string(h.tail[:]) == "\r\n\r\n"
	p[0] = c
	return 1, nil
}

func scriptedConfig(b *scriptedBackend, path string) Config {
	return Config{
		Keys:     [][]byte{testKey1},
		Backends: []Backend{{Name: "s", URL: b.url() + path}},
		Health:   HealthConfig{Interval: time.Hour}, // no probes on the counted connections
	}
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestFastPathRetriesAPooledConnectionTheBackendClosed(t *testing.T) {
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString(okResponse) // keep-alive by the headers...
		return false                     // ...but closed after each response
	})
	p := startRouter(t, scriptedConfig(b, ""))
	c := newClient(t)
	for i := 0; i < 4; i++ {
		code, _, body := c.get(p.srv.URL + "/x")
		require.Equal(t, http.StatusOK, code, "request %d", i)
		require.Equal(t, "ok", body)
	}
	assert.EqualValues(t, 4, b.conns.Load(), "one connection per request, the stale ones retried")
	assert.Zero(t, p.Backends()[0].Failures, "a stale pooled connection is not the backend's failure")
}

func TestFastPathReusesConnections(t *testing.T) {
	b := startScripted(t, func(req *http.Request, w *bufio.Writer) bool {
		if req.Method == http.MethodHead {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			return true
		}
		switch req.URL.Path {
		case "/204":
			_, _ = w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
		case "/304":
			_, _ = w.WriteString("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
		default:
			_, _ = w.WriteString(okResponse)
		}
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	c := newClient(t)
	resp, err := c.hc.Head(p.srv.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 1000, resp.ContentLength)
	for path, want := range map[string]int{"/204": http.StatusNoContent, "/304": http.StatusNotModified, "/": http.StatusOK} {
		code, _, _ := c.get(p.srv.URL + path)
		assert.Equal(t, want, code, path)
	}
	assert.EqualValues(t, 1, b.conns.Load(), "one backend connection for every sequential request")
}

func TestFastPathRewritesHeadersAsReverseProxyDoes(t *testing.T) {
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
			"Proxy-Authenticate: Basic\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p := startRouter(t, scriptedConfig(b, "/base"))
	_, _, first, _ := rawRequest(t, p.srv.URL, "GET / HTTP/1.1\r\nHost: front.example\r\n\r\n")
	affinity := first.Cookies()[0]

	_, _, resp, body := rawRequest(t, p.srv.URL, "GET /x%2Fy?q=1 HTTP/1.1\r\nHost: front.example\r\n"+
		"Connection: X-Hop, keep-alive\r\nX-Hop: secret\r\nKeep-Alive: 5\r\nTe: trailers, deflate\r\n"+
		"Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n"+
		"Proxy-Authorization: Basic eA==\r\nUser-Agent: test-agent\r\n"+
		"Cookie: a=1; "+affinity.Name+"="+affinity.Value+"; b=2\r\nCookie: c=3\r\n\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok", body)
	assert.Equal(t, "yes", resp.Header.Get("X-Kept"))
	for _, h := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		assert.Empty(t, resp.Header.Get(h), h)
	}

	raw := b.lastRequest()
	lines := strings.Split(strings.TrimSuffix(raw, "\r\n\r\n"), "\r\n")
	assert.Equal(t, "GET /base/x%2Fy?q=1 HTTP/1.1", lines[0])
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(strings.Join(lines[1:], "\r\n") + "\r\n\r\n"))).ReadMIMEHeader()
	require.NoError(t, err)
	assert.Equal(t, []string{strings.TrimPrefix(b.url(), "http://")}, h["Host"])
	assert.Equal(t, []string{"trailers"}, h["Te"])
	assert.Equal(t, []string{"a=1; b=2", "c=3"}, h["Cookie"])
	assert.Equal(t, []string{"127.0.0.1"}, h["X-Forwarded-For"])
	assert.Equal(t, []string{"front.example"}, h["X-Forwarded-Host"])
	assert.Equal(t, []string{"http"}, h["X-Forwarded-Proto"])
	assert.Equal(t, []string{"test-agent"}, h["User-Agent"])
	for _, gone := range []string{"Connection", "X-Hop", "Keep-Alive", "Forwarded", "Proxy-Authorization", "Content-Length"} {
		assert.NotContains(t, h, gone)
	}
}

func TestFastPathReadsCommonResponsesAndFallsBackOnOthers(t *testing.T) {
	b := startScripted(t, func(req *http.Request, w *bufio.Writer) bool {
		switch req.URL.Path {
		case "/keep-alive": // read in place: the hop-by-hop pair dropped
			_, _ = w.WriteString("HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n" +
				"X-Multi: 1\r\nX-Multi: 2\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
		case "/lowercase": // not canonical: http.ReadResponse's job
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-lower: yes\r\n\r\nabc")
		case "/http10": // HTTP/1.0: closed after the response
			_, _ = w.WriteString("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold")
			return false
		case "/no-length": // ends when the backend closes
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
			return false
		}
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	c := newClient(t)
	for _, tc := range []struct{ path, body, header, value string }{
		{"/keep-alive", "hello", "X-Multi", "1,2"},
		{"/lowercase", "abc", "X-Lower", "yes"},
		{"/http10", "old", "", ""},
		{"/no-length", "until close", "", ""},
		{"/keep-alive", "hello", "Content-Type", "text/plain"},
	} {
		resp, err := c.hc.Get(p.srv.URL + tc.path)
		require.NoError(t, err, tc.path)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, tc.path)
		assert.Equal(t, tc.body, string(body), tc.path)
		assert.Empty(t, resp.Header.Get("Keep-Alive"), tc.path)
		if tc.header != "" {
			assert.Equal(t, tc.value, strings.Join(resp.Header.Values(tc.header), ","), tc.path)
		}
	}
	assert.EqualValues(t, 3, b.conns.Load(), "kept: /keep-alive and /lowercase; closed: /http10 and /no-length")
}

func TestFastPathPassesTrailersAndEarlyHints(t *testing.T) {
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, strconv.Itoa(code)+" "+h.Get("Link"))
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, p.srv.URL, nil)
	require.NoError(t, err)
	resp, err := newClient(t).hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(body))
	assert.Equal(t, "42", resp.Trailer.Get("X-Sum"))
	assert.Equal(t, []string{"103 </style.css>; rel=preload"}, hints)
}

func TestFastPathRefusesAnUnaskedProtocolSwitch(t *testing.T) {
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\n")
		return false
	})
	p := startRouter(t, scriptedConfig(b, ""))
	code, _, _ := newClient(t).get(p.srv.URL)
	assert.Equal(t, http.StatusBadGateway, code)
}

func TestConnPoolPrefersTheClientsLastConnection(t *testing.T) {
	p := &connPool{max: 8}
	now := time.Now()
	var cs []*backendConn
	for range 4 {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		c := &backendConn{conn: a, id: backendConnIDs.Add(1)}
		cs = append(cs, c)
		p.put(c, now)
	}
	got, reused, err := p.get(context.Background(), now, cs[1].id)
	require.NoError(t, err)
	assert.True(t, reused)
	assert.Same(t, cs[1], got, "the preferred connection, not the most recent")
	assert.Equal(t, []*backendConn{cs[0], cs[2], cs[3]}, p.idle, "the others keep their order, oldest first")

	got, _, err = p.get(context.Background(), now, cs[1].id) // taken: not idle any more
	require.NoError(t, err)
	assert.Same(t, cs[3], got, "without it, the most recent")

	cs[0].idleAt = now.Add(-surelyOpenIdle)
	got, _, err = p.get(context.Background(), now, cs[0].id)
	require.NoError(t, err)
	assert.Same(t, cs[2], got, "a preferred connection idle for long is left for the most recent")
	assert.Equal(t, []*backendConn{cs[0]}, p.idle, "and stays idle")
}

// A client connection's requests go on the backend connection its last one
// used while that is idle, even when another client's connection is the
// most recently freed.
func TestClientConnectionKeepsItsBackendConnection(t *testing.T) {
	b := startBackend(t, "a")
	p := startRouter(t, testConfig(b))
	clients := []*client{newClient(t), newClient(t)}
	hold := func(c *client) (string, error) {
		resp, err := c.hc.Get(p.srv.URL + "/hold")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	// Both requests in flight at once: two backend connections.
	first := make([]chan string, len(clients))
	for i, c := range clients {
		first[i] = make(chan string, 1)
		go func() {
			conn, err := hold(c)
			if err != nil {
				conn = "error: " + err.Error()
			}
			first[i] <- conn
		}()
	}
	<-b.arrived
	<-b.arrived
	close(b.release)
	own := []string{<-first[0], <-first[1]}
	require.NotEqual(t, own[0], own[1])
	for _, conn := range own {
		require.NotContains(t, conn, "error")
	}
	for range 3 {
		for i, c := range clients { // each finds the other's connection freed last
			conn, err := hold(c)
			require.NoError(t, err)
			<-b.arrived
			require.Equal(t, own[i], conn, "client %d's backend connection", i)
		}
	}
}

func TestConnPoolBoundsAndCloses(t *testing.T) {
	p := &connPool{max: 1}
	pipe := func() (*backendConn, net.Conn) {
		a, b := net.Pipe()
		return &backendConn{conn: a}, b
	}
	closed := func(peer net.Conn) bool {
		_ = peer.SetReadDeadline(time.Now().Add(time.Second))
		_, err := peer.Read(make([]byte, 1))
		return err == io.EOF
	}
	c1, peer1 := pipe()
	c2, peer2 := pipe()
	p.put(c1, time.Now())
	p.put(c2, time.Now()) // over max: closed
	assert.True(t, closed(peer2))
	got, reused, err := p.get(context.Background(), time.Now(), 0)
	require.NoError(t, err)
	assert.True(t, reused)
	assert.Same(t, c1, got)
	p.put(got, time.Now())

	p.prune(time.Now().Add(idleConnTimeout)) // idle too long
	assert.True(t, closed(peer1))
	assert.Empty(t, p.idle)

	c3, peer3 := pipe()
	p.put(c3, time.Now())
	p.close()
	assert.True(t, closed(peer3))
	c4, peer4 := pipe()
	p.put(c4, time.Now()) // after close: closed at once
	assert.True(t, closed(peer4))
}

func TestCookieDecodeAllocatesNothing(t *testing.T) {
	require.Equal(t, cookieEncoding.EncodedLen(cookieRawLen), cookieEncodedLen)
	sg := newSigner([][]byte{testKey2, testKey1})
	now := time.Now()
	value := newSigner([][]byte{testKey1}).encode(&ticket{sid: newSessionID(), issued: now.Unix()})
	_, st := sg.decode(value, now, time.Hour)
	require.Equal(t, cookieOldKey, st)
	if raceEnabled {
		t.Skip("allocation counts mean nothing under the race detector")
	}
	allocs := testing.AllocsPerRun(100, func() { sg.decode(value, now, time.Hour) })
	assert.Zero(t, allocs)
}

func TestFastPathRefusesAnInvalidHeaderName(t *testing.T) {
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		_, _ = w.WriteString(okResponse)
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	req, err := http.NewRequest(http.MethodGet, "http://front.example/", nil)
	require.NoError(t, err)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header["Bad Name"] = []string{"x"} // only code can build this
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusBadGateway, rec.Code)
	assert.Empty(t, b.lastRequest(), "nothing reached the backend")
}

// A backend answering with a head of bare line ends (found by
// FuzzSimpleHeadAgreesWithReadResponse: it once panicked the fast path)
// gets its client a 502, and the router goes on serving.
func TestFastPathSurvivesAHeadOfBareLineEnds(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	b := startScripted(t, func(_ *http.Request, w *bufio.Writer) bool {
		if broken.Load() {
			_, _ = w.WriteString("\n\r\n\r\n")
			return false
		}
		_, _ = w.WriteString(okResponse)
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	c := newClient(t)
	code, _, _ := c.get(p.srv.URL + "/x")
	require.Equal(t, http.StatusBadGateway, code)
	broken.Store(false)
	code, _, body := c.get(p.srv.URL + "/x")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)
}

func TestFastPathBoundsResponseHeadersNotBodies(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	b := startScripted(t, func(req *http.Request, w *bufio.Writer) bool {
		if req.URL.Path == "/huge-headers" {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\n")
			for i := 0; i < 11; i++ { // 11 MiB of headers
				_, _ = w.WriteString("X-Big: " + big + "\r\n")
			}
			_, _ = w.WriteString("Content-Length: 0\r\n\r\n")
			return false
		}
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(12*len(big)) + "\r\n\r\n")
		for i := 0; i < 12; i++ { // a 12 MiB body is fine
			_, _ = w.WriteString(big)
		}
		return true
	})
	p := startRouter(t, scriptedConfig(b, ""))
	c := newClient(t)
	code, _, _ := c.get(p.srv.URL + "/huge-headers")
	assert.Equal(t, http.StatusBadGateway, code)
	code, _, body := c.get(p.srv.URL + "/big-body")
	assert.Equal(t, http.StatusOK, code)
	assert.Len(t, body, 12*len(big))
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func TestBackendConnSendsHeldBytesWithItsFirstRead(t *testing.T) {
	client, peer := tcpPair(t)
	c := newBackendConn(client)
	require.NotNil(t, c.raw)
	now := time.Now()
	c.idleAt = now
	_, _ = c.bw.WriteString("ping")
	require.NoError(t, c.flushHeld(now))
	assert.Equal(t, "ping", string(c.held), "held until the read")

	go func() {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(peer, buf); err == nil && string(buf) == "ping" {
			_, _ = peer.Write([]byte("pong"))
		}
	}()
	got := make([]byte, 4)
	_, err := io.ReadFull(c.br, got)
	require.NoError(t, err)
	assert.Equal(t, "pong", string(got))
	assert.Empty(t, c.held)
	assert.EqualValues(t, 4, c.read)

	_ = peer.Close()
	_, _ = c.bw.WriteString("again")
	require.NoError(t, c.flushHeld(now))
	_, err = c.br.ReadByte()
	require.Error(t, err, "a closed peer ends the read, with no hang")
}

func TestBackendConnHeldBytesGoOutWhenTheSocketIsFull(t *testing.T) {
	client, peer := tcpPair(t)
	require.NoError(t, client.(*net.TCPConn).SetWriteBuffer(4096))
	require.NoError(t, peer.(*net.TCPConn).SetReadBuffer(4096))
	// Fill the way to the peer, which does not read yet.
	filled := 0
	chunk := make([]byte, 4096)
	for {
		_ = client.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := client.Write(chunk)
		filled += n
		if err != nil {
			require.True(t, isTimeout(err), "%v", err)
			break
		}
	}
	_ = client.SetWriteDeadline(time.Time{})

	c := newBackendConn(client)
	now := time.Now()
	c.idleAt = now
	held := strings.Repeat("h", 3000)
	_, _ = c.bw.WriteString(held)
	require.NoError(t, c.flushHeld(now))

	drained := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, peer, int64(filled+len(held)))
		if err == nil {
			_, err = peer.Write([]byte("done"))
		}
		drained <- err
	}()
	got := make([]byte, 4)
	_, err := io.ReadFull(c.br, got)
	require.NoError(t, err)
	assert.Equal(t, "done", string(got))
	require.NoError(t, <-drained, "the peer got every byte")
}
