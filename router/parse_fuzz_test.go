package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Server parses the common request head itself and hands every other to
// net/http. Whatever it accepts, net/http's own server must accept too,
// and read as the same request: a head the two read differently is how
// requests get smuggled past a proxy.
func FuzzFrontParseAgreesWithNetHTTP(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD /x?y=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
		"GET / HTTP/1.1\r\nhost: a\r\nx-lower: v \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: folded\r\n  on\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\x7f: v\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	oracle := startNetHTTPOracle(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		end, found := headEnd(data, 0)
		if !found || end == 0 || end > frontBufferSize {
			return // net/http's to read
		}
		head := data[:end]
		c := &frontConn{header: http.Header{}}
		c.br = bufio.NewReaderSize(bytes.NewReader(head), frontBufferSize)
		c.tmpl = http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: c.header, Body: http.NoBody}
		ours := c.parse(context.Background(), end)
		if ours == nil {
			return // handed off: net/http reads it
		}
		theirs := oracle.read(t, head)
		require.NotNil(t, theirs, "Server accepted a head net/http refuses: %q", head)
		require.Equal(t, theirs.Method, ours.Method, "%q", head)
		require.Equal(t, theirs.RequestURI, ours.RequestURI, "%q", head)
		require.Equal(t, theirs.URL.String(), ours.URL.String(), "%q", head)
		require.Equal(t, theirs.Host, ours.Host, "%q", head)
		require.Equal(t, theirs.Close, ours.Close, "%q", head)
		require.Equal(t, theirs.Header, ours.Header, "%q", head)
		require.Zero(t, theirs.ContentLength, "%q", head)
		require.Empty(t, theirs.TransferEncoding, "%q", head)
	})
}

// netHTTPOracle is a net/http server that reports the requests its handler
// gets, over in-memory connections.
type netHTTPOracle struct {
	conns chan net.Conn
	seen  chan *http.Request
}

func startNetHTTPOracle(tb testing.TB) *netHTTPOracle {
	o := &netHTTPOracle{conns: make(chan net.Conn), seen: make(chan *http.Request, 1)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.seen <- r.Clone(context.Background())
		w.Header().Set("Connection", "close")
	})}
	ln := &pipeListener{conns: o.conns, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		_ = srv.Close()
		wg.Wait()
	})
	return o
}

// read sends head to the server and returns what its handler saw, or nil
// when the server answered without calling it (an error status).
func (o *netHTTPOracle) read(t *testing.T, head []byte) *http.Request {
	client, server := net.Pipe()
	defer client.Close()
	require.NoError(t, client.SetDeadline(time.Now().Add(10*time.Second)))
	o.conns <- server
	go func() { _, _ = client.Write(head) }() // the server may answer before reading it all
	method, _, _ := strings.Cut(string(head), " ")
	res, err := http.ReadResponse(bufio.NewReader(client), &http.Request{Method: method})
	require.NoError(t, err, "net/http's answer to %q", head)
	res.Body.Close()
	select {
	case r := <-o.seen:
		return r
	default:
		require.NotEqual(t, http.StatusOK, res.StatusCode, "an OK without the handler")
		return nil
	}
}

// pipeListener accepts the connections sent on conns.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return handoffAddr{} }

// The fast path serves a backend's common response head from its buffer
// (readSimpleHead) and leaves every other to http.ReadResponse. What it
// takes, ReadResponse must read the same: status, length, keep-alive and
// headers, or a backend could desynchronize the connection it shares
// between clients.
func FuzzSimpleHeadAgreesWithReadResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nDate: Mon, 07 Dec 2026 06:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: folded\r\n more\r\n\r\nok",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &backendConn{br: bufio.NewReaderSize(bytes.NewReader(data), 4096)}
		sh, ok := readSimpleHead(c)
		if !ok {
			return // ReadResponse reads it
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), &http.Request{Method: http.MethodGet})
		require.NoError(t, err, "readSimpleHead took a head ReadResponse refuses: %q", data)
		require.Equal(t, res.StatusCode, sh.code, "%q", data)
		require.Equal(t, res.ContentLength, sh.length, "%q", data)
		require.False(t, res.Close, "readSimpleHead took a response that closes its connection: %q", data)
		require.Empty(t, res.TransferEncoding, "%q", data)
		values := 0
		for _, vv := range res.Header {
			values += len(vv)
		}
		require.Equal(t, values, sh.n, "every header line: %q", data)
		_, hasDate := res.Header["Date"] // even empty: then no Date is added, as net/http does
		require.Equal(t, hasDate, sh.hasDate, "%q", data)
		require.Equal(t, isEventStream(res.Header), sh.eventStream, "%q", data)
		if body, err := io.ReadAll(res.Body); err == nil {
			require.Equal(t, string(body), string(data[sh.size:sh.size+len(body)]), "the body starts where the head ends: %q", data)
		}
	})
}

// Reading the affinity cookie out of a Cookie header never panics, and a
// cookie it takes as valid is the one the router would have written for
// that ticket, byte for byte.
func FuzzReadTicket(f *testing.F) {
	sg := newSigner([][]byte{testKey1})
	now := time.Unix(1_800_000_000, 0)
	valid := sg.encode(&ticket{sid: newSessionID(), epoch: 3, issued: now.Unix()})
	for _, seed := range []string{
		"affinity=" + valid,
		"a=1; affinity=" + valid + "; b=2",
		"affinity=\"" + valid + "\"",
		"affinity=" + valid[:len(valid)-1] + "A",
		"affinity=x; affinity=" + valid,
		"affinity=" + valid + valid,
		"affinity;=; ;affinity=",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		h := http.Header{"Cookie": {header}}
		var memo cookieMemo
		tk, st := readTicket(h, "affinity", sg, now, 24*time.Hour, &memo)
		again, st2 := readTicket(h, "affinity", sg, now, 24*time.Hour, &memo)
		require.Equal(t, st, st2, "the memo answers as the codec: %q", header)
		require.Equal(t, tk, again, "%q", header)
		if st == cookieValid {
			require.Contains(t, header, sg.encode(&tk), "a valid cookie is the router's own encoding: %q", header)
		}
	})
}
