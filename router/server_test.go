package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests drive Server over raw loopback connections, since most of
// what it promises is about the bytes on the wire. Where Server promises to
// behave as net/http does, the same request is also sent to a plain
// http.Server (httptest) running the same handler, and the answers are
// compared.

// ---------------------------------------------------------------------------
// Helpers

// srvLive is a Server with its own http.Server settings, serving on
// loopback until the test ends.
type srvLive struct {
	*Server
	addr   string
	served chan error
	once   sync.Once
	err    error
}

// srvStart serves hs (whose Handler must be set) with a Server on loopback
// and shuts it down when the test ends (after the cleanups registered
// later, such as closing the test's connections, ran).
func srvStart(t *testing.T, hs *http.Server) *srvLive {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return srvStartOn(t, hs, ln)
}

// srvStartOn is srvStart on a listener of the caller's.
func srvStartOn(t *testing.T, hs *http.Server, ln net.Listener) *srvLive {
	t.Helper()
	s, err := NewServer(hs)
	require.NoError(t, err)
	l := &srvLive{Server: s, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { l.served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
			t.Errorf("Server.Shutdown: %v", err)
		}
		require.ErrorIs(t, l.serveErr(), http.ErrServerClosed)
		_ = ln.Close() // in case Serve did not (see TestServerServeAfterShutdown)
	})
	return l
}

// serveErr waits for Serve to return and returns its error.
func (l *srvLive) serveErr() error {
	l.once.Do(func() {
		select {
		case l.err = <-l.served:
		case <-time.After(5 * time.Second):
			l.err = errors.New("Serve did not return within 5s")
		}
	})
	return l.err
}

// srvServe is srvStart with a default http.Server for h.
func srvServe(t *testing.T, h http.Handler) *srvLive {
	t.Helper()
	return srvStart(t, &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)})
}

// srvReference serves h with a plain net/http server: what Server should
// look like from the outside.
func srvReference(t *testing.T, h http.Handler) string {
	t.Helper()
	ref := httptest.NewUnstartedServer(h)
	ref.Config.ErrorLog = log.New(io.Discard, "", 0)
	ref.Start()
	t.Cleanup(ref.Close)
	return ref.Listener.Addr().String()
}

// srvDial opens a connection closed when the test ends.
func srvDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn, bufio.NewReader(conn)
}

func srvSend(t *testing.T, conn net.Conn, raw string) {
	t.Helper()
	_, err := io.WriteString(conn, raw)
	require.NoError(t, err)
}

// srvReadHead reads one response head (of a request with method method)
// with a deadline, so that a broken server fails the test instead of
// hanging it.
func srvReadHead(t *testing.T, conn net.Conn, br *bufio.Reader, method string) *http.Response {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	return resp
}

// srvRead reads one whole response and its body.
func srvRead(t *testing.T, conn net.Conn, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp := srvReadHead(t, conn, br, method)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp, string(body)
}

// srvGet sends one GET for target on a new connection and reads the
// response.
func srvGet(t *testing.T, addr, target string) (*http.Response, string) {
	t.Helper()
	conn, br := srvDial(t, addr)
	srvSend(t, conn, "GET "+target+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
	return srvRead(t, conn, br, http.MethodGet)
}

// srvRequireClosed requires that the server closes conn (with a FIN, or a
// reset when it left bytes unread) within 5 s, and returns the bytes that
// came before the end.
func srvRequireClosed(t *testing.T, conn net.Conn, br *bufio.Reader) string {
	t.Helper()
	return srvRequireClosedWithin(t, conn, br, 5*time.Second)
}

func srvRequireClosedWithin(t *testing.T, conn net.Conn, br *bufio.Reader, d time.Duration) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(d)))
	rest, err := io.ReadAll(br)
	if err != nil {
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the connection within %v (read %q)", d, rest)
		require.ErrorIs(t, err, syscall.ECONNRESET)
	}
	return string(rest)
}

// srvWait waits for a value on ch, failing the test after 5 s.
func srvWait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		require.FailNow(t, "timed out waiting: "+what)
		panic("unreachable")
	}
}

// srvProbe answers with the method, the target and the body it read, and
// says in X-Hijackable whether its ResponseWriter is net/http's (Server's
// own does not implement http.Hijacker).
func srvProbe(w http.ResponseWriter, r *http.Request) {
	_, hijackable := w.(http.Hijacker)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := fmt.Sprintf("%s %s %s", r.Method, r.URL.RequestURI(), body)
	w.Header().Set("X-Hijackable", strconv.FormatBool(hijackable))
	w.Header().Set("Content-Type", "text/plain")
	// An explicit length: whether Server keeps the connection after a
	// body it measures itself is TestServerKeepsAliveAfterAShortBody's.
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	io.WriteString(w, out)
}

// srvWriteLen writes body with its Content-Length.
func srvWriteLen(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

// srvConns returns the connections the Server still owns.
func srvConns(s *Server) []*frontConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*frontConn
	for c := range s.conn {
		cs = append(cs, c)
	}
	return cs
}

// srvWaitConn waits until the Server owns exactly one connection and ok
// holds for it, and returns it.
func srvWaitConn(t *testing.T, s *Server, ok func(*frontConn) bool, what string) *frontConn {
	t.Helper()
	var c *frontConn
	require.Eventually(t, func() bool {
		cs := srvConns(s)
		if len(cs) != 1 || !ok(cs[0]) {
			return false
		}
		c = cs[0]
		return true
	}, 5*time.Second, 5*time.Millisecond, what)
	return c
}

// srvWaitState waits until the Server's one connection is in state st.
func srvWaitState(t *testing.T, s *Server, st int32) *frontConn {
	t.Helper()
	return srvWaitConn(t, s, func(c *frontConn) bool { return c.state.Load() == st },
		fmt.Sprintf("connection state %d", st))
}

// srvWaitPeeked waits until the janitor looked n times, while a request
// ran, at whether its client left: the request ran for at least watchAfter.
func srvWaitPeeked(t *testing.T, s *Server, n int64) *frontConn {
	t.Helper()
	return srvWaitConn(t, s, func(c *frontConn) bool {
		return c.state.Load() == stActive && c.peeks.Load() >= n
	}, fmt.Sprintf("%d peeks", n))
}

// srvLogBuffer is a log destination safe to read while a server writes.
type srvLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *srvLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *srvLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ---------------------------------------------------------------------------
// Construction

func TestServerNewServerNeedsAHandler(t *testing.T) {
	s, err := NewServer(nil)
	require.Error(t, err)
	require.Nil(t, s)

	s, err = NewServer(&http.Server{})
	require.Error(t, err)
	require.Nil(t, s)

	s, err = NewServer(&http.Server{Handler: http.NotFoundHandler()})
	require.NoError(t, err)
	require.NotNil(t, s)
	require.NoError(t, s.Shutdown(context.Background()), "a Server never served shuts down at once")
}

// ---------------------------------------------------------------------------
// Who serves what

