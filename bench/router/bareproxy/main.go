// Command bareproxy is the "reverseproxy" target of bench/router/run.sh: a
// plain httputil.ReverseProxy in front of one backend, with no session
// affinity, no cookie and no routing logic. It sets the baseline of Go's
// net/http stack, so the benchmark can tell the cost of that stack apart
// from affinity-router's own overhead.
//
// It is tuned like affinity-router (router/router.go, newTransport): HTTP/1.1
// only, no environment proxy, a 2 s dial timeout, up to 256 idle
// connections to the backend kept for 90 s, and a sync.Pool of 32 KiB body
// copy buffers. Requests are rewritten with SetURL and SetXForwarded, as
// affinity-router does; its server has the same 10 s ReadHeaderTimeout.
//
//	go run ./bench/router/bareproxy -listen 127.0.0.1:18082 -backend http://127.0.0.1:19001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// bufferPool recycles the proxy's 32 KiB body copy buffers, like
// affinity-router's.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

func main() {
	listen := flag.String("listen", "127.0.0.1:18082", "address to listen on")
	backendURL := flag.String("backend", "", "URL of the one backend to proxy to, e.g. http://127.0.0.1:19001")
	flag.Parse()
	if err := run(*listen, *backendURL); err != nil {
		fmt.Fprintln(os.Stderr, "bareproxy:", err)
		os.Exit(1)
	}
}

func run(listen, backendURL string) error {
	if backendURL == "" {
		return errors.New("-backend is required")
	}
	target, err := url.Parse(backendURL)
	if err != nil {
		return fmt.Errorf("-backend: %w", err)
	}
	if target.Scheme != "http" && target.Scheme != "https" || target.Host == "" {
		return fmt.Errorf("-backend: want an http(s)://host:port URL, not %q", backendURL)
	}

	// The same settings as affinity-router's newTransport with its defaults.
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 nil, // never through an environment proxy
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   256,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSHandshakeTimeout:   2 * time.Second,
		ForceAttemptHTTP2:     false, // HTTP/1.1
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:  transport,
		BufferPool: &bufferPool{},
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()

	fmt.Fprintf(os.Stderr, "bareproxy listening on %s, proxying to %s\n", ln.Addr(), target)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
