package router

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// jsonLines parses the access log's lines so far.
func jsonLines(t *testing.T, b *srvLogBuffer) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

func TestAccessLog(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	var logs srvLogBuffer
	log := zerolog.New(&logs)
	cfg.AccessLog = &log
	p := startRouter(t, cfg)
	c := newClient(t)

	code, _, _ := c.get(p.srv.URL + "/?q=1") // fast path (Server), new session
	require.Equal(t, http.StatusOK, code)
	code, _, _ = c.get(p.srv.URL + "/?q=2") // the cookie: a hit
	require.Equal(t, http.StatusOK, code)
	resp, err := c.hc.Post(p.srv.URL+"/upload", "text/plain", strings.NewReader("12345")) // ReverseProxy
	require.NoError(t, err)
	resp.Body.Close()
	conn, _, wsResp := openWS(t, p.srv.URL, "")
	require.Equal(t, http.StatusSwitchingProtocols, wsResp.StatusCode)
	conn.Close()

	var lines []map[string]any
	require.Eventually(t, func() bool { lines = jsonLines(t, &logs); return len(lines) == 4 }, 10*time.Second, time.Millisecond)
	byURI := map[string]map[string]any{}
	for _, l := range lines {
		byURI[l["uri"].(string)] = l
		require.Equal(t, "127.0.0.1", l["client"])
		require.Equal(t, "a", l["backend"])
		require.Equal(t, "HTTP/1.1", l["proto"])
		require.GreaterOrEqual(t, l["duration_ms"].(float64), 0.0)
	}
	first, second, post, ws := byURI["/?q=1"], byURI["/?q=2"], byURI["/upload"], byURI["/ws"]
	require.Equal(t, "GET", first["method"])
	require.EqualValues(t, 200, first["status"])
	require.EqualValues(t, 1, first["bytes"], "the body, the backend's name")
	require.Equal(t, "new", first["outcome"])
	require.Equal(t, "hit", second["outcome"])
	require.Equal(t, "POST", post["method"])
	require.EqualValues(t, 200, post["status"])
	require.EqualValues(t, 1, post["bytes"], `the body "5": the bytes the backend counted`)
	require.EqualValues(t, 101, ws["status"])
}

func TestAccessLogRecordsRefusals(t *testing.T) {
	b := startBackend(t, "a")
	cfg := testConfig(b)
	cfg.Failover = Strict
	var logs srvLogBuffer
	log := zerolog.New(&logs)
	cfg.AccessLog = &log
	p := startRouter(t, cfg)
	c := newClient(t)
	code, _, _ := c.get(p.srv.URL)
	require.Equal(t, http.StatusOK, code)
	b.kill()
	waitHealthy(t, p.Router, "a", false)
	code, _, _ = c.get(p.srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	var lines []map[string]any
	require.Eventually(t, func() bool { lines = jsonLines(t, &logs); return len(lines) == 2 }, 10*time.Second, time.Millisecond)
	require.EqualValues(t, 503, lines[1]["status"])
	require.Greater(t, lines[1]["bytes"].(float64), 0.0, "the 503's explanation")
	require.Nil(t, lines[1]["backend"], "refused before any backend was tried")
}