func TestServerServesGETItselfAndHandsOffOthers(t *testing.T) {
	f := serve(t, http.HandlerFunc(srvProbe))
	addr := strings.TrimPrefix(f.URL, "http://")

	t.Run("GET, then POST on the same connection", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		for _, path := range []string{"/a", "/b?q=1"} {
			srvSend(t, conn, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "false", resp.Header.Get("X-Hijackable"), "GET %s is Server's", path)
			require.Equal(t, "GET "+path+" ", body)
			require.False(t, resp.Close)
		}

		srvSend(t, conn, "POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello")
		resp, body := srvRead(t, conn, br, http.MethodPost)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"), "a POST is net/http's")
		require.Equal(t, "POST /p hello", body)
		require.False(t, resp.Close)

		for _, path := range []string{"/c", "/d"} {
			srvSend(t, conn, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "true", resp.Header.Get("X-Hijackable"), "after a handoff the connection stays net/http's")
			require.Equal(t, "GET "+path+" ", body)
		}
	})

	t.Run("a POST first, with a body larger than the read buffer", func(t *testing.T) {
		payload := strings.Repeat("0123456789abcdef", 1024) // 16 KiB
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nContent-Length: "+
			strconv.Itoa(len(payload))+"\r\n\r\n"+payload)
		resp, body := srvRead(t, conn, br, http.MethodPost)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
		require.Equal(t, "POST /upload "+payload, body, "the body arrives intact")

		srvSend(t, conn, "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
		require.Equal(t, "GET /next ", body)
	})

	t.Run("a chunked POST", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "POST /chunked HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		resp, body := srvRead(t, conn, br, http.MethodPost)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
		require.Equal(t, "POST /chunked hello world", body)
	})

	t.Run("with net/http's client", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		resp, err := hc.Get(f.URL + "/via-client")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, "GET /via-client ", string(body))
		require.Equal(t, "false", resp.Header.Get("X-Hijackable"))

		resp, err = hc.Post(f.URL+"/form", "text/plain", strings.NewReader("data"))
		require.NoError(t, err)
		body, err = io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, "POST /form data", string(body))
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
	})
}

// The requests Server does not serve itself, even though they are GETs.
func TestServerHandsOffUnusualGETs(t *testing.T) {
	addr := srvServe(t, http.HandlerFunc(srvProbe)).addr
	for name, raw := range map[string]string{
		"HTTP/1.0":         "GET /x HTTP/1.0\r\nHost: example.com\r\n\r\n",
		"absolute form":    "GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"Upgrade":          "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
		"Expect":           "GET /x HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n\r\n",
		"Content-Length 0": "GET /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
		"Connection token": "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: X-Foo\r\n\r\n",
		"TE header":        "GET /x HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, br := srvDial(t, addr)
			srvSend(t, conn, raw)
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
			require.True(t, strings.HasPrefix(body, "GET "), body)
		})
	}
}

// ---------------------------------------------------------------------------
// Pipelining

func TestServerPipelining(t *testing.T) {
	addr := srvServe(t, http.HandlerFunc(srvProbe)).addr

	t.Run("GETs in one write", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n"+
			"GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n"+
			"GET /3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
		for _, path := range []string{"/1", "/2", "/3"} {
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "GET "+path+" ", body, "responses come in order")
			require.Equal(t, "false", resp.Header.Get("X-Hijackable"))
		}
	})

	t.Run("a GET then a POST in one write", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n"+
			"POST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nbody"+
			"GET /3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "GET /1 ", body)
		require.Equal(t, "false", resp.Header.Get("X-Hijackable"))
		resp, body = srvRead(t, conn, br, http.MethodPost)
		require.Equal(t, "POST /2 body", body, "the bytes Server read are handed off")
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
		resp, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "GET /3 ", body)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
	})

	t.Run("a head split across writes", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		head := "GET /split HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n"
		for _, part := range []string{head[:3], head[3:20], head[20 : len(head)-1], head[len(head)-1:]} {
			srvSend(t, conn, part)
		}
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "GET /split ", body)
		require.Equal(t, "false", resp.Header.Get("X-Hijackable"))
	})
}

// wrappedListener hands out connections of a type Server does not read
// through a descriptor.
type wrappedListener struct{ net.Listener }

type wrappedConn struct{ net.Conn }

func (l wrappedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrappedConn{c}, nil
}

// A request that arrives while its predecessor's handler runs (after
// Server read that one, before it answered) is served, and so is a head
// whose second part arrives after Server waited for it: on a connection
// read through its descriptor and on one read through net.Conn.
func TestServerReadsWhatArrivesWhileItServes(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrapped), func(t *testing.T) {
			testServerReadsWhatArrivesWhileItServes(t, wrapped)
		})
	}
}

func testServerReadsWhatArrivesWhileItServes(t *testing.T, wrapped bool) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		srvWriteLen(w, r.URL.Path)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if wrapped {
		ln = wrappedListener{ln}
	}
	l := srvStartOn(t, &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}, ln)
	conn, br := srvDial(t, l.addr)
	for i := 0; i < 3; i++ {
		srvSend(t, conn, "GET /hold HTTP/1.1\r\nHost: example.com\r\n\r\n")
		srvWait(t, entered, "the handler")
		srvSend(t, conn, "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")
		release <- struct{}{}
		_, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/hold", body)
		_, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/next", body, "round %d", i)
	}
	c := srvWaitState(t, l.Server, stIdle)
	require.Equal(t, wrapped, c.raw == nil, "read through its descriptor unless wrapped")

	head := "GET /split HTTP/1.1\r\nHost: example.com\r\n\r\n"
	srvSend(t, conn, head[:20])
	srvWaitState(t, l.Server, stHead)
	srvSend(t, conn, head[20:])
	_, body := srvRead(t, conn, br, http.MethodGet)
	require.Equal(t, "/split", body)
}

// ---------------------------------------------------------------------------
// The request a handler sees

func TestServerRequestMatchesNetHTTP(t *testing.T) {
	dump := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var keys []string
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		fmt.Fprintf(&b, "method=%q uri=%q url=%q path=%q rawpath=%q query=%q host=%q proto=%q %d.%d\n",
			r.Method, r.RequestURI, r.URL.String(), r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host, r.Proto, r.ProtoMajor, r.ProtoMinor)
		fmt.Fprintf(&b, "contentlength=%d te=%q close=%v tls=%v trailer=%v body=%q err=%v ctxerr=%v\n",
			r.ContentLength, r.TransferEncoding, r.Close, r.TLS != nil, r.Trailer, body, err, r.Context().Err())
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(&b, "remote=%s %v\n", host, err)
		for _, k := range keys {
			if k == "Host" {
				continue // see TestServerRequestHeaderHasNoHost
			}
			fmt.Fprintf(&b, "%s=%q\n", k, r.Header[k])
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, b.String())
	})
	addr := srvServe(t, dump).addr
	ref := srvReference(t, dump)
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET /p/a%20th/x?q=1&r=%2F HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: test\r\n" +
			"Accept: a\r\naccept: b\r\nX-Spaced:   v  a l \t\r\nX-Empty:\r\nConnection: keep-alive\r\nCookie: a=1; b=2\r\n\r\n",
		"GET /ipv6 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET //double//slash/./x/../y?a=1&a=2;b HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET /utf8/\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: example.com\r\nX-Obs-Text: caf\xc3\xa9\r\n\r\n",
		"GET /close HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, close\r\n\r\n",
	} {
		get := func(addr string) string {
			conn, br := srvDial(t, addr)
			srvSend(t, conn, raw)
			_, body := srvRead(t, conn, br, http.MethodGet)
			return body
		}
		require.Equal(t, get(ref), get(addr), "request %q", raw)
	}
}

