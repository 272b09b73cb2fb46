package router

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/affinity-go/affinity/admin"
)

// AdminHandler serves the admin API. Mount it on a separate, private
// listener. It checks every request as Config.Admin describes: Host a
// loopback name or one of Admin.Hosts, no cross-origin Origin, JSON on
// changes, and the bearer token when one is set.
//
//	GET    /healthz          200 if some backend is healthy, else 503
//	GET    /metrics          Prometheus text metrics
//	GET    /backends         the backends as JSON
//	POST   /backends         add {"name": "...", "url": "...", "weight": N}
//	PATCH  /backends/{name}  change its weight: {"weight": N}
//	DELETE /backends/{name}  remove a backend
//	GET    /ui/              the live page: backends, and the runtime's workers
//	POST   /ui/login         with a token set: the live page's cookie
//
// The live page is served under the same checks. With a token set, a
// browser gets a login form at /ui/, which trades the token for a cookie
// that opens the live page (GET and HEAD under /ui/) and nothing else.
func (r *Router) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		for _, b := range r.Backends() {
			if b.Healthy {
				_, _ = w.Write([]byte("ok\n"))
				return
			}
		}
		http.Error(w, "no healthy backend", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = r.WriteMetrics(w)
	})
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Backends())
	})
	mux.HandleFunc("POST /backends", func(w http.ResponseWriter, req *http.Request) {
		var b Backend
		dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := r.AddBackend(req.Context(), b); err != nil {
			adminError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, b)
	})
	mux.HandleFunc("PATCH /backends/{name...}", func(w http.ResponseWriter, req *http.Request) {
		var change struct {
			Weight int `json:"weight"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&change); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := r.SetWeight(req.Context(), req.PathValue("name"), change.Weight); err != nil {
			adminError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /backends/{name...}", func(w http.ResponseWriter, req *http.Request) {
		if err := r.RemoveBackend(req.Context(), req.PathValue("name")); err != nil {
			adminError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	outer := http.NewServeMux()
	outer.Handle("/", http.TimeoutHandler(mux, 30*time.Second, "admin request timed out\n"))
	// Not under the timeout: the page's event stream lasts as long as the page.
	if page, err := admin.New(admin.Config{Runtime: r.rt, Title: "affinity-router", Backends: r.pageBackends}); err == nil {
		r.upMu.Lock()
		r.pages = append(r.pages, page) // closed by Close
		r.upMu.Unlock()
		outer.Handle("GET /ui/", http.StripPrefix("/ui", page))
		outer.Handle("POST /ui/login", r.serveLogin())
	} else {
		r.log.Error().Err(err).Msg("live page unavailable")
	}
	return newAdminGuard(r, r.cfg.Admin.Hosts, outer)
}

// pageBackends lists the backends for the live page. A backend's sessions
// are the client sessions started with it as their home: the router keeps
// no list of the cookies out there, and a session's home only changes when
// backends are added or removed (or, sticky, when its home fails).
func (r *Router) pageBackends() []admin.Backend {
	t := r.tbl.Load()
	var total uint64
	for _, b := range t.backends {
		total += b.sessions.Load()
	}
	out := make([]admin.Backend, len(t.backends))
	for i, b := range t.backends {
		n := b.sessions.Load()
		out[i] = admin.Backend{URL: b.url.String(), Healthy: b.up.Load(), Weight: t.weights[i], Sessions: int(n),
			Fallbacks: b.fallbacks.Load(), Returns: b.returns.Load()}
		if total > 0 {
			out[i].Share = float64(n) / float64(total)
		}
	}
	return out
}

// adminGuard keeps web pages and strangers away from the admin API. A page
// in an operator's browser can send simple cross-origin requests (POST with
// text/plain, no preflight) to a loopback port, and through DNS rebinding
// even read the answers under its own host name. Requiring
// application/json forces a CORS preflight, which the API never grants;
// the Host check defeats rebinding; the Origin check refuses what a
// browser marks as cross-origin; the token, when set, refuses everyone else.
type adminGuard struct {
	next  http.Handler
	r     *Router         // its admin token, which SetAdminToken may change
	hosts map[string]bool // lower-case "name" or "name:port"
}

// adminAuth is the admin token in effect, swapped whole by SetAdminToken.
type adminAuth struct {
	sum      [sha256.Size]byte // of the token
	uiCookie string            // the live page's cookie for the token
}

func newAdminAuth(token string) *adminAuth {
	if token == "" {
		return nil
	}
	return &adminAuth{sum: sha256.Sum256([]byte(token)), uiCookie: uiCookieValue(token)}
}

func newAdminGuard(r *Router, hosts []string, next http.Handler) *adminGuard {
	g := &adminGuard{next: next, r: r, hosts: make(map[string]bool, len(hosts))}
	for _, h := range hosts {
		g.hosts[strings.ToLower(h)] = true
	}
	return g
}

func (g *adminGuard) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !g.hostAllowed(req.Host) {
		http.Error(w, "admin API: Host not accepted (a loopback name or a configured admin host)", http.StatusForbidden)
		return
	}
	if !sameOrigin(req) {
		http.Error(w, "admin API: cross-origin requests are refused", http.StatusForbidden)
		return
	}
	if auth := g.r.adminAuth.Load(); auth != nil && !g.authorized(auth, req) {
		if req.Method == http.MethodGet && req.URL.Path == "/ui/" {
			writeLoginPage(w)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="affinity-router admin"`)
		http.Error(w, "admin API: missing or wrong bearer token", http.StatusUnauthorized)
		return
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			http.Error(w, "admin API: requests that change something need Content-Type: application/json", http.StatusUnsupportedMediaType)
			return
		}
	}
	g.next.ServeHTTP(w, req)
}

// authorized reports whether req may pass with auth's token set: GET
// /healthz, the right bearer token, or a read of the live page with its
// cookie.
func (g *adminGuard) authorized(auth *adminAuth, req *http.Request) bool {
	if req.Method == http.MethodGet && req.URL.Path == "/healthz" {
		return true
	}
	sum := sha256.Sum256([]byte(bearer(req)))
	return subtle.ConstantTimeCompare(sum[:], auth.sum[:]) == 1 || pageCookieOK(auth, req)
}

// hostAllowed accepts loopback names on any port and the configured hosts.
func (g *adminGuard) hostAllowed(hostport string) bool {
	hostport = strings.ToLower(hostport)
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "localhost" || g.hosts[hostport] || g.hosts[host] {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin refuses requests a browser marks as coming from another
// origin. Clients that are not browsers send neither header.
func sameOrigin(req *http.Request) bool {
	switch req.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, req.Host)
}

func bearer(req *http.Request) string {
	scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

func adminError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalidConfig):
		code = http.StatusBadRequest
	case errors.Is(err, ErrBackendExists), errors.Is(err, ErrLastBackend):
		code = http.StatusConflict
	case errors.Is(err, ErrUnknownBackend):
		code = http.StatusNotFound
	case errors.Is(err, ErrClosed):
		code = http.StatusServiceUnavailable
	}
	http.Error(w, err.Error(), code)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
