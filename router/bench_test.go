package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkProxy compares a sticky hit through the Router with a bare
// httputil.ReverseProxy to the same backend, in one process, over loopback.
// The difference is the router's own cost: cookie check, rendezvous choice
// and the hop through the backend's worker actor.
func BenchmarkProxy(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)

	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport:  &http.Transport{MaxIdleConnsPerHost: 256},
		BufferPool: copyBuffers, // as the router: compare routing, not buffer reuse
	})
	defer bare.Close()

	r, err := New(Config{Backends: []Backend{{Name: "a", URL: backend.URL}}, Keys: [][]byte{testKey1}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.Background())
	aff := httptest.NewServer(r)
	defer aff.Close()

	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get(aff.URL)
	if err != nil || len(resp.Cookies()) != 1 {
		b.Fatalf("no affinity cookie: %v", err)
	}
	resp.Body.Close()
	cookie := resp.Cookies()[0].Name + "=" + resp.Cookies()[0].Value

	for _, c := range []struct{ name, url, cookie string }{
		{"reverseproxy", bare.URL, ""},
		{"affinity", aff.URL, cookie},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, c.url, nil)
					if c.cookie != "" {
						req.Header.Set("Cookie", c.cookie)
					}
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// cannedTransport answers every request at once, without a network, so
// BenchmarkRouterOverhead measures the proxy code alone.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Length": {"5"}}, ContentLength: 5,
		Body: io.NopCloser(strings.NewReader("hello")), Request: req}, nil
}

// BenchmarkRouterOverhead is the router's own cost per sticky hit (cookie
// check, rendezvous choice, the hop through the backend's worker actor) next
// to a bare httputil.ReverseProxy, both over a canned transport.
func BenchmarkRouterOverhead(b *testing.B) {
	u, _ := url.Parse("http://backend.invalid")
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport:  cannedTransport{},
		BufferPool: copyBuffers,
	}
	r, err := New(Config{Backends: []Backend{{Name: "a", URL: u.String()}}, Keys: [][]byte{testKey1},
		Transport: cannedTransport{}, Health: HealthConfig{Interval: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.Background())
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	cookie := rec.Result().Cookies()[0]

	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"reverseproxy", bare}, {"affinity", r}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				req.AddCookie(cookie)
				for pb.Next() {
					w := discardWriter{h: http.Header{}}
					c.h.ServeHTTP(&w, req)
					if w.code != http.StatusOK {
						b.Errorf("status %d", w.code)
						return
					}
				}
			})
		})
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkSessionMemory reports the heap a returning client's session
// costs the router (its session actor in the runtime, still active, plus
// its entry in the session table), and what a client past MaxSessions
// costs (nothing should stay).
func BenchmarkSessionMemory(b *testing.B) {
	for _, c := range []struct {
		name string
		max  int
	}{{"tracked", 1 << 30}, {"past-cap", 1}} {
		b.Run(c.name, func(b *testing.B) {
			r, err := New(Config{Backends: []Backend{{Name: "a", URL: "http://backend.invalid"}}, Keys: [][]byte{testKey1},
				Transport: cannedTransport{}, Health: HealthConfig{Interval: time.Hour}, MaxSessions: c.max})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(context.Background())
			sg := r.signer.Load()
			now := time.Now()
			cookies := make([]string, b.N)
			for i := range cookies {
				tk := ticket{sid: newSessionID(), issued: now.Unix()}
				cookies[i] = DefaultCookieName + "=" + sg.encode(&tk)
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for i := range cookies {
				req.Header.Set("Cookie", cookies[i])
				w := discardWriter{h: http.Header{}}
				r.ServeHTTP(&w, req)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(cookies) // allocated before the first reading
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "B/session")
			b.ReportMetric(float64(r.Metrics().Sessions), "sessions")
		})
	}
}

// BenchmarkServer compares the Router behind net/http's server with the
// Router behind Server, in one process: sticky GETs over keep-alive
// loopback connections from raw clients, to a raw backend answering a
// canned response, so that allocs/op is the two servers' and the router's.
func BenchmarkServer(b *testing.B) {
	backend := cannedBackend(b)
	r, err := New(Config{Backends: []Backend{{Name: "a", URL: "http://" + backend}}, Keys: [][]byte{testKey1},
		Health: HealthConfig{Interval: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.Background())
	sg := r.signer.Load()
	tk := ticket{sid: newSessionID(), issued: time.Now().Unix()}
	request := "GET /page HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\nCookie: " +
		DefaultCookieName + "=" + sg.encode(&tk) + "\r\n\r\n"

	for _, c := range []struct {
		name  string
		serve func(net.Listener) (stop func())
	}{
		{"net-http", func(ln net.Listener) func() {
			srv := &http.Server{Handler: r}
			go func() { _ = srv.Serve(ln) }()
			return func() { _ = srv.Close() }
		}},
		{"server", func(ln net.Listener) func() {
			srv, _ := NewServer(&http.Server{Handler: r})
			go func() { _ = srv.Serve(ln) }()
			return func() { _ = srv.Close() }
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer c.serve(ln)()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				for pb.Next() {
					if _, err := io.WriteString(conn, request); err != nil {
						b.Error(err)
						return
					}
					if err := readCanned(br); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// cannedBody is what cannedBackend answers, after its head.
const cannedBody = "hello"

// cannedBackend serves a fixed response to every request on loopback, with
// no HTTP parsing beyond finding each head's end.
func cannedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	response := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Sun, 29 Nov 2026 12:00:00 GMT\r\nContent-Length: " +
		strconv.Itoa(len(cannedBody)) + "\r\n\r\n" + cannedBody)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			b.Cleanup(func() { _ = conn.Close() })
			go func() {
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 2 { // the blank line: a whole head
						if _, err := conn.Write(response); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// readCanned reads one response to a cannedBackend request from br.
func readCanned(br *bufio.Reader) error {
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length != len(cannedBody) {
		return fmt.Errorf("response length %d", length)
	}
	_, err := br.Discard(length)
	return err
}