// net/http promises (see http.Request.Header) that for incoming requests
// "the Host header is promoted to the Request.Host field and removed from
// the Header map". (Server's parse put Host in the map before commit
// 80fbc4b; this test found it.)
func TestServerRequestHeaderHasNoHost(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q %q", r.Host, r.Header["Host"])
	})
	ref := srvReference(t, h)
	_, want := srvGet(t, ref, "/")
	require.Equal(t, `"example.com" []`, want, "net/http")
	addr := srvServe(t, h).addr
	_, got := srvGet(t, addr, "/")
	require.Equal(t, want, got, "Server")
}

// ---------------------------------------------------------------------------
// Responses

func TestServerHEAD(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/cl" {
			w.Header().Set("Content-Length", "11")
		}
		if r.URL.Path == "/big" {
			io.WriteString(w, strings.Repeat("x", 5000))
			return
		}
		io.WriteString(w, "hello world")
	})
	addr := srvServe(t, h).addr
	conn, br := srvDial(t, addr)
	for _, path := range []string{"/cl", "/nocl", "/big"} {
		srvSend(t, conn, "HEAD "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp := srvReadHead(t, conn, br, http.MethodHead)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Nil(t, resp.TransferEncoding, "HEAD %s", path)
		if path == "/cl" {
			require.Equal(t, "11", resp.Header.Get("Content-Length"), "the handler's Content-Length is passed on")
			require.EqualValues(t, 11, resp.ContentLength)
		}
		require.NoError(t, resp.Body.Close())
		// The very next bytes on the wire are the next response: a HEAD
		// response has no body.
		srvSend(t, conn, "GET /cl HTTP/1.1\r\nHost: example.com\r\n\r\n") // with a Content-Length, to keep the connection
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		line, err := br.Peek(len("HTTP/1.1 200 OK\r\n"))
		require.NoError(t, err)
		require.Equal(t, "HTTP/1.1 200 OK\r\n", string(line), "after HEAD %s", path)
		_, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "hello world", body)
	}
}

func TestServerBodyFraming(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/size/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		w.Write(bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n])
	})
	mux.HandleFunc("/many", func(w http.ResponseWriter, r *http.Request) {
		for i := range 1000 {
			fmt.Fprintf(w, "%03d-", i)
		}
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "there")
	})
	mux.HandleFunc("/controller-flush", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hi ")
		if err := http.NewResponseController(w).Flush(); err != nil {
			panic(err)
		}
		io.WriteString(w, "there")
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Count")
		io.WriteString(w, "hello")
		w.Header().Set("X-Sum", "abc")
		w.Header().Set("X-Count", "5")
	})
	mux.HandleFunc("/prefix-flushed", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Sum", "abc")
	})
	mux.HandleFunc("/prefix-long", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("y", 3000))
		w.Header().Set(http.TrailerPrefix+"X-Sum", "abc")
	})
	addr := srvServe(t, mux).addr

	t.Run("a short body gets a Content-Length", func(t *testing.T) {
		resp, body := srvGet(t, addr, "/short")
		require.Equal(t, "hello", body)
		require.EqualValues(t, 5, resp.ContentLength)
		require.Nil(t, resp.TransferEncoding)
	})
	t.Run("an empty body gets Content-Length 0", func(t *testing.T) {
		resp, body := srvGet(t, addr, "/size/0")
		require.Empty(t, body)
		require.Equal(t, "0", resp.Header.Get("Content-Length"))
		require.Nil(t, resp.TransferEncoding)
	})
	t.Run("2048 bytes are held back", func(t *testing.T) {
		resp, body := srvGet(t, addr, "/size/2048")
		require.Len(t, body, 2048)
		require.EqualValues(t, 2048, resp.ContentLength)
		require.Nil(t, resp.TransferEncoding)
	})
	for _, n := range []int{2049, 100_000} {
		t.Run(fmt.Sprintf("%d bytes are chunked", n), func(t *testing.T) {
			resp, body := srvGet(t, addr, fmt.Sprintf("/size/%d", n))
			require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
			require.EqualValues(t, -1, resp.ContentLength)
			require.Equal(t, string(bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n]), body)
		})
	}
	t.Run("many small writes past 2048 bytes are chunked", func(t *testing.T) {
		resp, body := srvGet(t, addr, "/many")
		require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
		var want strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&want, "%03d-", i)
		}
		require.Equal(t, want.String(), body)
	})
	for _, path := range []string{"/flush", "/controller-flush"} {
		t.Run("a flushed body is chunked "+path, func(t *testing.T) {
			resp, body := srvGet(t, addr, path)
			require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
			require.Equal(t, "hi there", body)
		})
	}
	t.Run("announced trailers", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "GET /trailer HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "hello", body)
		require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
		require.Equal(t, "abc", resp.Trailer.Get("X-Sum"))
		require.Equal(t, "5", resp.Trailer.Get("X-Count"))
		require.Empty(t, resp.Header.Get("X-Sum"), "set after the head went out: a trailer only")
		// The connection is still in step.
		srvSend(t, conn, "GET /short HTTP/1.1\r\nHost: example.com\r\n\r\n")
		_, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "hello", body)
	})
	for _, path := range []string{"/prefix-flushed", "/prefix-long"} {
		t.Run("TrailerPrefix trailers "+path, func(t *testing.T) {
			resp, body := srvGet(t, addr, path)
			require.NotEmpty(t, body)
			require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
			require.Equal(t, "abc", resp.Trailer.Get("X-Sum"))
		})
	}
}

func TestServerFlushStreams(t *testing.T) {
	next := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			if i > 0 {
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "event %d\n", i)
			w.(http.Flusher).Flush()
		}
	})
	addr := srvServe(t, h).addr
	conn, br := srvDial(t, addr)
	srvSend(t, conn, "GET /events HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp := srvReadHead(t, conn, br, http.MethodGet)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	lines := bufio.NewReader(resp.Body)
	for i := range 3 {
		if i > 0 {
			next <- struct{}{} // the handler waits for the client to see each event
		}
		line, err := lines.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("event %d\n", i), line)
	}
	rest, err := io.ReadAll(lines)
	require.NoError(t, err)
	require.Empty(t, rest)
}

