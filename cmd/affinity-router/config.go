package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/affinity-go/affinity/router"
)

// duration is a time.Duration that reads "2s" style strings from JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"2s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// fileConfig is the JSON config file. Every field has a flag of the same
// meaning; flags given on the command line win over the file.
type fileConfig struct {
	Listen             listenList       `json:"listen"`
	Admin              *string          `json:"admin"`
	TLSCert            string           `json:"tls_cert"`
	TLSKey             string           `json:"tls_key"`
	KeysFile           string           `json:"keys_file"`
	Backends           []router.Backend `json:"backends"`
	Failover           string           `json:"failover"`
	CookieName         string           `json:"cookie_name"`
	CookieMaxAge       duration         `json:"cookie_max_age"`
	CookieSecure       bool             `json:"cookie_secure"`
	HealthPath         string           `json:"health_path"`
	HealthInterval     duration         `json:"health_interval"`
	HealthTimeout      duration         `json:"health_timeout"`
	HealthRise         int              `json:"health_rise"`
	HealthFall         int              `json:"health_fall"`
	MaxConnsPerBackend int              `json:"max_conns_per_backend"`
	QueueTimeout       duration         `json:"queue_timeout"`
	LogLevel           string           `json:"log_level"`

	AdminTokenFile        string   `json:"admin_token_file"`
	AdminHosts            []string `json:"admin_hosts"`
	TrustedProxies        []string `json:"trusted_proxies"`
	PreserveHost          bool     `json:"preserve_host"`
	Forwarded             bool     `json:"forwarded"`
	AccessLog             string   `json:"access_log"`
	ResponseHeaderTimeout duration `json:"response_header_timeout"`
	ReadHeaderTimeout     duration `json:"read_header_timeout"`
	IdleTimeout           duration `json:"idle_timeout"`
	BodyReadTimeout       duration `json:"body_read_timeout"`
	MinUploadRate         int      `json:"min_upload_rate"`
	MaxUpgradesPerBackend int      `json:"max_upgrades_per_backend"`
	UpgradeIdleTimeout    duration `json:"upgrade_idle_timeout"`
	MaxSessions           int      `json:"max_sessions"`
	ShutdownGrace         duration `json:"shutdown_grace"`
	GCHeapFloorMiB        *int     `json:"gc_heap_floor_mib"`
}

func readFileConfig(path string) (*fileConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return &fc, nil
}

// readKeys reads one key per line; blank lines and lines starting with #
// are skipped. The first key signs.
func readKeys(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		keys = append(keys, []byte(line))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s holds no key", path)
	}
	return keys, nil
}

// readToken reads the admin bearer token: the file's content, trimmed.
func readToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
}

// commaList is a comma-separated list flag: -admin-hosts, -trusted-proxies.
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }

func (l *commaList) Set(v string) error {
	for _, h := range strings.Split(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			*l = append(*l, h)
		}
	}
	return nil
}

// listenList is the repeatable -listen flag, and the file's "listen": an
// address or a list of them.
type listenList []string

func (l *listenList) String() string { return strings.Join(*l, ",") }

func (l *listenList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func (l *listenList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = listenList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("listen: want an address or a list of addresses")
	}
	*l = many
	return nil
}

// check refuses an empty or repeated address: a second listener on the
// same address could never open (port 0, any free port, may repeat).
func (l listenList) check() error {
	seen := make(map[string]bool, len(l))
	for _, a := range l {
		_, port, _ := net.SplitHostPort(a)
		switch {
		case a == "":
			return errors.New("-listen: empty address")
		case seen[a] && port != "0":
			return fmt.Errorf("-listen: %s given twice", a)
		}
		seen[a] = true
	}
	return nil
}

// backendList is the repeatable -backend flag: "url" or "name=url".
type backendList []router.Backend

func (l *backendList) String() string {
	var s []string
	for _, b := range *l {
		s = append(s, b.Name+"="+b.URL)
	}
	return strings.Join(s, ",")
}

func (l *backendList) Set(v string) error {
	name, u, found := strings.Cut(v, "=")
	if !found || strings.Contains(name, "/") {
		name, u = "", v
	}
	if u == "" {
		return errors.New("empty backend URL")
	}
	*l = append(*l, router.Backend{Name: name, URL: u})
	return nil
}

