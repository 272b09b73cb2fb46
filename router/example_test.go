package router_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/affinity-go/affinity/router"
)

// A client keeps reaching the backend that served its first request.
func Example() {
	var backends []router.Backend
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, name)
		}))
		defer srv.Close()
		backends = append(backends, router.Backend{Name: name, URL: srv.URL})
	}
	rt, err := router.New(router.Config{
		Backends: backends,
		Keys:     [][]byte{[]byte("an example key of at least 32 bytes")},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close(context.Background())
	proxy := httptest.NewServer(rt)
	defer proxy.Close()

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		resp, err := client.Get(proxy.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(body)]++
	}
	fmt.Println("backends seen by one client:", len(seen))
	fmt.Println("affinity hits:", rt.Metrics().Hits)
	// Output:
	// backends seen by one client: 1
	// affinity hits: 9
}

// Server answers plain GET and HEAD requests itself and hands every other
// connection to the http.Server it wraps; both shut down together.
func ExampleServer() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s answered", r.Method)
	})
	srv, err := router.NewServer(&http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", strings.NewReader("a body"))
		if method == http.MethodGet {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	client.CloseIdleConnections()
	fmt.Println(srv.Shutdown(context.Background()), <-served)
	// Output:
	// GET answered
	// POST answered
	// <nil> http: Server closed
}

// A backend's weight sets its share of sessions; changing it moves sessions
// only to or from that backend.
func ExampleRouter_SetWeight() {
	rt, err := router.New(router.Config{
		Backends: []router.Backend{{Name: "small", URL: "http://127.0.0.1:1"}, {Name: "large", URL: "http://127.0.0.1:2", Weight: 3}},
		Keys:     [][]byte{[]byte("an example key of at least 32 bytes")},
		Health:   router.HealthConfig{Interval: time.Hour},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close(context.Background())
	if err := rt.SetWeight(context.Background(), "small", 2); err != nil {
		fmt.Println(err)
		return
	}
	for _, b := range rt.Backends() {
		fmt.Println(b.Name, b.Weight)
	}
	fmt.Println(rt.SetWeight(context.Background(), "small", -1) != nil)
	// Output:
	// large 3
	// small 2
	// true
}