func TestServerShortBodyClosesTheConnection(t *testing.T) {
	wrote := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		switch r.URL.Path {
		case "/short":
			w.Header().Set("Content-Length", "10")
			_, err := io.WriteString(w, "12345")
			wrote <- err
		case "/long":
			w.Header().Set("Content-Length", "5")
			_, err := io.WriteString(w, "1234567890")
			wrote <- err
		}
	})
	addr := srvServe(t, h).addr

	t.Run("5 of 10 bytes", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "GET /short HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp := srvReadHead(t, conn, br, http.MethodGet)
		require.NoError(t, srvWait(t, wrote, "the handler's write"))
		require.EqualValues(t, 10, resp.ContentLength)
		body, err := io.ReadAll(resp.Body) // under srvReadHead's deadline
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the connection ends instead of hanging")
		require.Equal(t, "12345", string(body))
		require.Empty(t, srvRequireClosed(t, conn, br))
	})

	t.Run("10 bytes for 5", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "GET /long HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp := srvReadHead(t, conn, br, http.MethodGet)
		require.Error(t, srvWait(t, wrote, "the handler's write"), "writing past the Content-Length fails")
		require.EqualValues(t, 5, resp.ContentLength)
		body, err := io.ReadAll(resp.Body)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		require.Empty(t, body, "nothing of the too long write goes out")
		require.Empty(t, srvRequireClosed(t, conn, br))
	})
}

func TestServerConnectionClose(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/handler-closes" {
			w.Header().Set("Connection", "close")
		}
		if r.URL.Path == "/keep-alive" {
			w.Header().Set("Connection", "keep-alive") // not Server's to pass on
		}
		srvWriteLen(w, "ok")
	})
	addr := srvServe(t, h).addr

	for name, raw := range map[string]string{
		"client":             "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
		"client, mixed case": "GET / HTTP/1.1\r\nHost: example.com\r\nconnection: Keep-Alive, CLOSE\r\n\r\n",
		"handler":            "GET /handler-closes HTTP/1.1\r\nHost: example.com\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn, br := srvDial(t, addr)
			// A second request after it must not be answered.
			srvSend(t, conn, raw+"GET /never HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "ok", body)
			require.True(t, resp.Close, "the response says Connection: close")
			require.Empty(t, srvRequireClosed(t, conn, br), "nothing after the response")
		})
	}

	t.Run("keep-alive", func(t *testing.T) {
		conn, br := srvDial(t, addr)
		for range 2 {
			srvSend(t, conn, "GET /keep-alive HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "ok", body)
			require.False(t, resp.Close)
			require.Empty(t, resp.Header["Connection"])
		}
	})
}

// A response whose body Server measured itself (less than 2048 bytes, no
// Content-Length from the handler: the commonest response there is) keeps
// the connection alive, as one with the handler's Content-Length does.
// (Before commit 80fbc4b, finish did not count the held body off
// r.remaining and so closed the connection after every such response,
// without saying Connection: close; this test found it.)
func TestServerKeepsAliveAfterAShortBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/with-length" {
			srvWriteLen(w, "hello")
			return
		}
		io.WriteString(w, "hello")
	})
	l := srvServe(t, h)
	for _, path := range []string{"/with-length", "/measured"} {
		t.Run(path, func(t *testing.T) {
			conn, br := srvDial(t, l.addr)
			srvSend(t, conn, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "hello", body)
			require.EqualValues(t, 5, resp.ContentLength)
			require.False(t, resp.Close, "the response does not say Connection: close")
			// The server either waits for the next request or drops the connection.
			var state int32
			require.Eventually(t, func() bool {
				cs := srvConns(l.Server)
				if len(cs) == 0 {
					state = stClosed
					return true
				}
				state = cs[0].state.Load()
				return state == stIdle
			}, 5*time.Second, time.Millisecond)
			names := map[int32]string{stIdle: "idle", stClosed: "closed"}
			require.Equal(t, "idle", names[state], "the Server closed the connection after %s", path)
			srvSend(t, conn, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			_, body = srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "hello", body)
			require.NoError(t, conn.Close())
			require.Eventually(t, func() bool { return len(srvConns(l.Server)) == 0 }, 5*time.Second, time.Millisecond)
		})
	}
	t.Run("pipelined", func(t *testing.T) {
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, strings.Repeat("GET /measured HTTP/1.1\r\nHost: example.com\r\n\r\n", 3))
		for range 3 {
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "hello", body)
			require.False(t, resp.Close)
		}
	})
}

func TestServerInformationalResponses(t *testing.T) {
	seen := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		select { // the 103 goes out at once: the client reads it before the 200 exists
		case <-seen:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "final")
	})
	addr := srvServe(t, h).addr
	conn, br := srvDial(t, addr)
	srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	first, err := br.Peek(len("HTTP/1.1 103 Early Hints\r\n"))
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 103 Early Hints\r\n", string(first), "the 103 comes first on the wire")
	early := srvReadHead(t, conn, br, http.MethodGet)
	require.Equal(t, http.StatusEarlyHints, early.StatusCode)
	require.Equal(t, "</style.css>; rel=preload; as=style", early.Header.Get("Link"))
	close(seen)

	resp, body := srvRead(t, conn, br, http.MethodGet)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "final", body)
	require.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
	require.False(t, resp.Close)
}

func TestServerDateHeader(t *testing.T) {
	const own = "Tue, 10 Nov 2009 23:00:00 GMT"
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/own":
			w.Header().Set("Date", own)
		case "/none":
			w.Header()["Date"] = nil // as net/http: a nil value suppresses it
		case "/stream":
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "ok")
	})
	addr := srvServe(t, h).addr

	for _, path := range []string{"/", "/stream"} {
		resp, _ := srvGet(t, addr, path)
		require.Len(t, resp.Header["Date"], 1, path)
		date, err := http.ParseTime(resp.Header.Get("Date"))
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), date, 5*time.Second)
		require.True(t, strings.HasSuffix(resp.Header.Get("Date"), " GMT"))
	}

	resp, _ := srvGet(t, addr, "/own")
	require.Equal(t, []string{own}, resp.Header["Date"], "the handler's Date is kept, alone")

	resp, _ = srvGet(t, addr, "/none")
	require.Empty(t, resp.Header["Date"])
}

func TestServerNoBodyStatuses(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(code)
		_, err := io.WriteString(w, "not allowed")
		if code != http.StatusOK && !errors.Is(err, http.ErrBodyNotAllowed) {
			panic(fmt.Sprintf("write for %d: %v", code, err))
		}
	})
	addr := srvServe(t, h).addr
	conn, br := srvDial(t, addr)
	for _, code := range []int{http.StatusNoContent, http.StatusNotModified} {
		srvSend(t, conn, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n", code))
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, code, resp.StatusCode)
		require.Empty(t, body)
		require.Nil(t, resp.TransferEncoding)
		require.Empty(t, resp.Header["Content-Length"])
		require.Equal(t, `"x"`, resp.Header.Get("ETag"))
		require.False(t, resp.Close)
	}
	// In step: the connection still serves.
	srvSend(t, conn, "GET /200 HTTP/1.1\r\nHost: example.com\r\n\r\n")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK\r\n", line)
}