// weightList is the repeatable -weight flag: "name=N", the name as -backend
// gives it (the URL when it gives none).
type weightList map[string]int

func (l *weightList) String() string {
	var s []string
	for name, w := range *l {
		s = append(s, name+"="+strconv.Itoa(w))
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (l *weightList) Set(v string) error {
	i := strings.LastIndex(v, "=")
	if i <= 0 {
		return fmt.Errorf("want name=weight, got %q", v)
	}
	w, err := strconv.Atoi(v[i+1:])
	if err != nil {
		return fmt.Errorf("weight of %q: %w", v[:i], err)
	}
	if *l == nil {
		*l = weightList{}
	}
	(*l)[v[:i]] = w
	return nil
}

// apply sets the weights on bs, which must name every weighted backend.
func (l weightList) apply(bs []router.Backend) error {
	left := maps.Clone(l)
	for i := range bs {
		name := cmp.Or(bs[i].Name, bs[i].URL)
		if w, ok := l[name]; ok {
			bs[i].Weight = w
			delete(left, name)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("-weight names no -backend: %s", left.String())
	}
	return nil
}

// options is everything main needs, from flags and the config file.
type options struct {
	configFile string
	listen     listenList
	admin      string
	tlsCert    string
	tlsKey     string
	keysFile   string
	backends   backendList
	weights    weightList
	failover   string
	cookie     router.CookieConfig
	health     router.HealthConfig
	maxConns   int
	queueTO    time.Duration
	logLevel   string

	adminTokenFile   string
	adminHosts       commaList
	trustedProxies   commaList
	responseHeaderTO time.Duration
	readHeaderTO     time.Duration
	idleTO           time.Duration
	bodyReadTO       time.Duration
	minUploadRate    int
	maxUpgrades      int
	upgradeIdleTO    time.Duration
	maxSessions      int
	shutdownGrace    time.Duration
	gcHeapFloorMiB   int
	preserveHost     bool
	forwarded        bool
	accessLog        string
	backendsFromFile bool // no -backend flag: the backends are the file's

	fileConfig *fileConfig     // the config file as read at start, nil without one
	flagsSet   map[string]bool // the flags given on the command line
}

// Defaults of the HTTP server settings, which the router package leaves to
// its embedder.
const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultIdleTimeout       = 60 * time.Second
	defaultShutdownGrace     = 30 * time.Second
	defaultGCHeapFloorMiB    = 64
	defaultListen            = ":8080"
)

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("affinity-router", flag.ContinueOnError)
	fs.StringVar(&o.configFile, "config", "", "JSON config file (fields as the flags, snake_case; flags win). Backends (unless -backend gives them), keys and the admin token are re-read on SIGHUP; other changes are logged as needing a restart")
	fs.Var(&o.listen, "listen", "`address` to serve proxied traffic on (default "+defaultListen+"); repeat for several, all served alike")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9090", "address of the admin listener (/healthz, /metrics, /backends, the live page on /ui/); empty disables it. Keep it private; see -admin-token-file")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin API's bearer token (at least 16 bytes), re-read on SIGHUP; every admin request but GET /healthz must then send \"Authorization: Bearer <token>\"")
	fs.Var(&o.adminHosts, "admin-hosts", "comma-separated `names` (or name:port) the admin API may be reached by besides loopback names and the -admin host; requests with any other Host header are refused (DNS rebinding)")
	fs.Var(&o.trustedProxies, "trusted-proxies", "comma-separated `CIDRs` or IPs of the proxies in front of the router (load balancers, CDNs) whose X-Forwarded-For, -Host and -Proto it passes on, appending the peer to X-Forwarded-For; from any other peer the three are replaced. An X-Forwarded-Proto of https from them makes the cookie Secure")
	fs.StringVar(&o.accessLog, "access-log", "", "write one JSON line per request to this `file` (\"-\": stdout), reopened on SIGHUP for log rotation: client, method, host, uri, status, bytes, duration_ms, backend, outcome; empty: none")
	fs.BoolVar(&o.forwarded, "forwarded", false, "also send backends the standard Forwarded header (RFC 7239): for, host and proto of the router's hop, after the incoming elements from -trusted-proxies")
	fs.BoolVar(&o.preserveHost, "preserve-host", false, "send backends the client's Host header instead of the backend URL's host (X-Forwarded-Host carries it either way)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve TLS with this certificate file (cookies are then Secure); it and -tls-key are re-read on SIGHUP, for renewed certificates")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key file for -tls-cert")
	fs.StringVar(&o.keysFile, "keys-file", "", fmt.Sprintf("file with the cookie HMAC keys, one per line, each at least %d bytes; the first signs, all verify (rotation). Required", router.MinKeyLen))
	fs.Var(&o.backends, "backend", "backend `URL` or name=URL; repeat for each backend. The name (default: the URL) is what cookies hash on: routers that must agree need the same names")
	fs.Var(&o.weights, "weight", fmt.Sprintf("`name=N`: a -backend's share of sessions relative to the others' (default 1, at most %d); repeat for each. Backends from the config file take \"weight\" in their entries", router.MaxWeight))
	fs.StringVar(&o.failover, "failover", "temporary", "what a session does while its backend is down: temporary (serve elsewhere, return when healthy), sticky (move for good) or strict (503)")
	fs.StringVar(&o.cookie.Name, "cookie-name", router.DefaultCookieName, "name of the affinity cookie")
	fs.DurationVar(&o.cookie.MaxAge, "cookie-max-age", router.DefaultCookieMaxAge, "lifetime of the affinity cookie (Max-Age, also checked on read)")
	fs.BoolVar(&o.cookie.Secure, "cookie-secure", false, "mark the cookie Secure even on plain HTTP (e.g. behind a TLS-terminating balancer)")
	fs.StringVar(&o.health.Path, "health-path", router.DefaultHealthPath, "path of the active health check (GET; 2xx or 3xx is healthy)")
	fs.DurationVar(&o.health.Interval, "health-interval", router.DefaultHealthInterval, "time between active health checks")
	fs.DurationVar(&o.health.Timeout, "health-timeout", router.DefaultHealthTimeout, "timeout of one health check")
	fs.IntVar(&o.health.Rise, "health-rise", router.DefaultRise, "good checks in a row that bring a backend up")
	fs.IntVar(&o.health.Fall, "health-fall", router.DefaultFall, "failed checks in a row that take a backend down (a refused connection takes it down at once)")
	fs.IntVar(&o.maxConns, "max-conns-per-backend", router.DefaultMaxConnsPerBackend, "concurrent requests per backend; more wait in FIFO order")
	fs.DurationVar(&o.queueTO, "queue-timeout", router.DefaultQueueTimeout, "how long a request waits for a backend connection slot before 503")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&o.responseHeaderTO, "response-header-timeout", router.DefaultResponseHeaderTimeout, "how long to wait for a backend's response headers before 504; each timeout counts as one failed health check toward -health-fall")
	fs.DurationVar(&o.readHeaderTO, "read-header-timeout", defaultReadHeaderTimeout, "how long a client may take to send its request headers")
	fs.DurationVar(&o.idleTO, "idle-timeout", defaultIdleTimeout, "how long an idle keep-alive client connection is kept open")
	fs.DurationVar(&o.bodyReadTO, "body-read-timeout", router.DefaultBodyReadTimeout, "longest wait for the next bytes of a request body before 408 (so stalled uploads free their backend slot)")
	fs.IntVar(&o.minUploadRate, "min-upload-rate", router.DefaultMinUploadRate, "lowest average request body rate in bytes/s, after one -body-read-timeout of grace, before 408; negative disables")
	fs.IntVar(&o.maxUpgrades, "max-upgrades-per-backend", router.DefaultMaxUpgradesPerBackend, "upgraded connections (WebSockets) per backend, apart from -max-conns-per-backend; more get 503")
	fs.DurationVar(&o.upgradeIdleTO, "upgrade-idle-timeout", router.DefaultUpgradeIdleTimeout, "close an upgraded connection (WebSocket) with no traffic either way for this long")
	fs.IntVar(&o.maxSessions, "max-sessions", router.DefaultMaxSessions, "client sessions tracked with their own session actor (memory bound); beyond it, routing is unchanged and the refusal is counted")
	fs.IntVar(&o.gcHeapFloorMiB, "gc-heap-floor-mib", defaultGCHeapFloorMiB, "MiB the Go heap may grow by between garbage collections however small the live heap is (the floor itself is never touched: no resident memory); 0 leaves Go's default, which collects every few MB at the router's usual heap size")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", defaultShutdownGrace, "on SIGTERM/SIGINT, how long running requests may take to finish; WebSockets get a close frame and up to a second to answer it. Exit status 0 after a clean drain")
	return fs
}

