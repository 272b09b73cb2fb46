package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// started is a run() in the background.
type started struct {
	proxy, admin string
	proxies      []string // every -listen's, proxy first
	sigs         chan os.Signal
	done         chan error
}

func startRun(t *testing.T, args ...string) *started {
	t.Helper()
	s := &started{sigs: make(chan os.Signal, 1), done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		s.done <- run(args, s.sigs, func(p []string, a string) {
			s.proxies, s.proxy, s.admin = p, p[0], a
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-s.done:
		t.Fatal(err)
	}
	return s
}

// stop sends SIGTERM and returns run's error.
func (s *started) stop(t *testing.T) error {
	t.Helper()
	s.sigs <- syscall.SIGTERM
	select {
	case err := <-s.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after SIGTERM")
		return nil
	}
}

// wsBackend answers WebSocket upgrades and holds each connection until the
// client closes it.
func wsBackend(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, brw) // until the other side closes
	}))
	t.Cleanup(srv.Close)
	return srv
}

func routerArgs(t *testing.T, backend string, extra ...string) []string {
	keys := writeFile(t, t.TempDir(), "keys", key1+"\n")
	return append([]string{"-keys-file", keys, "-backend", backend, "-listen", "127.0.0.1:0",
		"-admin", "127.0.0.1:0", "-log-level", "error"}, extra...)
}

// Item 8: SIGTERM with a WebSocket open closes it and exits cleanly, well
// within the grace period.
func TestSIGTERMClosesWebSocketsAndExitsCleanly(t *testing.T) {
	be := wsBackend(t)
	s := startRun(t, routerArgs(t, be.URL, "-shutdown-grace", "3s")...)
	conn, err := net.Dial("tcp", s.proxy)
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	start := time.Now()
	require.NoError(t, s.stop(t), "a clean drain: exit status 0")
	require.Less(t, time.Since(start), 3*time.Second, "the WebSocket did not hold shutdown for the grace period")
	rest, err := io.ReadAll(br)
	require.NoError(t, err, "the WebSocket was closed (FIN), not left open")
	require.Equal(t, []byte{0x88, 0x02, 0x03, 0xe9}, rest, "with a close frame: 1001 going away")
}

// Item 4: idle keep-alive connections and slow headers are cut.
func TestClientConnectionTimeouts(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer be.Close()
	s := startRun(t, routerArgs(t, be.URL, "-idle-timeout", "100ms")...)
	defer func() { require.NoError(t, s.stop(t)) }()
	// A separate router for slow headers: a short header timeout would race
	// the well-behaved client above on a loaded machine.
	slowHeaders := startRun(t, routerArgs(t, be.URL, "-read-header-timeout", "100ms")...)
	defer func() { require.NoError(t, slowHeaders.stop(t)) }()

	conn, err := net.Dial("tcp", s.proxy)
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.False(t, resp.Close)
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the idle keep-alive connection was closed")

	slow, err := net.Dial("tcp", slowHeaders.proxy)
	require.NoError(t, err)
	defer slow.Close()
	fmt.Fprint(slow, "GET / HTTP/1.1\r\nHost: x\r\n") // never finishes its headers
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(slow)
	require.NoError(t, err, "closed by the server before the test's deadline")
}

// Item 2 from the command line: the token file and the Host check.
func TestAdminTokenFile(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer be.Close()
	dir := t.TempDir()
	tok := writeFile(t, dir, "token", "  admin-token-0123456789abcdef\n")
	s := startRun(t, routerArgs(t, be.URL, "-admin-token-file", tok, "-admin-hosts", "ops.internal")...)
	defer func() { require.NoError(t, s.stop(t)) }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	get := func(token, host string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.admin+"/backends", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, get("", ""))
	require.Equal(t, http.StatusOK, get("admin-token-0123456789abcdef", ""))
	require.Equal(t, http.StatusOK, get("admin-token-0123456789abcdef", "ops.internal:9090"))
	require.Equal(t, http.StatusForbidden, get("admin-token-0123456789abcdef", "evil.example"))

	// Rotated on SIGHUP: the old token stops working at once.
	writeFile(t, dir, "token", "rotated-token-0123456789abcdef\n")
	s.sigs <- syscall.SIGHUP
	require.Eventually(t, func() bool { return get("rotated-token-0123456789abcdef", "") == http.StatusOK }, 5*time.Second, time.Millisecond)
	require.Equal(t, http.StatusUnauthorized, get("admin-token-0123456789abcdef", ""))
	writeFile(t, dir, "token", "short\n")
	for range 3 { // the channel holds one: the third goes in once the first was handled
		s.sigs <- syscall.SIGHUP
	}
	require.Equal(t, http.StatusOK, get("rotated-token-0123456789abcdef", ""), "a bad token file changes nothing")

	empty := writeFile(t, dir, "empty", "\n")
	err := run(routerArgs(t, be.URL, "-admin-token-file", empty), nil, nil)
	require.ErrorContains(t, err, "is empty")
	short := writeFile(t, dir, "short", "abc\n")
	err = run(routerArgs(t, be.URL, "-admin-token-file", short), nil, nil)
	require.ErrorContains(t, err, "admin token is 3 bytes")
}

func TestNewSettingsFromTheFile(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.json", `{"keys_file": "k", "admin": "10.0.0.1:9090", "admin_token_file": "tok",
		"admin_hosts": ["ops.internal"], "response_header_timeout": "7s", "read_header_timeout": "3s",
		"idle_timeout": "20s", "body_read_timeout": "4s", "min_upload_rate": -1, "max_upgrades_per_backend": 9,
		"upgrade_idle_timeout": "1m", "max_sessions": 500, "shutdown_grace": "5s",
		"trusted_proxies": ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"], "preserve_host": true, "forwarded": true}`)
	o, err := parseOptions([]string{"-config", cfg, "-idle-timeout", "21s"})
	require.NoError(t, err)
	require.Equal(t, "tok", o.adminTokenFile)
	require.Equal(t, 7*time.Second, o.responseHeaderTO)
	require.Equal(t, 3*time.Second, o.readHeaderTO)
	require.Equal(t, 21*time.Second, o.idleTO, "the flag wins")
	require.Equal(t, 4*time.Second, o.bodyReadTO)
	require.Equal(t, -1, o.minUploadRate)
	require.Equal(t, 9, o.maxUpgrades)
	require.Equal(t, time.Minute, o.upgradeIdleTO)
	require.Equal(t, 500, o.maxSessions)
	require.Equal(t, 5*time.Second, o.shutdownGrace)
	require.True(t, o.preserveHost)
	require.True(t, o.forwarded)
	require.Equal(t, []string{"ops.internal", "10.0.0.1:9090"}, o.adminHostNames())
	trusted, err := parsePrefixes(o.trustedProxies)
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("2001:db8::/32")}, trusted, "an IP alone is a prefix of its full length")
	o.admin = "0.0.0.0:9090"
	require.Equal(t, []string{"ops.internal"}, o.adminHostNames(), "a wildcard address names no host")
}
