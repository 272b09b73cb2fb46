package router

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
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
