package router

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

var (
	testKey1 = []byte("0123456789abcdef0123456789abcdef-key-one")
	testKey2 = []byte("fedcba9876543210fedcba9876543210-key-two")
)

// testBackend is a real HTTP server on loopback that can be killed and
// restarted on the same address.
type testBackend struct {
	t    *testing.T
	name string
	addr string

	mu  sync.Mutex
	srv *http.Server

	arrived   chan struct{} // /slow: signalled when a request arrives
	cancelled chan struct{} // /slow: signalled when the request's context ends
	sseNext   chan struct{} // /sse: one receive per event after the first
	release   chan struct{} // /hold: answers once it is closed
	wsGot     chan []byte   // /ws-hold: what the client side sent, once it closed; /ws-split: the router's close frame
	wsFull    chan struct{} // /ws-flood: closed once its writes stall (nobody reads)
}

func startBackend(t *testing.T, name string) *testBackend {
	t.Helper()
	b := &testBackend{t: t, name: name, arrived: make(chan struct{}, 16), cancelled: make(chan struct{}, 16), sseNext: make(chan struct{}),
		release: make(chan struct{}), wsGot: make(chan []byte, 4), wsFull: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(b.kill)
	return b
}

func (b *testBackend) url() string { return "http://" + b.addr }

func (b *testBackend) serve(ln net.Listener) {
	srv := &http.Server{Handler: b.handler()}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// kill closes the listener and every connection: the port refuses.
func (b *testBackend) kill() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart listens again on the same address.
func (b *testBackend) restart() {
	b.t.Helper()
	var ln net.Listener
	require.Eventually(b.t, func() bool {
		var err error
		ln, err = net.Listen("tcp", b.addr)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	b.serve(ln)
}

func (b *testBackend) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", b.name)
		_, _ = io.WriteString(w, b.name)
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", b.name)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"host":   r.Host,
			"xff":    r.Header.Get("X-Forwarded-For"),
			"proto":  r.Header.Get("X-Forwarded-Proto"),
			"xhost":  r.Header.Get("X-Forwarded-Host"),
			"fwd":    strings.Join(r.Header["Forwarded"], ", "),
			"cookie": strings.Join(r.Header["Cookie"], " | "),
		})
	})
	mux.HandleFunc("/public", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60, s-maxage=600")
		w.Header().Set("X-Backend", b.name)
		_, _ = io.WriteString(w, "cacheable")
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", b.name)
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/upload-drop", func(w http.ResponseWriter, r *http.Request) {
		// Reads part of the body, then drops the connection unanswered.
		_, _ = io.ReadFull(r.Body, make([]byte, 1))
		b.arrived <- struct{}{}
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		// Signals its arrival, waits for release, and names the
		// connection it came on (the router's end of it).
		b.arrived <- struct{}{}
		<-b.release
		_, _ = io.WriteString(w, r.RemoteAddr)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", b.name)
		b.arrived <- struct{}{}
		<-r.Context().Done()
		b.cancelled <- struct{}{}
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Backend", b.name)
		for i := 0; i < 3; i++ {
			if i > 0 {
				select {
				case <-b.sseNext: // the client saw the previous event
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/ws-hold", b.wsHold)
	mux.HandleFunc("/ws-flood", b.wsFlood)
	mux.HandleFunc("/ws-split", b.wsSplit)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want websocket", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Backend: %s\r\n\r\n",
			wsAccept(r.Header.Get("Sec-WebSocket-Key")), b.name)
		_ = brw.Flush()
		line, err := brw.ReadString('\n') // echo one line back, prefixed
		if err != nil {
			return
		}
		fmt.Fprintf(brw, "%s says %s", b.name, line)
		_ = brw.Flush()
	})
	return mux
}

// wsHold upgrades, then reads until the router closes the connection,
// answering each read with a text frame of the byte count so far, and
// reports every byte it got on wsGot.
func (b *testBackend) wsHold(w http.ResponseWriter, r *http.Request) {
	conn, brw, ok := acceptWS(w, r)
	if !ok {
		return
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := brw.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			b.wsGot <- got
			return
		}
		count := strconv.Itoa(len(got))
		_, _ = conn.Write(append([]byte{0x81, byte(len(count))}, count...))
	}
}

// wsSplitFrame is the binary frame /ws-split sends in two parts: its
// header and 4 payload bytes, then the other 6.
var wsSplitFrame = []byte{0x82, 10, 'p', 'a', 'r', 't', 'o', 'f', 'o', 'n', 'e', '!'}

// wsLateFrame is the text frame /ws-split sends right after wsSplitFrame.
var wsLateFrame = []byte{0x81, 4, 'l', 'a', 't', 'e'}