// Server's responses agree with net/http's for the same handler, but for
// the Date's value.
func TestServerResponsesMatchNetHTTP(t *testing.T) {
	mux := http.NewServeMux()
	text := func(w http.ResponseWriter) { w.Header().Set("Content-Type", "text/plain; charset=utf-8") }
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) { text(w); io.WriteString(w, "hello") })
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/404", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	mux.HandleFunc("/299", func(w http.ResponseWriter, r *http.Request) { text(w); w.WriteHeader(299); io.WriteString(w, "odd") })
	mux.HandleFunc("/2048", func(w http.ResponseWriter, r *http.Request) { text(w); io.WriteString(w, strings.Repeat("a", 2048)) })
	mux.HandleFunc("/2049", func(w http.ResponseWriter, r *http.Request) { text(w); io.WriteString(w, strings.Repeat("a", 2049)) })
	mux.HandleFunc("/cl", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		w.Header().Set("Content-Length", "3000")
		io.WriteString(w, strings.Repeat("b", 3000))
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "1")
	})
	mux.HandleFunc("/prefix-short", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		io.WriteString(w, "short")
		w.Header().Set(http.TrailerPrefix+"X-Sum", "1") // too late, for net/http too
	})
	mux.HandleFunc("/prefix-flushed", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		io.WriteString(w, "flushed")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Sum", "1")
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		w.Header()["X-Evil"] = []string{"a\r\nInjected: yes"} // no response splitting
		w.Header()["Bad Name"] = []string{"dropped"}
		w.Header().Add("X-Multi", "1")
		w.Header().Add("X-Multi", "2")
		w.Header().Set("Set-Cookie", "a=b")
		io.WriteString(w, "h")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/short", http.StatusFound)
	})
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	})
	mux.HandleFunc("/serve-content", func(w http.ResponseWriter, r *http.Request) {
		text(w)
		http.ServeContent(w, r, "x.txt", time.Unix(1_600_000_000, 0), strings.NewReader("0123456789"))
	})
	addr := srvServe(t, mux).addr
	ref := srvReference(t, mux)

	type view struct {
		Status           string
		Header           http.Header
		ContentLength    int64
		TransferEncoding []string
		Body             string
		Trailer          http.Header
		Close            bool
	}
	get := func(addr, raw string) view {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, raw)
		method, _, _ := strings.Cut(raw, " ")
		resp, body := srvRead(t, conn, br, method)
		require.Len(t, resp.Header["Date"], 1)
		resp.Header.Del("Date")
		return view{resp.Status, resp.Header, resp.ContentLength, resp.TransferEncoding, body, resp.Trailer, resp.Close}
	}
	for _, raw := range []string{
		"GET /short HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /short HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /404 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /299 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /2048 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /2049 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /cl HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /flush HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /trailer HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /prefix-short HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /prefix-flushed HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /redirect HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /error HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /serve-content HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /serve-content HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n",
		"GET /serve-content HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: " + time.Unix(1_600_000_000, 0).UTC().Format(http.TimeFormat) + "\r\n\r\n",
		"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /cl HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /flush HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /serve-content HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		require.Equal(t, get(ref, raw), get(addr, raw), "%q", raw)
	}
}

// A HEAD handler that writes a short body without setting Content-Length
// gets the length of what it wrote, as from net/http (the GET would get it:
// RFC 9110 section 9.3.2, "the same header fields").
func TestServerHEADContentLengthOfAShortBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello world")
	})
	head := func(addr string) http.Header {
		conn, br := srvDial(t, addr)
		srvSend(t, conn, "HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, body := srvRead(t, conn, br, http.MethodHead)
		require.Empty(t, body)
		return resp.Header
	}
	require.Equal(t, "11", head(srvReference(t, h)).Get("Content-Length"), "net/http")
	require.Equal(t, "11", head(srvServe(t, h).addr).Get("Content-Length"), "Server")
}

// ---------------------------------------------------------------------------
// Timeouts and clients that leave

func TestServerIdleTimeout(t *testing.T) {
	l := srvStart(t, &http.Server{Handler: http.HandlerFunc(srvProbe), IdleTimeout: 500 * time.Millisecond})

	t.Run("Server's connection", func(t *testing.T) {
		t.Parallel()
		conn, br := srvDial(t, l.addr)
		for range 2 { // kept alive between requests sent at once
			srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, _ := srvRead(t, conn, br, http.MethodGet)
			require.False(t, resp.Close)
			require.Equal(t, "false", resp.Header.Get("X-Hijackable"))
		}
		require.Empty(t, srvRequireClosed(t, conn, br), "an idle connection is closed")
	})

	t.Run("a connection that never sends", func(t *testing.T) {
		t.Parallel()
		conn, br := srvDial(t, l.addr)
		require.Empty(t, srvRequireClosed(t, conn, br))
	})

	t.Run("a handed-off connection", func(t *testing.T) {
		t.Parallel()
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx")
		resp, _ := srvRead(t, conn, br, http.MethodPost)
		require.Equal(t, "true", resp.Header.Get("X-Hijackable"))
		require.Empty(t, srvRequireClosed(t, conn, br), "net/http applies IdleTimeout")
	})

	t.Run("a running request is not idle", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-release
			srvWriteLen(w, "ok")
		})
		l := srvStart(t, &http.Server{Handler: h, IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond})
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		srvWaitPeeked(t, l.Server, 1) // running for 500 ms, longer than both timeouts
		close(release)
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "ok", body)
		require.False(t, resp.Close)
	})

	t.Run("ReadTimeout stands in for IdleTimeout", func(t *testing.T) {
		t.Parallel()
		l := srvStart(t, &http.Server{Handler: http.HandlerFunc(srvProbe), ReadTimeout: 500 * time.Millisecond})
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		srvRead(t, conn, br, http.MethodGet)
		require.Empty(t, srvRequireClosed(t, conn, br))
	})
}

func TestServerReadHeaderTimeout(t *testing.T) {
	l := srvStart(t, &http.Server{Handler: http.HandlerFunc(srvProbe), ReadHeaderTimeout: 300 * time.Millisecond})

	t.Run("half a head", func(t *testing.T) {
		t.Parallel()
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: exa")
		require.Empty(t, srvRequireClosed(t, conn, br), "closed without an answer, as net/http does")
	})

	t.Run("half a head after a request", func(t *testing.T) {
		t.Parallel()
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\nGET / HTTP/1.1\r\n")
		resp, _ := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Empty(t, srvRequireClosed(t, conn, br))
	})

	t.Run("no idle timeout without IdleTimeout", func(t *testing.T) {
		t.Parallel()
		// A handler running longer than ReadHeaderTimeout is not cut,
		// and the connection stays open after it (there is no idle timeout).
		release := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			srvWriteLen(w, "ok")
		})
		l := srvStart(t, &http.Server{Handler: h, ReadHeaderTimeout: 300 * time.Millisecond})
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET /slow HTTP/1.1\r\nHost: example.com\r\n\r\n")
		srvWaitPeeked(t, l.Server, 1) // it ran for at least 500 ms
		close(release)
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "ok", body)
		require.False(t, resp.Close)
		srvWaitState(t, l.Server, stIdle)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		_, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "ok", body)
	})
}