// parseOptions parses args, then fills what no flag set from the config
// file.
func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "affinity-router: HTTP reverse proxy with signed-cookie session affinity.\n\nUsage: affinity-router -keys-file FILE -backend URL [-backend URL ...] [flags]\n   or: affinity-router -config FILE [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (backends are given with -backend)", fs.Args())
	}
	if o.configFile != "" {
		fc, err := readFileConfig(o.configFile)
		if err != nil {
			return nil, err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.merge(fc, set)
		o.fileConfig, o.flagsSet = fc, set
	}
	if len(o.listen) == 0 {
		o.listen = listenList{defaultListen}
	}
	if err := o.listen.check(); err != nil {
		return nil, err
	}
	return o, nil
}

// restartOnly names the settings (as the file spells them) that differ
// between the config file read at start and cur and that no flag
// overrides, leaving out the backends, which a reload applies: they take
// effect only on a restart.
func (o *options) restartOnly(cur *fileConfig) []string {
	if o.fileConfig == nil {
		return nil
	}
	was, now := reflect.ValueOf(o.fileConfig).Elem(), reflect.ValueOf(cur).Elem()
	var names []string
	for _, f := range reflect.VisibleFields(was.Type()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "backends" || o.flagsSet[flagName(name)] {
			continue
		}
		if !reflect.DeepEqual(was.FieldByIndex(f.Index).Interface(), now.FieldByIndex(f.Index).Interface()) {
			names = append(names, name)
		}
	}
	return names
}