// wsSplit upgrades and sends the start of wsSplitFrame. Once it has the
// router's close frame (8 bytes, reported on wsGot), it sends the rest of
// that frame and wsLateFrame, then reads until the connection ends.
func (b *testBackend) wsSplit(w http.ResponseWriter, r *http.Request) {
	conn, brw, ok := acceptWS(w, r)
	if !ok {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(wsSplitFrame[:6]); err != nil {
		return
	}
	closeFrame := make([]byte, 8)
	if _, err := io.ReadFull(brw, closeFrame); err != nil {
		return
	}
	b.wsGot <- closeFrame
	_, _ = conn.Write(append(append([]byte{}, wsSplitFrame[6:]...), wsLateFrame...))
	_, _ = io.Copy(io.Discard, brw)
}

// wsFlood upgrades, then sends 32 KiB binary frames until the connection
// fails. Once a write has made no progress for 100 ms, every buffer on the
// way to the client is full: it closes wsFull and goes on writing.
func (b *testBackend) wsFlood(w http.ResponseWriter, r *http.Request) {
	conn, _, ok := acceptWS(w, r)
	if !ok {
		return
	}
	defer conn.Close()
	frame := append([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0x80, 0}, make([]byte, 32<<10)...)
	full := false
	for rest := frame; ; {
		_ = conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Write(rest)
		rest = rest[n:]
		var ne net.Error
		switch {
		case err == nil:
			rest = frame
		case errors.As(err, &ne) && ne.Timeout():
			if n == 0 && !full {
				full = true
				close(b.wsFull)
			}
		default:
			return
		}
	}
}

// acceptWS takes over r's connection and answers 101 for a WebSocket.
func acceptWS(w http.ResponseWriter, r *http.Request) (net.Conn, *bufio.ReadWriter, bool) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, false
	}
	// The protocol asked for: a test may ask for another than websocket.
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		r.Header.Get("Upgrade"), wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	if brw.Flush() != nil {
		conn.Close()
		return nil, nil, false
	}
	return conn, brw, true
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// testConfig is a router config over bs with fast health checks.
func testConfig(bs ...*testBackend) Config {
	cfg := Config{
		Keys:   [][]byte{testKey1},
		Health: HealthConfig{Interval: 10 * time.Millisecond, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1},
	}
	for _, b := range bs {
		cfg.Backends = append(cfg.Backends, Backend{Name: b.name, URL: b.url()})
	}
	return cfg
}

// proxy is a Router served on loopback by a Server, as affinity-router
// serves plain-text clients.
type proxy struct {
	*Router
	srv *frontend
}

// frontend is where a test reaches a Server.
type frontend struct {
	URL string
	*Server
}

func startRouter(t *testing.T, cfg Config) *proxy {
	t.Helper()
	r, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { // runs after the Server's shutdown, registered next
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
	})
	return &proxy{Router: r, srv: serve(t, r)}
}

// serve serves h with a Server on loopback until the test ends, when it
// shuts down (before the cleanups registered earlier run).
func serve(t *testing.T, h http.Handler) *frontend {
	t.Helper()
	l := srvStart(t, &http.Server{Handler: h})
	return &frontend{URL: "http://" + l.addr, Server: l.Server}
}

// client is one browser: a cookie jar and its own connections.
type client struct {
	t  *testing.T
	hc *http.Client
}

func newClient(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, hc: &http.Client{Jar: jar, Transport: tr}}
}

// get returns the status, the backend that answered and the body.
func (c *client) get(url string) (int, string, string) {
	c.t.Helper()
	resp, err := c.hc.Get(url)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, resp.Header.Get("X-Backend"), string(body)
}

// rawGet sends one request with an explicit Cookie header (no jar) and
// returns the backend and the affinity cookie set, if any.
func rawGet(t *testing.T, hc *http.Client, url, cookie string) (backend, setCookie string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, c := range resp.Cookies() {
		if c.Name == DefaultCookieName {
			setCookie = c.Name + "=" + c.Value
		}
	}
	return resp.Header.Get("X-Backend"), setCookie
}

func waitHealthy(t *testing.T, r *Router, name string, healthy bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, b := range r.Backends() {
			if b.Name == name {
				return b.Healthy == healthy
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "backend %s healthy=%v", name, healthy)
}

// readLine reads one line with a deadline so a broken proxy fails the test
// instead of hanging it.
func readLine(t *testing.T, conn net.Conn, br *bufio.Reader) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := br.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	return line
}

// openWS opens a WebSocket through the proxy with the given Cookie header
// ("" for none) and returns the connection once the upgrade answered.
func openWS(t *testing.T, proxyURL, cookie string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	return openWSPath(t, proxyURL, "/ws", cookie)
}

// openWSPath is openWS on another path of the test backend.
func openWSPath(t *testing.T, proxyURL, path, cookie string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	if cookie != "" {
		cookie = "Cookie: " + cookie + "\r\n"
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n", path, cookie)
	br := bufio.NewReader(conn)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	return conn, br, resp
}

// rawRequest sends raw bytes on a new connection and reads one response.
func rawRequest(t *testing.T, proxyURL, raw string) (net.Conn, *bufio.Reader, *http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return conn, br, resp, string(body)
}

// headersSeen sends method to the test backend's /headers through the
// router at url, a POST with a body (so it goes through ReverseProxy; a
// GET takes the fast path), after set adjusts the request, and returns
// what the backend saw and the response (body read).
func headersSeen(t *testing.T, url, method string, set func(*http.Request)) (map[string]string, *http.Response) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("body")
	}
	req, err := http.NewRequest(method, url+"/headers", body)
	require.NoError(t, err)
	set(req)
	resp, err := newClient(t).hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var seen map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&seen))
	return seen, resp
}
