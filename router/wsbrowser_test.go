package router

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/browsertest"
)

// wsPage opens a WebSocket to its own origin (the router) and reports its
// events to the URL it is given, a server that outlives the router.
const wsPage = `<!doctype html>
<script>
const report = %q;
const ws = new WebSocket("ws://" + location.host + "/ws");
ws.onopen = () => fetch(report + "?ev=open", {mode: "no-cors"});
ws.onclose = e => fetch(report + "?ev=close&code=" + e.code + "&clean=" + e.wasClean, {mode: "no-cors"});
</script>`

// TestBrowserWebSocketClosesCleanlyOnShutdown shuts the router down under
// a WebSocket that headless Chromium opened through it: the page must see
// 1001, going away, and a clean close, that is, the closing handshake went
// both ways before the connection ended (an abrupt end is 1006, unclean).
func TestBrowserWebSocketClosesCleanlyOnShutdown(t *testing.T) {
	bin := browsertest.Chromium(t)

	// Cleanups run in reverse: Chromium (registered last) stops first,
	// then the servers it talks to.
	reports := make(chan url.Values, 4)
	reporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/report" {
			select {
			case reports <- r.URL.Query():
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(reporter.Close)

	page := fmt.Sprintf(wsPage, reporter.URL+"/report")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})
	mux.HandleFunc("/ws", answerWSClose)
	backend := httptest.NewServer(mux)
	t.Cleanup(backend.Close)

	cfg := testConfig()
	cfg.Backends = []Backend{{Name: "page", URL: backend.URL}}
	r, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close(context.Background()) }) // if the test ends before its Close
	front := httptest.NewServer(r)
	t.Cleanup(front.Close)

	browser := browsertest.Start(t, bin, front.URL+"/")
	next := func(what string) url.Values {
		t.Helper()
		select {
		case q := <-reports:
			return q
		case <-browser.Exited():
			t.Fatalf("chromium ended while waiting for %s: %v", what, browser.Err())
		case <-time.After(60 * time.Second):
			t.Fatalf("no report of %s from the page within 60 s", what)
		}
		return nil
	}
	require.Equal(t, "open", next("the WebSocket's opening").Get("ev"), "the WebSocket opens through the router")
	require.EqualValues(t, 1, r.Metrics().Upgraded)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Close(ctx))

	q := next("the WebSocket's close")
	require.Equal(t, "close", q.Get("ev"))
	assert.Equal(t, "1001", q.Get("code"), "going away")
	assert.Equal(t, "true", q.Get("clean"), "the closing handshake completed")
}

// answerWSClose is a WebSocket server's end as RFC 6455 has it: it reads
// the client's frames and answers a close frame with one of its own
// (echoing its status), then closes the connection.
func answerWSClose(w http.ResponseWriter, r *http.Request) {
	conn, brw, ok := acceptWS(w, r)
	if !ok {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a broken router fails the test; the handler ends anyway
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(brw, hdr[:]); err != nil {
			return
		}
		size := uint64(hdr[1] & 0x7f)
		switch size {
		case 126: // a 16-bit extended length
			var ext [2]byte
			if _, err := io.ReadFull(brw, ext[:]); err != nil {
				return
			}
			size = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127: // a 64-bit one
			var ext [8]byte
			if _, err := io.ReadFull(brw, ext[:]); err != nil {
				return
			}
			size = binary.BigEndian.Uint64(ext[:])
		}
		var mask [4]byte
		if hdr[1]&0x80 != 0 {
			if _, err := io.ReadFull(brw, mask[:]); err != nil {
				return
			}
		}
		if hdr[0]&0x0f != 0x8 { // not a close frame: skip its payload
			if _, err := io.CopyN(io.Discard, brw, int64(size)); err != nil {
				return
			}
			continue
		}
		if size > 125 { // a control frame's limit
			return
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(brw, payload); err != nil {
			return
		}
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
		_, _ = conn.Write(append([]byte{0x88, byte(len(payload))}, payload...))
		return
	}
}
