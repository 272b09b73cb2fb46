// Command backend is the upstream that bench/router/run.sh puts behind
// HAProxy and affinity-router. It answers every path, "/" included (the
// health-check path), with 200, a small fixed body and an X-Backend header
// naming the instance, so a client can tell which backend served it.
// Keep-alive is on, as it is for Go's HTTP server by default.
//
//	go run ./bench/router/backend -listen 127.0.0.1:19001 -name b1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "address to listen on")
	name := flag.String("name", "", "name this instance answers with (default: the listen address)")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}

	body := []byte("hello from " + *name + "\n")
	// The header values are shared by every response: net/http only reads them.
	backend := []string{*name}
	contentType := []string{"text/plain; charset=utf-8"}
	contentLength := []string{strconv.Itoa(len(body))}
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["X-Backend"] = backend
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()

	fmt.Fprintf(os.Stderr, "backend %s listening on %s\n", *name, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}