// With ReadHeaderTimeout set and no IdleTimeout or ReadTimeout, a client
// that connects and never sends a byte is closed after ReadHeaderTimeout,
// as by net/http, which applies it to the first request from the moment
// it accepts the connection.
func TestServerReadHeaderTimeoutClosesASilentConnection(t *testing.T) {
	hs := func() *http.Server {
		return &http.Server{Handler: http.HandlerFunc(srvProbe), ReadHeaderTimeout: 300 * time.Millisecond, ErrorLog: log.New(io.Discard, "", 0)}
	}
	ref := httptest.NewUnstartedServer(nil)
	ref.Config = hs()
	ref.Start()
	t.Cleanup(ref.Close)
	conn, br := srvDial(t, ref.Listener.Addr().String())
	require.Empty(t, srvRequireClosedWithin(t, conn, br, 2*time.Second), "net/http closes it")

	l := srvStart(t, hs())
	conn, br = srvDial(t, l.addr)
	require.Empty(t, srvRequireClosedWithin(t, conn, br, 2*time.Second), "Server closes it")
}

func TestServerClientLeavingCancelsTheRequest(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		cancelled <- r.Context().Err()
	})
	addr := srvServe(t, h).addr
	conn, _ := srvDial(t, addr)
	srvSend(t, conn, "GET /long HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvWait(t, started, "the request to start")
	require.NoError(t, conn.Close())
	require.ErrorIs(t, srvWait(t, cancelled, "the request's context to end"), context.Canceled)
}

func TestServerLongRequestWithTheClientStaying(t *testing.T) {
	release := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		srvWriteLen(w, fmt.Sprintf("%s ctx=%v", r.URL.Path, r.Context().Err()))
	})
	l := srvServe(t, h)

	t.Run("nothing more from the client", func(t *testing.T) {
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET /long HTTP/1.1\r\nHost: example.com\r\n\r\n")
		srvWaitPeeked(t, l.Server, 1)
		release <- struct{}{}
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/long ctx=<nil>", body, "a client still there does not cancel")
		require.False(t, resp.Close)
		srvSend(t, conn, "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")
		_, body = srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/next ctx=<nil>", body)
		require.NoError(t, conn.Close())
		require.Eventually(t, func() bool { return len(srvConns(l.Server)) == 0 }, 5*time.Second, 5*time.Millisecond)
	})

	t.Run("the next request arrives during it", func(t *testing.T) {
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, "GET /long HTTP/1.1\r\nHost: example.com\r\n\r\n")
		c := srvWaitPeeked(t, l.Server, 1)
		sent := c.peeks.Load()
		srvSend(t, conn, "GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n")
		// A look begun after the send sees the next request waiting.
		srvWaitPeeked(t, l.Server, sent+2)
		release <- struct{}{}
		_, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/long ctx=<nil>", body)
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "/next ctx=<nil>", body, "the request the janitor saw waiting is served")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// ---------------------------------------------------------------------------
// Panics

func TestServerHandlerPanics(t *testing.T) {
	var logs srvLogBuffer
	ran := make(chan string, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			ran <- r.URL.Path
			io.WriteString(w, "partial")
			panic(http.ErrAbortHandler)
		case "/boom":
			ran <- r.URL.Path
			w.Header().Set("X-Set", "1")
			io.WriteString(w, "partial")
			panic("boom at the handler")
		}
		srvWriteLen(w, "ok")
	})
	l := srvStart(t, &http.Server{Handler: h, ErrorLog: log.New(&logs, "", 0)})

	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET /ok HTTP/1.1\r\nHost: example.com\r\n\r\nGET /abort HTTP/1.1\r\nHost: example.com\r\n\r\n")
	_, body := srvRead(t, conn, br, http.MethodGet)
	require.Equal(t, "ok", body)
	require.Equal(t, "/abort", srvWait(t, ran, "the handler"), "the connection was kept for the pipelined request")
	require.Empty(t, srvRequireClosed(t, conn, br), "ErrAbortHandler: dropped, no response")
	require.Empty(t, logs.String(), "ErrAbortHandler is not logged")

	conn, br = srvDial(t, l.addr)
	srvSend(t, conn, "GET /boom HTTP/1.1\r\nHost: example.com\r\n\r\n")
	require.Equal(t, "/boom", srvWait(t, ran, "the handler"))
	require.Empty(t, srvRequireClosed(t, conn, br), "a panic drops the connection")
	require.Contains(t, logs.String(), "http: panic serving 127.0.0.1:")
	require.Contains(t, logs.String(), "boom at the handler")
	require.Contains(t, logs.String(), "goroutine ", "with the stack")

	_, body = srvGet(t, l.addr, "/ok")
	require.Equal(t, "ok", body, "the Server still serves")
}

// ---------------------------------------------------------------------------
// Shutdown and Close

func TestServerShutdownDrains(t *testing.T) {
	started := make(chan string, 2)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- r.Method
			<-release
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			panic(err)
		}
		srvWriteLen(w, "done "+r.URL.Path)
	})
	l := srvServe(t, h)
	releaseAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseAll) // runs before the Server's shutdown if the test fails

	// One request in flight on Server, one on net/http.
	connA, brA := srvDial(t, l.addr)
	srvSend(t, connA, "GET /block HTTP/1.1\r\nHost: example.com\r\n\r\n")
	connP, brP := srvDial(t, l.addr)
	srvSend(t, connP, "POST /block HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi")
	require.ElementsMatch(t, []string{"GET", "POST"},
		[]string{srvWait(t, started, "a request"), srvWait(t, started, "a request")})

	// And one idle connection.
	connB, brB := srvDial(t, l.addr)
	srvSend(t, connB, "GET /fast HTTP/1.1\r\nHost: example.com\r\n\r\n")
	_, body := srvRead(t, connB, brB, http.MethodGet)
	require.Equal(t, "done /fast", body)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- l.Shutdown(ctx)
	}()
	require.Empty(t, srvRequireClosed(t, connB, brB), "the idle connection is closed at once")
	select {
	case err := <-shutdown:
		require.FailNow(t, "Shutdown returned before the running requests ended", "%v", err)
	default:
	}
	_, err := net.Dial("tcp", l.addr)
	require.Error(t, err, "the listener is closed")

	releaseAll()
	resp, body := srvRead(t, connA, brA, http.MethodGet)
	require.Equal(t, "done /block", body)
	require.True(t, resp.Close, "the response says Connection: close")
	require.Empty(t, srvRequireClosed(t, connA, brA))

	resp, body = srvRead(t, connP, brP, http.MethodPost)
	require.Equal(t, "done /block", body)
	require.True(t, resp.Close)
	require.Empty(t, srvRequireClosed(t, connP, brP))

	require.NoError(t, srvWait(t, shutdown, "Shutdown"))
	require.ErrorIs(t, l.serveErr(), http.ErrServerClosed)
}

