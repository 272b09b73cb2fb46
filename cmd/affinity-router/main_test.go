package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/affinity-go/affinity/internal/leaktest"
	"github.com/affinity-go/affinity/router"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

const key1 = "first-key-0123456789abcdefghijklmnopqrstuvwxyz"
const key2 = "second-key-0123456789abcdefghijklmnopqrstuvwxyz"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestEveryFlagIsExplained(t *testing.T) {
	fs := newFlagSet(&options{})
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		require.Greater(t, len(f.Usage), 20, "flag -%s needs a real explanation", f.Name)
	})
	require.GreaterOrEqual(t, n, 18)
	_, err := parseOptions([]string{"-h"})
	require.ErrorIs(t, err, flag.ErrHelp)
}

func TestBadConfigIsAClearError(t *testing.T) {
	dir := t.TempDir()
	keys := writeFile(t, dir, "keys", key1+"\n")
	short := writeFile(t, dir, "short", "tooshort\n")
	empty := writeFile(t, dir, "empty", "# nothing\n\n")
	unknown := writeFile(t, dir, "unknown.json", `{"listen": ":1", "colour": "blue"}`)
	badDur := writeFile(t, dir, "dur.json", `{"health_interval": 5}`)
	withBackends := writeFile(t, dir, "backends.json", `{"backends": [{"name": "a", "url": "http://127.0.0.1:1"}]}`)
	badListen := writeFile(t, dir, "listen.json", `{"listen": 8080}`)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-backend", "http://127.0.0.1:1"}, "-keys-file is required"},
		{[]string{"-keys-file", keys}, "no backends"},
		{[]string{"-keys-file", keys, "-backend", "ftp://x"}, "scheme must be http or https"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-failover", "maybe"}, "unknown failover mode"},
		{[]string{"-keys-file", short, "-backend", "http://127.0.0.1:1"}, "want at least 32"},
		{[]string{"-keys-file", empty, "-backend", "http://127.0.0.1:1"}, "holds no key"},
		{[]string{"-keys-file", filepath.Join(dir, "missing"), "-backend", "http://127.0.0.1:1"}, "no such file"},
		{[]string{"-config", unknown}, `unknown field "colour"`},
		{[]string{"-config", badDur}, "duration must be a string"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-tls-cert", "x"}, "go together"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-log-level", "loud"}, "bad -log-level"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "stray"}, "unexpected arguments"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-health-rise", "-1"}, "negative health rise"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-trusted-proxies", "10.0.0.0/8,lb.internal"}, `"lb.internal" is neither a CIDR nor an IP`},
		{[]string{"-keys-file", keys, "-backend", "a=http://127.0.0.1:1", "-weight", "b=2"}, "-weight names no -backend: b=2"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-access-log", filepath.Join(dir, "no", "dir", "a.log")}, "-access-log: open"},
		{[]string{"-keys-file", keys, "-backend", "a=http://127.0.0.1:1", "-weight", "a=0x"}, `weight of "a"`},
		{[]string{"-keys-file", keys, "-backend", "a=http://127.0.0.1:1", "-weight", "a=-1"}, "weight -1 out of range"},
		{[]string{"-config", withBackends, "-keys-file", keys, "-weight", "a=2"}, "give the config file's backends a \"weight\""},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-listen", "127.0.0.1:7", "-listen", "127.0.0.1:7"}, "-listen: 127.0.0.1:7 given twice"},
		{[]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-listen", ""}, "-listen: empty address"},
		{[]string{"-config", badListen}, "listen: want an address or a list of addresses"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			err := run(c.args, nil, nil)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

func TestFlagsWinOverTheFile(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.json", `{"listen": "127.0.0.1:1", "failover": "strict", "cookie_max_age": "2h",
		"backends": [{"name": "a", "url": "http://127.0.0.1:2"}], "admin": ""}`)
	o, err := parseOptions([]string{"-config", cfg, "-failover", "sticky"})
	require.NoError(t, err)
	require.Equal(t, listenList{"127.0.0.1:1"}, o.listen)
	require.Equal(t, "sticky", o.failover)
	require.Equal(t, 2*time.Hour, o.cookie.MaxAge)
	require.Equal(t, "", o.admin, "the file can disable the admin listener")
	require.Equal(t, []router.Backend{{Name: "a", URL: "http://127.0.0.1:2"}}, []router.Backend(o.backends))

	o, err = parseOptions([]string{"-config", cfg, "-backend", "b=http://127.0.0.1:3", "-backend", "http://127.0.0.1:4",
		"-weight", "http://127.0.0.1:4=5"})
	require.NoError(t, err)
	require.Equal(t, []router.Backend{{Name: "b", URL: "http://127.0.0.1:3"}, {URL: "http://127.0.0.1:4"}}, []router.Backend(o.backends))
	rc, err := o.routerConfig()
	require.Error(t, err, "no keys file")
	o.keysFile = writeFile(t, dir, "keys", strings.Repeat("k", 32)+"\n")
	rc, err = o.routerConfig()
	require.NoError(t, err)
	require.Equal(t, []router.Backend{{Name: "b", URL: "http://127.0.0.1:3"}, {URL: "http://127.0.0.1:4", Weight: 5}}, rc.Backends,
		"-weight names a backend by its URL when it has no name")

	o, err = parseOptions([]string{"-config", writeFile(t, dir, "w.json", `{"backends": [{"name": "a", "url": "http://127.0.0.1:2", "weight": 4}]}`)})
	require.NoError(t, err)
	require.Equal(t, []router.Backend{{Name: "a", URL: "http://127.0.0.1:2", Weight: 4}}, []router.Backend(o.backends))
}

func TestRunProxiesAndReloadsOnSIGHUP(t *testing.T) {
	backend := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Backend", name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := backend("a"), backend("b")
	dir := t.TempDir()
	keys := writeFile(t, dir, "keys", key1+"\n")
	conf := func(urls ...string) string {
		var bs []router.Backend
		for i, u := range urls {
			bs = append(bs, router.Backend{Name: fmt.Sprint("ab"[i : i+1]), URL: u})
		}
		raw, _ := json.Marshal(map[string]any{"backends": bs, "keys_file": keys, "listen": "127.0.0.1:0",
			"admin": "127.0.0.1:0", "health_interval": "10ms", "log_level": "error", "access_log": filepath.Join(dir, "access.log")})
		return string(raw)
	}
	cfg := writeFile(t, dir, "c.json", conf(a.URL))

	sigs := make(chan os.Signal, 1)
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-config", cfg}, sigs, func(p []string, adm string) { addrs <- [2]string{p[0], adm} })
	}()
	var ad [2]string
	select {
	case ad = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("http://" + ad[0])
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "a", resp.Header.Get("X-Backend"))
	require.NotEmpty(t, resp.Cookies())

	backends := func() int {
		resp, err := hc.Get("http://" + ad[1] + "/backends")
		require.NoError(t, err)
		defer resp.Body.Close()
		var list []router.BackendStatus
		body, _ := io.ReadAll(resp.Body)
		require.NoError(t, json.Unmarshal(body, &list))
		return len(list)
	}
	require.Equal(t, 1, backends())

	// The proxied request is in the access log; a rotator moves the file,
	// and after SIGHUP the router writes a new one.
	logged := func(path string) string {
		raw, _ := os.ReadFile(path)
		return string(raw)
	}
	accessLog := filepath.Join(dir, "access.log")
	require.Eventually(t, func() bool { return strings.Contains(logged(accessLog), `"outcome":"new"`) }, 5*time.Second, time.Millisecond)
	require.Contains(t, logged(accessLog), `"backend":"a"`)
	require.NoError(t, os.Rename(accessLog, accessLog+".1"))

	writeFile(t, dir, "c.json", conf(a.URL, b.URL))
	writeFile(t, dir, "keys", key2+"\n"+key1+"\n")
	sigs <- syscall.SIGHUP
	// The access log is reopened before the backends are applied: with two
	// backends listed, the new file is in use.
	require.Eventually(t, func() bool { return backends() == 2 }, 5*time.Second, 5*time.Millisecond)
	resp, err = hc.Get("http://" + ad[0] + "/after-rotation")
	require.NoError(t, err)
	resp.Body.Close()
	require.Eventually(t, func() bool { return strings.Contains(logged(accessLog), `"uri":"/after-rotation"`) }, 5*time.Second, time.Millisecond)
	require.NotContains(t, logged(accessLog+".1"), "/after-rotation")

	// A broken file changes nothing.
	writeFile(t, dir, "c.json", "{")
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGTERM
	require.NoError(t, <-done)
}

func TestEveryConfigFileSettingHasAFlag(t *testing.T) {
	fs := newFlagSet(&options{})
	for _, f := range reflect.VisibleFields(reflect.TypeFor[fileConfig]()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "backends" {
			name = "backend"
		}
		require.NotNil(t, fs.Lookup(flagName(name)), "config file setting %q has no flag -%s", name, flagName(name))
	}
}

// A reload applies the file's backends only when no -backend flag gave
// them, as at start, and warns of the other settings that changed.
func TestReloadWarnsOfSettingsItDoesNotApply(t *testing.T) {
	dir := t.TempDir()
	keys := writeFile(t, dir, "keys", key1+"\n")
	conf := func(listen, failover, backendURL string) string {
		return fmt.Sprintf(`{"keys_file": %q, "listen": %q, "failover": %q, "backends": [{"name": "f", "url": %q}]}`, keys, listen, failover, backendURL)
	}
	for _, tc := range []struct {
		name         string
		flags        []string
		wantBackends []string // after the reload
	}{
		{"backends from the file", nil, []string{"f", "g"}},
		{"backends from -backend", []string{"-backend", "flag=http://127.0.0.1:3"}, []string{"flag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, dir, "c.json", conf(":1", "sticky", "http://127.0.0.1:1"))
			o, err := parseOptions(append([]string{"-config", cfg, "-failover", "strict"}, tc.flags...))
			require.NoError(t, err)
			rc, err := o.routerConfig()
			require.NoError(t, err)
			rt, err := router.New(rc)
			require.NoError(t, err)
			defer rt.Close(context.Background())

			// listen changed, failover changed but -failover wins anyway.
			writeFile(t, dir, "c.json", strings.Replace(conf(":2", "temporary", "http://127.0.0.1:1"), `]}`,
				`, {"name": "g", "url": "http://127.0.0.1:2"}]}`, 1))
			var out bytes.Buffer
			log := zerolog.New(&out)
			reload(o, rt, &log)
			var names []string
			for _, b := range rt.Backends() {
				names = append(names, b.Name)
			}
			require.ElementsMatch(t, tc.wantBackends, names)
			require.Contains(t, out.String(), `"settings":["listen"]`, "the one change that needs a restart: %s", out.String())
			require.NotContains(t, out.String(), `"level":"error"`)
		})
	}
}

// A listener that cannot be opened is an error from run, with nothing
// left running (TestMain checks for goroutines).
func TestRunFailsCleanlyWhenAnAddressIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	keys := writeFile(t, t.TempDir(), "keys", key1+"\n")
	base := []string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-log-level", "error"}
	for _, tc := range []struct{ flags []string }{
		{[]string{"-listen", taken.Addr().String(), "-admin", "127.0.0.1:0"}},
		{[]string{"-listen", "127.0.0.1:0", "-listen", taken.Addr().String(), "-admin", "127.0.0.1:0"}},
		{[]string{"-listen", "127.0.0.1:0", "-admin", taken.Addr().String()}},
	} {
		sigs := make(chan os.Signal)
		err := run(append(base, tc.flags...), sigs, func([]string, string) { t.Error("run served") })
		require.ErrorContains(t, err, "address already in use", "%v", tc.flags)
	}
}

// Several -listen addresses (or a list in the file) are served alike: a
// cookie from one routes the same on the other.
func TestSeveralListenAddresses(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "c.json", `{"listen": ["127.0.0.1:0", "[::1]:0"]}`)
	o, err := parseOptions([]string{"-config", conf})
	require.NoError(t, err)
	require.Equal(t, listenList{"127.0.0.1:0", "[::1]:0"}, o.listen, "the file's list")
	o, err = parseOptions([]string{"-config", conf, "-listen", "127.0.0.1:1"})
	require.NoError(t, err)
	require.Equal(t, listenList{"127.0.0.1:1"}, o.listen, "the flag wins")
	o, err = parseOptions(nil)
	require.NoError(t, err)
	require.Equal(t, listenList{defaultListen}, o.listen)

	backend := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Backend", name)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	keys := writeFile(t, dir, "keys", key1+"\n")
	s := startRun(t, "-keys-file", keys, "-backend", "a="+backend("a"), "-backend", "b="+backend("b"),
		"-listen", "127.0.0.1:0", "-listen", "127.0.0.1:0", "-admin", "", "-log-level", "error")
	defer func() { require.NoError(t, s.stop(t)) }()
	require.Len(t, s.proxies, 2)
	require.NotEqual(t, s.proxies[0], s.proxies[1])

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	get := func(addr, cookie string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		require.NoError(t, err)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	first := get(s.proxies[0], "")
	require.Len(t, first.Cookies(), 1)
	cookie := first.Cookies()[0].String()
	for range 5 {
		for _, addr := range s.proxies {
			require.Equal(t, first.Header.Get("X-Backend"), get(addr, cookie).Header.Get("X-Backend"), addr)
		}
	}
}
