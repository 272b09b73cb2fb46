package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/admin"
	"github.com/affinity-go/affinity/metrics"
)

// livePage serves the admin page of whichever runtime runs now: the demo
// starts one runtime per mode.
type livePage struct {
	srv     *http.Server
	done    chan struct{}
	current atomic.Pointer[admin.Handler]
}

func serveLivePage(ctx context.Context, addr string) (*livePage, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-ui: %w", err)
	}
	p := &livePage{done: make(chan struct{})}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("live page:", err)
		}
	}()
	fmt.Printf("live page: http://%s/ (metrics on /metrics); it shows the runtime of the mode running now\n\n", ln.Addr())
	return p, nil
}

// show points the page at rt, with its metrics.
func (p *livePage) show(rt *actors.Runtime, title string) error {
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, rt); err != nil {
		return err
	}
	h, err := admin.New(admin.Config{Runtime: rt, Title: title, Metrics: reg})
	if err != nil {
		return err
	}
	if old := p.current.Swap(h); old != nil {
		old.Close()
	}
	return nil
}

func (p *livePage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := p.current.Load()
	if h == nil {
		http.Error(w, "no runtime yet", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}

// close stops the server; open event streams end with it.
func (p *livePage) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close() // event streams do not end on their own
	}
	<-p.done
	if h := p.current.Load(); h != nil {
		h.Close()
	}
}