// flagName is the flag of a config file setting: "keys_file" is -keys-file.
func flagName(setting string) string { return strings.ReplaceAll(setting, "_", "-") }

func (o *options) merge(fc *fileConfig, set map[string]bool) {
	str := func(flag string, dst *string, v string) {
		if !set[flag] && v != "" {
			*dst = v
		}
	}
	dur := func(flag string, dst *time.Duration, v duration) {
		if !set[flag] && v != 0 {
			*dst = time.Duration(v)
		}
	}
	num := func(flag string, dst *int, v int) {
		if !set[flag] && v != 0 {
			*dst = v
		}
	}
	if !set["listen"] && len(fc.Listen) > 0 {
		o.listen = fc.Listen
	}
	if !set["admin"] && fc.Admin != nil {
		o.admin = *fc.Admin
	}
	str("tls-cert", &o.tlsCert, fc.TLSCert)
	str("tls-key", &o.tlsKey, fc.TLSKey)
	str("keys-file", &o.keysFile, fc.KeysFile)
	if !set["backend"] {
		o.backends = fc.Backends
		o.backendsFromFile = true
	}
	str("failover", &o.failover, fc.Failover)
	str("cookie-name", &o.cookie.Name, fc.CookieName)
	dur("cookie-max-age", &o.cookie.MaxAge, fc.CookieMaxAge)
	if !set["cookie-secure"] && fc.CookieSecure {
		o.cookie.Secure = true
	}
	str("health-path", &o.health.Path, fc.HealthPath)
	dur("health-interval", &o.health.Interval, fc.HealthInterval)
	dur("health-timeout", &o.health.Timeout, fc.HealthTimeout)
	num("health-rise", &o.health.Rise, fc.HealthRise)
	num("health-fall", &o.health.Fall, fc.HealthFall)
	num("max-conns-per-backend", &o.maxConns, fc.MaxConnsPerBackend)
	dur("queue-timeout", &o.queueTO, fc.QueueTimeout)
	str("log-level", &o.logLevel, fc.LogLevel)
	str("admin-token-file", &o.adminTokenFile, fc.AdminTokenFile)
	str("access-log", &o.accessLog, fc.AccessLog)
	if !set["admin-hosts"] && len(fc.AdminHosts) > 0 {
		o.adminHosts = fc.AdminHosts
	}
	if !set["trusted-proxies"] && len(fc.TrustedProxies) > 0 {
		o.trustedProxies = fc.TrustedProxies
	}
	if !set["preserve-host"] && fc.PreserveHost {
		o.preserveHost = true
	}
	if !set["forwarded"] && fc.Forwarded {
		o.forwarded = true
	}
	dur("response-header-timeout", &o.responseHeaderTO, fc.ResponseHeaderTimeout)
	dur("read-header-timeout", &o.readHeaderTO, fc.ReadHeaderTimeout)
	dur("idle-timeout", &o.idleTO, fc.IdleTimeout)
	dur("body-read-timeout", &o.bodyReadTO, fc.BodyReadTimeout)
	num("min-upload-rate", &o.minUploadRate, fc.MinUploadRate)
	num("max-upgrades-per-backend", &o.maxUpgrades, fc.MaxUpgradesPerBackend)
	dur("upgrade-idle-timeout", &o.upgradeIdleTO, fc.UpgradeIdleTimeout)
	num("max-sessions", &o.maxSessions, fc.MaxSessions)
	dur("shutdown-grace", &o.shutdownGrace, fc.ShutdownGrace)
	if fc.GCHeapFloorMiB != nil && !set["gc-heap-floor-mib"] {
		o.gcHeapFloorMiB = *fc.GCHeapFloorMiB
	}
}