func TestServerShutdownDeadlineThenClose(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done() // stuck until Close cancels it
		ended <- r.Context().Err()
	})
	l := srvServe(t, h)
	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET /stuck HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvWait(t, started, "the request to start")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Shutdown(ctx), context.DeadlineExceeded)
	require.ErrorIs(t, l.serveErr(), http.ErrServerClosed, "Serve returned as Shutdown began")

	require.NoError(t, l.Close())
	require.ErrorIs(t, srvWait(t, ended, "the stuck request to end"), context.Canceled, "Close cancels the running request")
	require.Empty(t, srvRequireClosed(t, conn, br), "and closes its connection")

	// Everything is gone: a Shutdown now returns at once.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	require.NoError(t, l.Shutdown(ctx2))
}

func TestServerCloseEndsEverything(t *testing.T) {
	started := make(chan struct{}, 2)
	ended := make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- struct{}{}
			<-r.Context().Done()
			ended <- struct{}{}
			return
		}
		srvWriteLen(w, "ok")
	})
	l := srvServe(t, h)
	connA, brA := srvDial(t, l.addr) // Server's, in a request
	srvSend(t, connA, "GET /block HTTP/1.1\r\nHost: example.com\r\n\r\n")
	connP, brP := srvDial(t, l.addr) // net/http's, in a request
	srvSend(t, connP, "POST /block HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")
	connB, brB := srvDial(t, l.addr) // Server's, idle
	srvSend(t, connB, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvRead(t, connB, brB, http.MethodGet)
	srvWait(t, started, "a request")
	srvWait(t, started, "a request")

	require.NoError(t, l.Close())
	require.ErrorIs(t, l.serveErr(), http.ErrServerClosed)
	for _, c := range []struct {
		conn net.Conn
		br   *bufio.Reader
	}{{connA, brA}, {connP, brP}, {connB, brB}} {
		require.Empty(t, srvRequireClosed(t, c.conn, c.br))
	}
	srvWait(t, ended, "a request to end")
	srvWait(t, ended, "a request to end")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, l.Shutdown(ctx), "waits for what Close left")
}

// A handler that ignores its context keeps neither Close nor its client
// waiting.
func TestServerCloseDoesNotWaitForAHandler(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	})
	l := srvServe(t, h)
	t.Cleanup(func() { close(release) }) // before the Server's own cleanup
	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET /stuck HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvWait(t, started, "the request to start")

	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	require.NoError(t, srvWait(t, closed, "Close"))
	require.Empty(t, srvRequireClosed(t, conn, br), "the client sees its connection end")
}

func TestServerShutdownBeforeServe(t *testing.T) {
	s, err := NewServer(&http.Server{Handler: http.HandlerFunc(srvProbe)})
	require.NoError(t, err)
	require.NoError(t, s.Shutdown(context.Background()))
	require.NoError(t, s.Close())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	require.ErrorIs(t, s.Serve(ln), http.ErrServerClosed)
}

