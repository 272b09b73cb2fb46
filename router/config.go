package router

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"
)

// Failover says what happens to a session whose home backend is down.
type Failover uint8

const (
	// Temporary (the default, as on Heroku) serves the session elsewhere
	// while its home backend is down and sends it home once it is healthy.
	Temporary Failover = iota
	// Sticky moves the session for good: it stays on the backend it failed
	// over to, even after its old home recovers.
	Sticky
	// Strict answers 503 while the home backend is down: the session's state
	// lives there and nowhere else.
	Strict
)

var failoverNames = [...]string{Temporary: "temporary", Sticky: "sticky", Strict: "strict"}

// ErrInvalidFailover is returned for an unknown failover mode.
var ErrInvalidFailover = errors.New("unknown failover mode")

func (f Failover) String() string {
	if int(f) < len(failoverNames) {
		return failoverNames[f]
	}
	return fmt.Sprintf("Failover(%d)", uint8(f))
}

// ParseFailover parses "temporary", "sticky" or "strict".
func ParseFailover(s string) (Failover, error) {
	for f, name := range failoverNames {
		if s == name {
			return Failover(f), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want temporary, sticky or strict)", ErrInvalidFailover, s)
}

// Backend is one upstream HTTP server.
type Backend struct {
	// Name identifies the backend in cookies' hashing, metrics and the admin
	// API. Routers that must agree on every cookie need the same names.
	// Default: the URL as given.
	Name string `json:"name,omitempty"`
	// URL is the backend's base URL, http or https (e.g. http://10.0.0.5:8080).
	URL string `json:"url"`
	// Weight is the backend's share of sessions relative to the others':
	// one of weight 2 is home to twice as many as one of weight 1. 0 means
	// 1; at most MaxWeight. Routers that must agree need the same weights.
	Weight int `json:"weight,omitempty"`
}

// MaxWeight is the largest backend weight.
const MaxWeight = 1000

// CookieConfig configures the affinity cookie.
type CookieConfig struct {
	// Name of the cookie. Default "affinity".
	Name string
	// MaxAge is the cookie's lifetime, also enforced on read from the
	// signed issue time. Default 24 h. A cookie older than half of it is
	// re-issued, so an active client keeps its session.
	MaxAge time.Duration
	// Secure marks the cookie Secure on every response; it is always Secure
	// on requests that arrived over TLS.
	Secure bool
	// Path and Domain of the cookie. Path defaults to "/".
	Path, Domain string
}

// HealthConfig configures health checks. A refused connection (or a dial
// timeout) marks a backend down at once; a response timeout counts as one
// failed check toward Fall, so one slow response cannot evict a backend.
// Good active checks bring it back.
type HealthConfig struct {
	// Path is requested with GET on every backend; 2xx and 3xx are healthy.
	// Default "/".
	Path string
	// Interval between checks. Default 2 s.
	Interval time.Duration
	// Timeout of one check. Default 1 s.
	Timeout time.Duration
	// Rise is how many consecutive good checks bring a backend up; Fall how
	// many bad ones take it down. Defaults 2 and 2.
	Rise, Fall int
}

// AdminConfig secures the admin API. Whatever it holds, the admin API
// answers only requests whose Host is a loopback name (localhost,
// 127.0.0.1, [::1], any port) or one of Hosts, refuses a cross-origin
// Origin (or Sec-Fetch-Site), and requires Content-Type application/json on
// requests that change something. Those checks stop a web page in an
// operator's browser from driving it (cross-site requests, DNS rebinding);
// Token also stops anyone else who can reach the port.
type AdminConfig struct {
	// Token, when set, must come as "Authorization: Bearer <token>" on
	// every admin request except GET /healthz. At least MinAdminTokenLen
	// bytes.
	Token string
	// Hosts are further accepted Host header values, "name" (any port) or
	// "name:port": the names the admin listener is reached by.
	Hosts []string
}

// MinAdminTokenLen is the shortest accepted admin token.
const MinAdminTokenLen = 16

// Config configures a Router. Backends and Keys are required.
type Config struct {
	Backends []Backend
	// Keys sign and verify cookies: Keys[0] signs, every key verifies, so a
	// new key can be rolled out first in second place, then promoted. Each
	// key is at least MinKeyLen bytes.
	Keys     [][]byte
	Cookie   CookieConfig
	Failover Failover
	Health   HealthConfig

	// MaxConnsPerBackend caps concurrent requests to one backend; more wait
	// (FIFO) up to QueueTimeout. Default 1024.
	MaxConnsPerBackend int
	// QueueSize caps waiting requests across all backends. Default 1024.
	QueueSize int
	// QueueTimeout bounds the wait for a backend connection slot. Default 5 s.
	QueueTimeout time.Duration
	// MaxIdleConnsPerBackend is the keep-alive pool per backend. Default 256.
	MaxIdleConnsPerBackend int
	// DialTimeout bounds connecting to a backend. Default 2 s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a backend's response
	// headers; the client gets 504 and the timeout counts as one failed
	// health check (Health.Fall in a row take the backend down). Default 30 s.
	ResponseHeaderTimeout time.Duration
	// BodyReadTimeout is the longest wait for the next bytes of a request
	// body. A client that stalls longer gets 408 and frees the backend's
	// request slot. Default 30 s.
	BodyReadTimeout time.Duration
	// MinUploadRate is the lowest average rate, in bytes per second, of a
	// request body, counting only the time spent waiting for the client and
	// after a grace of one BodyReadTimeout; slower uploads get 408. It stops
	// a trickling upload from holding a request slot for hours. Default 256;
	// negative disables the check.
	MinUploadRate int
	// MaxUpgradesPerBackend caps upgraded connections (WebSocket and other
	// Upgrade tunnels) per backend. They do not hold one of the backend's
	// MaxConnsPerBackend request slots: idle WebSockets cannot starve
	// ordinary requests. Beyond the cap an upgrade gets 503. Default 1024.
	MaxUpgradesPerBackend int
	// UpgradeIdleTimeout closes an upgraded connection with no traffic in
	// either direction for this long. Default 10 min.
	UpgradeIdleTimeout time.Duration
	// SessionIdleTTL ends idle session actors (their routing lives in the
	// cookie, so this only bounds memory). Default 10 min.
	SessionIdleTTL time.Duration
	// MaxSessions caps the client sessions that get their own session actor
	// (about 330 B each for SessionIdleTTL). Beyond it a returning client's
	// requests run in the shared session actor of new clients: routing is
	// unchanged, since it lives in the cookie, and the refusal is counted.
	// Default 100,000.
	MaxSessions int
	// TrustedProxies are the peers (load balancers, CDNs) whose forwarding
	// headers the router believes. From a peer in one of these prefixes the
	// backend gets the incoming X-Forwarded-For with the peer appended, and
	// the incoming X-Forwarded-Host and X-Forwarded-Proto when set (a Proto
	// of https also makes the cookie Secure). From any other peer the three
	// are replaced with what the router saw. Default: none.
	TrustedProxies []netip.Prefix
	// Forwarded also sends the standard Forwarded header (RFC 7239): the
	// router's hop as for=<peer>;host=<Host>;proto=<http|https>, after the
	// incoming elements when the peer is in TrustedProxies (from any other
	// peer they are dropped, as always without this option).
	Forwarded bool
	// PreserveHost sends the backend the client's Host header instead of
	// the backend URL's host, for backends that serve several sites or
	// build absolute URLs from Host (X-Forwarded-Host carries it either
	// way). Health checks still use the URL's host.
	PreserveHost bool
	// Admin secures AdminHandler.
	Admin AdminConfig
	// Transport overrides the transport to backends (for tests); the
	// connection settings above then do not apply, and every request goes
	// through it (no fast path: see fastpath.go).
	Transport http.RoundTripper
	// Logger receives the router's logs. Nil: silent.
	Logger *zerolog.Logger
	// AccessLog, when set, gets one info event per request once it is
	// answered: client, method, host, uri, proto, status (0: the client
	// left before any), bytes (of the body), duration_ms, and backend and
	// outcome (hit, new, fallback, return, rebind) once it was routed.
	// Nil: none (it costs a ResponseWriter wrapper and an event a request).
	AccessLog *zerolog.Logger
}

// MinKeyLen is the shortest accepted cookie key.
const MinKeyLen = 32

// Defaults for zero-valued fields.
const (
	DefaultCookieName             = "affinity"
	DefaultCookieMaxAge           = 24 * time.Hour
	DefaultHealthPath             = "/"
	DefaultHealthInterval         = 2 * time.Second
	DefaultHealthTimeout          = time.Second
	DefaultRise                   = 2
	DefaultFall                   = 2
	DefaultMaxConnsPerBackend     = 1024
	DefaultQueueSize              = 1024
	DefaultQueueTimeout           = 5 * time.Second
	DefaultMaxIdleConnsPerBackend = 256
	DefaultDialTimeout            = 2 * time.Second
	DefaultResponseHeaderTimeout  = 30 * time.Second
	DefaultBodyReadTimeout        = 30 * time.Second
	DefaultMinUploadRate          = 256
	DefaultMaxUpgradesPerBackend  = 1024
	DefaultUpgradeIdleTimeout     = 10 * time.Minute
	DefaultSessionIdleTTL         = 10 * time.Minute
	DefaultMaxSessions            = 100_000
)

// ErrInvalidConfig wraps every configuration error.
var ErrInvalidConfig = errors.New("affinity router: invalid config")

// validated fills defaults and reports every problem at once.
func (c Config) validated() (Config, []*backendSpec, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Backends) == 0 {
		bad("no backends configured")
	}
	specs, backendErrs := parseBackends(c.Backends)
	errs = append(errs, backendErrs...)
	if err := validateKeys(c.Keys); err != nil {
		bad("%v", err)
	}
	if c.Failover > Strict {
		bad("%v", fmt.Errorf("%w %d", ErrInvalidFailover, uint8(c.Failover)))
	}

	ck := &c.Cookie
	if ck.Name == "" {
		ck.Name = DefaultCookieName
	} else if !validCookieName(ck.Name) {
		bad("cookie name %q is not a valid HTTP token", ck.Name)
	}
	if ck.MaxAge < 0 {
		bad("negative cookie max age %v", ck.MaxAge)
	} else if ck.MaxAge == 0 {
		ck.MaxAge = DefaultCookieMaxAge
	} else if ck.MaxAge < time.Second {
		bad("cookie max age %v below one second", ck.MaxAge)
	}
	if ck.Path == "" {
		ck.Path = "/"
	}

	h := &c.Health
	if h.Path == "" {
		h.Path = DefaultHealthPath
	} else if !strings.HasPrefix(h.Path, "/") {
		bad("health path %q must start with /", h.Path)
	}
	defDur(&h.Interval, DefaultHealthInterval, "health interval", bad)
	defDur(&h.Timeout, DefaultHealthTimeout, "health timeout", bad)
	defInt(&h.Rise, DefaultRise, "health rise", bad)
	defInt(&h.Fall, DefaultFall, "health fall", bad)

	defInt(&c.MaxConnsPerBackend, DefaultMaxConnsPerBackend, "max conns per backend", bad)
	defInt(&c.QueueSize, DefaultQueueSize, "queue size", bad)
	defInt(&c.MaxIdleConnsPerBackend, DefaultMaxIdleConnsPerBackend, "max idle conns per backend", bad)
	defDur(&c.QueueTimeout, DefaultQueueTimeout, "queue timeout", bad)
	defDur(&c.DialTimeout, DefaultDialTimeout, "dial timeout", bad)
	defDur(&c.ResponseHeaderTimeout, DefaultResponseHeaderTimeout, "response header timeout", bad)
	defDur(&c.SessionIdleTTL, DefaultSessionIdleTTL, "session idle TTL", bad)
	defDur(&c.BodyReadTimeout, DefaultBodyReadTimeout, "body read timeout", bad)
	defDur(&c.UpgradeIdleTimeout, DefaultUpgradeIdleTimeout, "upgrade idle timeout", bad)
	defInt(&c.MaxUpgradesPerBackend, DefaultMaxUpgradesPerBackend, "max upgrades per backend", bad)
	defInt(&c.MaxSessions, DefaultMaxSessions, "max sessions", bad)
	if c.MinUploadRate == 0 {
		c.MinUploadRate = DefaultMinUploadRate
	}
	trusted := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			bad("trusted proxy prefix %v is not valid", p)
			continue
		}
		trusted = append(trusted, p.Masked())
	}
	c.TrustedProxies = trusted
	if err := checkAdminToken(c.Admin.Token); err != nil {
		bad("%v", err)
	}
	for _, h := range c.Admin.Hosts {
		if h == "" || strings.ContainsAny(h, " \t/@") {
			bad("admin host %q is not a host or host:port", h)
		}
	}

	if len(errs) > 0 {
		return c, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return c, specs, nil
}