// routerConfig turns options into a router.Config, reading the keys.
func (o *options) routerConfig() (router.Config, error) {
	var errs []error
	if o.keysFile == "" {
		errs = append(errs, errors.New("-keys-file is required"))
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	fo, err := router.ParseFailover(o.failover)
	if err != nil {
		errs = append(errs, err)
	}
	var keys [][]byte
	if o.keysFile != "" {
		if keys, err = readKeys(o.keysFile); err != nil {
			errs = append(errs, err)
		}
	}
	var token string
	if o.adminTokenFile != "" {
		if token, err = readToken(o.adminTokenFile); err != nil {
			errs = append(errs, err)
		}
	}
	for name, d := range map[string]time.Duration{"read-header-timeout": o.readHeaderTO, "idle-timeout": o.idleTO, "shutdown-grace": o.shutdownGrace} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %v", name, d))
		}
	}
	if o.gcHeapFloorMiB < 0 {
		errs = append(errs, fmt.Errorf("-gc-heap-floor-mib must be 0 or more, got %d", o.gcHeapFloorMiB))
	}
	if len(o.weights) > 0 {
		if o.backendsFromFile {
			errs = append(errs, errors.New("-weight applies to -backend backends; give the config file's backends a \"weight\""))
		} else if err := o.weights.apply(o.backends); err != nil {
			errs = append(errs, err)
		}
	}
	trusted, err := parsePrefixes(o.trustedProxies)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return router.Config{}, errors.Join(errs...)
	}
	return router.Config{
		Backends:           o.backends,
		Keys:               keys,
		Cookie:             o.cookie,
		Failover:           fo,
		Health:             o.health,
		MaxConnsPerBackend: o.maxConns,
		QueueTimeout:       o.queueTO,

		ResponseHeaderTimeout: o.responseHeaderTO,
		BodyReadTimeout:       o.bodyReadTO,
		MinUploadRate:         o.minUploadRate,
		MaxUpgradesPerBackend: o.maxUpgrades,
		UpgradeIdleTimeout:    o.upgradeIdleTO,
		MaxSessions:           o.maxSessions,
		TrustedProxies:        trusted,
		PreserveHost:          o.preserveHost,
		Forwarded:             o.forwarded,
		Admin:                 router.AdminConfig{Token: token, Hosts: o.adminHostNames()},
	}, nil
}

// parsePrefixes reads -trusted-proxies: CIDRs, or IPs meaning just
// themselves.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range list {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p)
		} else if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			return nil, fmt.Errorf("-trusted-proxies: %q is neither a CIDR nor an IP", v)
		}
	}
	return out, nil
}

// adminHostNames are the Host values the admin API accepts besides loopback
// names: -admin-hosts, and the -admin address itself unless it is a
// wildcard (then only the names given can be trusted).
func (o *options) adminHostNames() []string {
	hosts := append([]string(nil), o.adminHosts...)
	if host, _, err := net.SplitHostPort(o.admin); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, o.admin)
		}
	}
	return hosts
}