// Serve called after Shutdown (say `go s.Serve(ln)` racing with a Shutdown
// on a signal) returns http.ErrServerClosed and closes ln, as net/http's
// Serve does: otherwise the kernel would keep accepting connections nobody
// serves.
func TestServerServeAfterShutdown(t *testing.T) {
	s, err := NewServer(&http.Server{Handler: http.HandlerFunc(srvProbe)})
	require.NoError(t, err)
	require.NoError(t, s.Shutdown(context.Background()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.ErrorIs(t, s.Serve(ln), http.ErrServerClosed)
	require.ErrorIs(t, ln.Close(), net.ErrClosed, "Serve closed the listener")
}

// Serve on several listeners; Shutdown stops them all.
func TestServerSeveralListeners(t *testing.T) {
	s, err := NewServer(&http.Server{Handler: http.HandlerFunc(srvProbe)})
	require.NoError(t, err)
	served := make(chan error, 2)
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addrs = append(addrs, ln.Addr().String())
		go func() { served <- s.Serve(ln) }()
	}
	for _, addr := range addrs {
		_, body := srvGet(t, addr, "/x")
		require.Equal(t, "GET /x ", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	require.ErrorIs(t, srvWait(t, served, "Serve"), http.ErrServerClosed)
	require.ErrorIs(t, srvWait(t, served, "Serve"), http.ErrServerClosed)
}

// ---------------------------------------------------------------------------
// Bad input: net/http's to answer

func TestServerBadInputGetsNetHTTPAnswers(t *testing.T) {
	addr := srvServe(t, http.HandlerFunc(srvProbe)).addr
	ref := srvReference(t, http.HandlerFunc(srvProbe))
	for _, c := range []struct {
		name   string
		raw    string
		status int
		body   string // for a 200 the handler answered
	}{
		{"Content-Length and Transfer-Encoding", "POST /te HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200, "POST /te hello"},
		{"GET with Content-Length and Transfer-Encoding", "GET /te HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200, "GET /te "},
		{"bare LF line ends", "GET /lf HTTP/1.1\nHost: x\n\n", 200, "GET /lf "},
		{"bare LF at the end only", "GET /lf HTTP/1.1\r\nHost: x\r\n\n", 200, "GET /lf "},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400, ""},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, ""},
		{"bad Host", "GET / HTTP/1.1\r\nHost: x/y\r\n\r\n", 400, ""},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: x\r\nX-Bad : y\r\n\r\n", 400, ""},
		{"obs-fold", "GET /fold HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n", 200, "GET /fold "},
		{"control byte in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n", 400, ""},
		{"header without a colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400, ""},
		{"head larger than 4 KiB", "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 200, "GET /big "},
		{"invalid method token", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"lower-case method", "get /lower HTTP/1.1\r\nHost: x\r\n\r\n", 200, "get /lower "},
		{"unknown method", "PURGE /p HTTP/1.1\r\nHost: x\r\n\r\n", 200, "PURGE /p "},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, ""},
		{"garbage protocol", "GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"unsupported Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ""},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, ""},
		{"bad escape in the target", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"DEL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-Del: a\x7fb\r\n\r\n", 400, ""},
		{"empty header name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400, ""},
		{"space in the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"fragment in the target", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /a%23b "},
		{"asterisk target", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""}, // net/http's own answer
		{"leading empty line", "\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n", 400, ""},
		{"HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n", 200, "GET /old "},
	} {
		t.Run(c.name, func(t *testing.T) {
			get := func(addr string) (*http.Response, string) {
				conn, br := srvDial(t, addr)
				srvSend(t, conn, c.raw)
				return srvRead(t, conn, br, http.MethodGet)
			}
			want, wantBody := get(ref)
			got, gotBody := get(addr)
			require.Equal(t, c.status, want.StatusCode, "net/http's answer: %s", wantBody)
			require.Equal(t, want.StatusCode, got.StatusCode, gotBody)
			require.Equal(t, wantBody, gotBody)
			require.Equal(t, want.Close, got.Close)
			if c.status == http.StatusOK && c.body != "" {
				require.Equal(t, c.body, gotBody)
				require.Equal(t, "true", got.Header.Get("X-Hijackable"), "served by net/http")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Load

func TestServerConcurrentClients(t *testing.T) {
	addr := srvServe(t, http.HandlerFunc(srvProbe)).addr
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	errs := make(chan error, 8*25)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				path := fmt.Sprintf("/%d/%d", g, i)
				var resp *http.Response
				var err error
				if i%5 == 4 {
					resp, err = hc.Post("http://"+addr+path, "text/plain", strings.NewReader("b"))
				} else {
					resp, err = hc.Get("http://" + addr + path)
				}
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := "GET " + path + " "
				if i%5 == 4 {
					want = "POST " + path + " b"
				}
				if err != nil || string(body) != want {
					errs <- fmt.Errorf("%s: %q, %v", path, body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// ---------------------------------------------------------------------------
// BaseContext and ConnContext

func TestServerAppliesBaseAndConnContext(t *testing.T) {
	type key string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		_, _ = io.Copy(io.Discard, r.Body)
		srvWriteLen(w, fmt.Sprintf("base=%v conn=%v local=%v", ctx.Value(key("base")),
			ctx.Value(key("conn")) != nil, ctx.Value(http.LocalAddrContextKey) != nil))
	})
	l := srvStart(t, &http.Server{
		Handler:  h,
		ErrorLog: log.New(io.Discard, "", 0),
		BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), key("base"), "b")
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, key("conn"), c.RemoteAddr().String())
		},
	})
	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	_, body := srvRead(t, conn, br, http.MethodGet)
	require.Equal(t, "base=b conn=true local=true", body, "a request Server serves")
	srvSend(t, conn, "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx")
	_, body = srvRead(t, conn, br, http.MethodPost)
	require.Equal(t, "base=b conn=true local=true", body, "a request handed off")
}

func TestServerNilContextsAreErrors(t *testing.T) {
	h := http.HandlerFunc(srvProbe)

	t.Run("BaseContext", func(t *testing.T) {
		s, err := NewServer(&http.Server{Handler: h, BaseContext: func(net.Listener) context.Context { return nil }})
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		require.ErrorIs(t, s.Serve(ln), errNilBaseContext)
		_, err = ln.Accept()
		require.Error(t, err, "Serve closed its listener")
		require.NoError(t, s.Close())
	})

	t.Run("ConnContext", func(t *testing.T) {
		var logs srvLogBuffer
		var n atomic.Int32
		l := srvStart(t, &http.Server{Handler: h, ErrorLog: log.New(&logs, "", 0),
			ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
				if n.Add(1) == 1 {
					return nil
				}
				return ctx
			}})
		conn, br := srvDial(t, l.addr)
		require.Empty(t, srvRequireClosed(t, conn, br), "the first connection is closed")
		require.Eventually(t, func() bool { return strings.Contains(logs.String(), "ConnContext returned nil") },
			5*time.Second, 5*time.Millisecond)
		conn, br = srvDial(t, l.addr)
		srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, _ := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, http.StatusOK, resp.StatusCode, "the next one is served")
	})
}

func TestServerReportsConnState(t *testing.T) {
	var mu sync.Mutex
	states := map[net.Conn][]http.ConnState{}
	var order []net.Conn
	l := srvStart(t, &http.Server{
		Handler:  http.HandlerFunc(srvProbe),
		ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(c net.Conn, st http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := states[c]; !ok {
				order = append(order, c)
			}
			states[c] = append(states[c], st)
		},
	})
	seen := func() [][]http.ConnState {
		mu.Lock()
		defer mu.Unlock()
		var out [][]http.ConnState
		for _, c := range order {
			out = append(out, append([]http.ConnState(nil), states[c]...))
		}
		return out
	}
	wait := func(want [][]http.ConnState) {
		t.Helper()
		require.Eventually(t, func() bool { return fmt.Sprint(want) == fmt.Sprint(seen()) },
			5*time.Second, 5*time.Millisecond, "want %v", want)
	}
	N, A, I, H, C := http.StateNew, http.StateActive, http.StateIdle, http.StateHijacked, http.StateClosed

	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvRead(t, conn, br, http.MethodGet)
	require.NoError(t, conn.Close())
	wait([][]http.ConnState{{N, A, I, C}})

	conn, br = srvDial(t, l.addr)
	srvSend(t, conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	srvRead(t, conn, br, http.MethodGet)
	srvSend(t, conn, "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx")
	srvRead(t, conn, br, http.MethodPost)
	require.NoError(t, conn.Close())
	// The accepted connection ends hijacked; net/http reports the one
	// wrapping it from StateNew on.
	wait([][]http.ConnState{{N, A, I, C}, {N, A, I, H}, {N, A, I, C}})
}

// A body larger than the socket can hold at once is written in parts, each
// waiting until the client has read: nothing is lost or reordered.
func TestServerWritesABodyLargerThanTheSocketHolds(t *testing.T) {
	const size = 16 << 20 // the kernel's send buffer is at most a few MiB
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(body) // one Write: the socket must take it in parts
	})
	l := srvServe(t, h)
	conn, br := srvDial(t, l.addr)
	srvSend(t, conn, "GET /large HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp, got := srvRead(t, conn, br, http.MethodGet)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, size, len(got))
	require.True(t, got == string(body), "the body arrives whole and in order")
}

func TestServerSetKeepAlivesEnabled(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srvWriteLen(w, "ok") })
	l := srvServe(t, h)
	get := "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
	post := "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi"

	idle, idleBr := srvDial(t, l.addr)
	srvSend(t, idle, get)
	resp, _ := srvRead(t, idle, idleBr, http.MethodGet)
	require.False(t, resp.Close)
	srvWaitState(t, l.Server, stIdle)

	l.SetKeepAlivesEnabled(false)
	require.Empty(t, srvRequireClosed(t, idle, idleBr), "an idle connection is closed")
	for name, raw := range map[string]string{"served": get, "handed off": post} {
		conn, br := srvDial(t, l.addr)
		srvSend(t, conn, raw)
		resp, body := srvRead(t, conn, br, http.MethodGet)
		require.Equal(t, "ok", body, name)
		require.True(t, resp.Close, "%s: the response says Connection: close", name)
		require.Empty(t, srvRequireClosed(t, conn, br), name)
	}

	l.SetKeepAlivesEnabled(true)
	for name, raw := range map[string]string{"served": get, "handed off": post} {
		conn, br := srvDial(t, l.addr)
		for range 2 {
			srvSend(t, conn, raw)
			resp, body := srvRead(t, conn, br, http.MethodGet)
			require.Equal(t, "ok", body, name)
			require.False(t, resp.Close, name)
		}
	}
}