func defDur(d *time.Duration, def time.Duration, what string, bad func(string, ...any)) {
	switch {
	case *d < 0:
		bad("negative %s %v", what, *d)
	case *d == 0:
		*d = def
	}
}

func defInt(n *int, def int, what string, bad func(string, ...any)) {
	switch {
	case *n < 0:
		bad("negative %s %d", what, *n)
	case *n == 0:
		*n = def
	}
}

func validateKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("no cookie keys configured")
	}
	for i, k := range keys {
		if len(k) < MinKeyLen {
			return fmt.Errorf("cookie key %d is %d bytes, want at least %d", i, len(k), MinKeyLen)
		}
	}
	return nil
}

// backendSpec is a validated Backend.
type backendSpec struct {
	name   string
	url    *url.URL
	weight int
}

// parseBackends validates a backend list: each entry, and unique names.
func parseBackends(bs []Backend) ([]*backendSpec, []error) {
	var errs []error
	specs := make([]*backendSpec, 0, len(bs))
	seen := make(map[string]bool, len(bs))
	for i, b := range bs {
		s, err := parseBackend(b)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("backend %d: %w", i, err))
		case seen[s.name]:
			errs = append(errs, fmt.Errorf("backend %d: duplicate name %q", i, s.name))
		default:
			seen[s.name] = true
			specs = append(specs, s)
		}
	}
	return specs, errs
}

