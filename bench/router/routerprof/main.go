// Command routerprof serves router.Router, configured as bench/router/run.sh
// runs affinity-router (its defaults, the given backends, a random key), with
// net/http/pprof on a second loopback listener, so the router can be
// profiled under the benchmark's load:
//
//	GOMAXPROCS=1 taskset -c 1 go run ./bench/router/routerprof \
//	    -backend http://127.0.0.1:19001 -backend http://127.0.0.1:19002 &
//	curl -s -c /tmp/c http://127.0.0.1:18080/ >/dev/null     # a cookie
//	taskset -c 0 wrk -c64 -d30s -H "Cookie: $(awk '/affinity/ { print $6 "=" $7 }' /tmp/c)" http://127.0.0.1:18080/ &
//	go tool pprof -top 'http://127.0.0.1:18091/debug/pprof/profile?seconds=20'
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/affinity-go/affinity/router"
)

// server is what router.Server and http.Server share.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "proxy address")
	pprofAddr := flag.String("pprof", "127.0.0.1:18091", "net/http/pprof address (keep it on loopback)")
	var backends list
	flag.Var(&backends, "backend", "backend URL (repeat)")
	flag.Parse()
	if err := run(*listen, *pprofAddr, backends); err != nil {
		fmt.Fprintln(os.Stderr, "routerprof:", err)
		os.Exit(1)
	}
}

func run(listen, pprofAddr string, backends []string) error {
	if len(backends) == 0 {
		return errors.New("at least one -backend is required")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	cfg := router.Config{Keys: [][]byte{key}}
	for _, b := range backends {
		cfg.Backends = append(cfg.Backends, router.Backend{URL: b})
	}
	rt, err := router.New(cfg)
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	// affinity-router's -gc-heap-floor-mib, at its default: without it the
	// collector runs several times as often and the profile is not the
	// binary's.
	floor := make([]byte, 64<<20)
	defer runtime.KeepAlive(floor)

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	// The proxy is served as affinity-router serves it: router.Server in
	// front, http.Server for the connections it hands off.
	front, err := router.NewServer(&http.Server{Handler: rt, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second})
	if err != nil {
		return err
	}
	debug := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	servers := []server{front, debug}
	errc := make(chan error, len(servers))
	for i, addr := range []string{listen, pprofAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, s := range servers {
				_ = s.Close()
			}
			return err
		}
		go func() { errc <- servers[i].Serve(ln) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