func parseBackend(b Backend) (*backendSpec, error) {
	if b.URL == "" {
		return nil, errors.New("empty URL")
	}
	u, err := url.Parse(b.URL)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %v", b.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("URL %q: scheme must be http or https", b.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("URL %q has no host", b.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("URL %q: no query, fragment or user info allowed", b.URL)
	}
	name := b.Name
	if name == "" {
		name = b.URL
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return nil, fmt.Errorf("name %q contains spaces or control characters", name)
		}
	}
	w, err := checkWeight(b.Weight)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", name, err)
	}
	return &backendSpec{name: name, url: u, weight: w}, nil
}

// checkAdminToken refuses a token too short to resist guessing ("" is no
// token).
func checkAdminToken(t string) error {
	if t != "" && len(t) < MinAdminTokenLen {
		return fmt.Errorf("admin token is %d bytes, want at least %d", len(t), MinAdminTokenLen)
	}
	return nil
}

// checkWeight returns weight w in effect (0 means 1), or an error when it
// is out of range.
func checkWeight(w int) (int, error) {
	if w == 0 {
		return 1, nil
	}
	if w < 0 || w > MaxWeight {
		return 0, fmt.Errorf("weight %d out of range 1..%d", w, MaxWeight)
	}
	return w, nil
}

func validCookieName(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return s != ""
}
