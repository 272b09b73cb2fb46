package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// outcome is how a request was routed relative to its session's home.
type outcome uint8

const (
	outcomeHit      outcome = iota // served at home
	outcomeNew                     // new session: no, forged or expired cookie
	outcomeFallback                // home down: served elsewhere for now
	outcomeReturn                  // home back: served at home again after a fallback
	outcomeRebind                  // home down, sticky: moved for good
)

var (
	errNoBackend  = errors.New("no healthy backend")
	errStrictDown = errors.New("the session's backend is down and failover is strict")
)

// decision is where one request goes and which cookie it leaves with.
type decision struct {
	target    *backend
	tk        ticket
	setCookie bool
	outcome   outcome
}

// newSessionTries bounds how often a new session's id is redrawn to find
// one whose home is healthy (so a new client starts at home, not away).
const newSessionTries = 16

// stickyTries bounds the epochs tried to rehome a sticky session.
const stickyTries = 32

// decide routes a request carrying tk (state st) over table t. It is a pure
// function of the cookie, the backend names and their health.
func (r *Router) decide(t *table, tk ticket, st cookieState, now time.Time) (decision, error) {
	if len(t.backends) == 0 {
		return decision{}, errNoBackend
	}
	if st != cookieValid && st != cookieOldKey && st != cookieUnsent {
		return r.decideNew(t, now)
	}
	d := decision{tk: tk, outcome: outcomeHit}
	home := t.home(sessionKey(tk.sid, tk.epoch))
	switch {
	case home.up.Load():
		d.target = home
		if tk.away {
			d.tk.away, d.setCookie, d.outcome = false, true, outcomeReturn
		}
	case r.cfg.Failover == Strict:
		return decision{}, errStrictDown
	default:
		if r.cfg.Failover == Sticky {
			for i := 1; i <= stickyTries && d.target == nil; i++ {
				e := tk.epoch + uint8(i)
				if h := t.home(sessionKey(tk.sid, e)); h.up.Load() {
					d.target, d.tk.epoch, d.tk.away, d.setCookie, d.outcome = h, e, false, true, outcomeRebind
				}
			}
		}
		if d.target != nil {
			break
		}
		// Temporary, or sticky with nearly everything down: serve the
		// session at its next healthy choice without moving it.
		if d.target = t.bestUp(sessionKey(tk.sid, tk.epoch)); d.target == nil {
			return decision{}, errNoBackend
		}
		d.outcome = outcomeFallback
		if !tk.away {
			d.tk.away, d.setCookie = true, true
		}
	}
	maxAge := int64(r.cfg.Cookie.MaxAge / time.Second)
	if st != cookieValid || now.Unix()-tk.issued > maxAge/2 {
		d.setCookie = true // unsent, signed with an old key, or half expired
	}
	if d.setCookie {
		d.tk.issued = now.Unix()
	}
	return d, nil
}

// decideNew starts a session on a healthy backend with a free request
// slot: an existing session stays with its busy home, but a new one has no
// reason to queue behind it while another backend is idle.
func (r *Router) decideNew(t *table, now time.Time) (decision, error) {
	d := decision{setCookie: true, outcome: outcomeNew}
	d.tk.issued = now.Unix()
	var healthy *backend // a healthy home, full: the choice if all are full
	var healthySID [16]byte
	for i := 0; i < newSessionTries; i++ {
		d.tk.sid = newSessionID()
		h := t.home(sessionKey(d.tk.sid, 0))
		if !h.up.Load() {
			continue
		}
		if !r.full(h) {
			d.target = h
			return d, nil
		}
		if healthy == nil {
			healthy, healthySID = h, d.tk.sid
		}
	}
	if healthy != nil {
		d.target, d.tk.sid = healthy, healthySID
		return d, nil
	}
	if d.target = t.bestUp(sessionKey(d.tk.sid, 0)); d.target == nil {
		return decision{}, errNoBackend
	}
	d.tk.away = true
	return d, nil
}

// full reports whether b has a request in (or waiting for) each of its
// MaxConnsPerBackend slots.
func (r *Router) full(b *backend) bool {
	return b.inflight.Load() >= int64(r.cfg.MaxConnsPerBackend)
}

// cookieUnsent marks a ticket decided earlier in this request (before a
// retry): valid, but the client does not have it yet.
const cookieUnsent cookieState = 255

// maxAttempts bounds how many backends one request tries. Only requests
// that never reached a backend (connection refused) are retried.
const maxAttempts = 3

// ServeHTTP proxies req to its session's backend.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.m.requests.Add(1)
	now := time.Now()
	var rec *accessRecord
	if r.cfg.AccessLog != nil {
		var lw *loggedWriter
		w, lw = logged(w)
		rec = &accessRecord{start: now}
		defer r.logAccess(req, lw, rec) // runs on an aborting panic too
	}
	sg := r.signer.Load()
	fc, _ := req.Context().Value(frontConnKey{}).(*frontConn) // nil behind net/http's server
	tk, st := r.readCookie(req, sg, fc, now)
	if req.ProtoMajor == 1 && len(req.TransferEncoding) > 0 {
		// RFC 9112 section 6.1: after a request with both Content-Length and
		// Transfer-Encoding the connection must close. net/http deletes
		// Content-Length before a handler runs, so the router cannot tell
		// them apart and closes after every chunked HTTP/1 request (browsers
		// send Content-Length; chunked uploads are rare).
		w.Header().Set("Connection", "close")
	}
	upgrade := isUpgrade(req)
	var body *bodyReader
	if !upgrade && req.Body != nil && req.Body != http.NoBody {
		body = r.newBodyReader(w, req.Body)
		defer body.stop()
		req.Body = body
	}
	for attempt := 1; ; attempt++ {
		if r.closed.Load() {
			r.refuse(w, ErrClosed)
			return
		}
		d, err := r.decide(r.tbl.Load(), tk, st, now)
		if err != nil {
			r.refuse(w, err)
			return
		}
		r.countOutcome(d)
		if rec != nil {
			rec.backend, rec.outcome = d.target.name, d.outcome.String()
		}
		x := r.newExchange(d, w, req, body, upgrade, sg, fc)
		if upgrade {
			err = r.runUpgrade(req.Context(), x)
		} else {
			err = r.runInSession(req.Context(), x, d, now, fc)
		}
		if err == nil {
			if rec != nil {
				rec.upgraded = upgrade
			}
			return
		}
		if errors.Is(err, errRetry) && attempt < maxAttempts {
			tk, st = d.retryTicket()
			continue
		}
		r.fail(w, req, x, err)
		return
	}
}

// readCookie reads req's affinity ticket, counting forged and expired
// cookies. fc, when set, remembers the connection's last valid cookie.
func (r *Router) readCookie(req *http.Request, sg *signer, fc *frontConn, now time.Time) (ticket, cookieState) {
	var memo *cookieMemo
	if fc != nil {
		memo = &fc.cookie
	}
	tk, st := readTicket(req.Header, r.cfg.Cookie.Name, sg, now, r.cfg.Cookie.MaxAge, memo)
	switch st {
	case cookieForged:
		r.m.forged.Add(1)
	case cookieExpired:
		r.m.expired.Add(1)
	}
	return tk, st
}

// newExchange is the exchange of req with d's backend.
func (r *Router) newExchange(d decision, w http.ResponseWriter, req *http.Request, body *bodyReader, upgrade bool, sg *signer, fc *frontConn) *exchange {
	x := &exchange{r: r, b: d.target, w: w, in: req, body: body,
		fast: !upgrade && d.target.pool != nil && fastEligible(req)}
	if fc != nil {
		x.lastConn = &fc.lastConn
	}
	if d.setCookie {
		x.cookie = r.cookie(sg.encode(&d.tk), req)
	}
	return x
}

// retryTicket is the ticket a request decided by d is decided again with
// when its backend refused it: the one d chose, as if the client had sent
// it (unsent when d was to set it as a new cookie).
func (d *decision) retryTicket() (ticket, cookieState) {
	if d.setCookie {
		return d.tk, cookieUnsent
	}
	return d.tk, cookieValid
}

// sessionFor names the session actor a request runs in: its client's own,
// unless the client is new or MaxSessions are tracked already. A non-nil
// entry must be ended when the request ends.
func (r *Router) sessionFor(d decision) (string, *sessionEntry) {
	if d.outcome == outcomeNew {
		return newClientsSession, nil
	}
	e := r.sessions.begin(d.tk.sid)
	if e == nil {
		r.m.sessionsRefused.Add(1)
		return newClientsSession, nil
	}
	return e.name, e
}

// newClientsSession is the session actor that runs first requests. A client
// gets its own session actor once it comes back with its cookie, so clients
// that never do (scanners, load tools, one-shot requests) cost no memory.
const newClientsSession = "new-clients"

// errRetry: the request never reached the backend and can go elsewhere.
var errRetry = errors.New("retry on another backend")

// runInSession runs x in the session actor d's client has, keeping that
// session in the table while it runs.
func (r *Router) runInSession(ctx context.Context, x *exchange, d decision, now time.Time, fc *frontConn) error {
	name, e := r.sessionFor(d)
	if e != nil {
		defer func() { e.end(r.sessionClock(time.Now())) }()
	}
	return r.run(ctx, x, name, now, fc)
}

// run proxies x on its backend's worker actor and classifies the result.
// now is when the request came in: its backend latency is counted from
// then (a clock read saved; routing takes about a microsecond).
// fc is the Server connection the request came on, or nil.
func (r *Router) run(ctx context.Context, x *exchange, session string, now time.Time, fc *frontConn) error {
	b := x.b
	b.requests.Add(1)
	b.inflight.Add(1)
	defer b.inflight.Add(-1)
	defer b.latency.since(now)
	ref := messages.Ref{Session: session, Pool: poolName, Worker: b.slot.id, Incarnation: b.slot.inc.Load()}
	// The handler waits for the exchange anyway, so it may run it itself
	// (no goroutine hand-off); it then returns only when the exchange
	// ends, and a client that leaves meanwhile must abort the backend I/O.
	if fc != nil {
		fc.exchange.Store(x)
		defer fc.exchange.Store(nil)
	} else {
		defer context.AfterFunc(ctx, x.leave)()
	}
	_, err := r.rt.CallRef(ctx, ref, x, actors.RunOnCaller())
	if err != nil && !x.state.CompareAndSwap(xPending, xAbandoned) {
		// It runs on a worker goroutine and the client left (Server or
		// the AfterFunc above told it to leave): wait, it may still be
		// writing to the client.
		x.running.Wait()
	}
	return r.finish(ctx, x, err)
}

// finish classifies the outcome of a proxied exchange: nil when the client
// got its answer, errRetry when another backend may try, else the error for
// fail. It charges the backend only for failures that are its own.
func (r *Router) finish(ctx context.Context, x *exchange, err error) error {
	if x.aborted {
		panic(http.ErrAbortHandler) // the response broke mid-body: drop the client connection
	}
	if err == nil {
		err = x.proxyErr
	}
	if err == nil {
		return nil
	}
	b := x.b
	switch {
	case x.body != nil && x.body.failed() != nil:
		// The client's fault (slow or malformed body), not the backend's.
		// First: a timed-out read also cancels the request's context.
		return x.body.failed()
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, actors.ErrRefLost) && x.state.Load() == xAbandoned:
		return errRetry // the worker actor restarted before taking the request
	case isDialError(err):
		r.passiveFailure(b, err, true)
		if !x.responded && x.bodyUnread() {
			return errRetry // nothing reached the backend: the request is whole
		}
	case isTimeout(err):
		r.passiveFailure(b, err, false) // one slow answer counts toward Fall; it does not evict
	}
	return err
}

// fail answers a request that could not be proxied.
func (r *Router) fail(w http.ResponseWriter, req *http.Request, x *exchange, err error) {
	switch {
	case x.responded:
		panic(http.ErrAbortHandler) // headers already sent
	case errors.Is(err, errClientSlow):
		r.m.badRequest.Add(1)
		w.Header().Set("Connection", "close")
		http.Error(w, "affinity router: the request body came too slowly", http.StatusRequestTimeout)
	case errors.Is(err, errBadBody):
		r.m.badRequest.Add(1)
		w.Header().Set("Connection", "close")
		http.Error(w, "affinity router: malformed request body", http.StatusBadRequest)
	case req.Context().Err() != nil, errors.Is(err, errClientLeft):
		r.m.clientGone.Add(1) // nobody to answer
	case errors.Is(err, errUpgradeLimit):
		r.m.busy.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "affinity router: the session's backend has too many upgraded connections; retry later", http.StatusServiceUnavailable)
	case errors.Is(err, actors.ErrQueueTimeout), errors.Is(err, actors.ErrPoolSaturated):
		r.m.busy.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "affinity router: the session's backend is at capacity; retry later", http.StatusServiceUnavailable)
	case isTimeout(err):
		r.m.badGateway.Add(1)
		http.Error(w, "affinity router: the backend timed out", http.StatusGatewayTimeout)
	case errors.Is(err, actors.ErrShutdown), errors.Is(err, ErrClosed):
		r.refuse(w, ErrClosed)
	default:
		r.m.badGateway.Add(1)
		r.log.Debug().Err(err).Str("backend", x.b.name).Msg("proxy error")
		http.Error(w, "affinity router: the backend did not answer", http.StatusBadGateway)
	}
}

// refuse answers 503 before any backend was tried.
func (r *Router) refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	switch err {
	case errStrictDown:
		r.m.strict.Add(1)
		http.Error(w, "affinity router: this session's backend is unavailable and the router's failover mode is strict, so the request was not sent elsewhere; retry later", http.StatusServiceUnavailable)
	case ErrClosed:
		http.Error(w, "affinity router: shutting down", http.StatusServiceUnavailable)
	default:
		r.m.unavailable.Add(1)
		http.Error(w, "affinity router: no healthy backend", http.StatusServiceUnavailable)
	}
}

// cookie renders the Set-Cookie header value.
func (r *Router) cookie(value string, req *http.Request) string {
	c := http.Cookie{
		Name:     r.cfg.Cookie.Name,
		Value:    value,
		Path:     r.cfg.Cookie.Path,
		Domain:   r.cfg.Cookie.Domain,
		MaxAge:   int(r.cfg.Cookie.MaxAge / time.Second),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   r.cfg.Cookie.Secure || r.viaHTTPS(req),
	}
	return c.String()
}

// Exchange states: the worker actor and the waiting handler race to move a
// pending exchange; whoever wins decides whether it runs.
const (
	xPending uint32 = iota
	xRunning
	xAbandoned
)

// exchange is one proxied request, run by a backend's worker actor while
// the handler goroutine waits.
type exchange struct {
	r      *Router
	b      *backend
	w      http.ResponseWriter
	in     *http.Request
	body   *bodyReader // in.Body, watched; nil without a body
	cookie string      // Set-Cookie to add to the response, or ""
	fast   bool        // served by serveFast, not httputil.ReverseProxy

	conn atomic.Pointer[backendConn] // the fast path's backend connection, while in use
	// lastConn is where the client connection keeps the id of the backend
	// connection its last fast-path request used (nil behind net/http's
	// server).
	lastConn *atomic.Uint64
	gone     atomic.Bool // the client left (set by leave)

	state atomic.Uint32
	// running counts the worker actor's run (added before the state can
	// move to xRunning), so the handler can wait for it to end.
	running sync.WaitGroup

	// Written by the worker actor before running is done.
	proxyErr  error
	responded bool // the backend answered; headers are (about to be) written
	aborted   bool // the response broke after headers were sent
}

// backendWorker is the user code of a backend's worker actor.
type backendWorker struct{}

// Handle implements actors.Worker.
func (backendWorker) Handle(_ context.Context, call messages.Call) (any, error) {
	x, ok := call.Payload.(*exchange)
	if !ok {
		return nil, fmt.Errorf("affinity router: unexpected payload %T", call.Payload)
	}
	x.running.Add(1)
	defer x.running.Done()
	if !x.state.CompareAndSwap(xPending, xRunning) {
		return nil, nil // the client left before it started
	}
	x.serve()
	return nil, nil
}

// copyBuffers recycles the proxy's body copy buffers: without it
// httputil.ReverseProxy allocates 32 KiB per request, which made garbage
// collection a large share of the router's CPU.
var copyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// discardLog silences httputil.ReverseProxy's own logging: the router
// reports errors itself.
var discardLog = log.New(io.Discard, "", 0)

func (x *exchange) serve() {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v) // a bug: let the supervisor restart the worker actor
			}
			x.aborted = true
		}
	}()
	if x.fast {
		x.serveFast()
		return
	}
	p := httputil.ReverseProxy{
		Rewrite:        x.rewrite,
		Transport:      x.r.transport,
		ModifyResponse: x.modifyResponse,
		ErrorHandler:   x.errorHandler,
		ErrorLog:       discardLog,
		BufferPool:     copyBuffers,
	}
	p.ServeHTTP(x.w, x.in)
}

func (x *exchange) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(x.b.url)
	if x.r.cfg.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	// As pr.SetXForwarded, but believing a trusted proxy's values.
	xff, host, proto := x.r.forwarded(pr.In)
	h := pr.Out.Header
	if xff != "" {
		h.Set("X-Forwarded-For", xff)
	}
	h.Set("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Proto", proto)
	if fwd := x.r.forwardedHeader(pr.In); fwd != "" {
		h.Set("Forwarded", fwd)
	}
	removeCookie(pr.Out.Header, x.r.cfg.Cookie.Name) // the backend never sees the router's cookie
}

func (x *exchange) modifyResponse(res *http.Response) error {
	x.responded = true
	if uw, ok := x.w.(*upgradeWriter); ok && res.StatusCode == http.StatusSwitchingProtocols {
		uw.wrapBackend(res)
	}
	if x.cookie != "" {
		res.Header.Add("Set-Cookie", x.cookie)
		if res.StatusCode != http.StatusSwitchingProtocols {
			privateCache(res.Header)
		}
	}
	return nil
}

// errorHandler records the error; the handler decides between a retry on
// another backend and an error page.
func (x *exchange) errorHandler(_ http.ResponseWriter, _ *http.Request, err error) {
	x.proxyErr = err
}

// bodyUnread reports whether x's request has no body, or one no read has
// begun on: after a refused dial it can go whole to another backend.
func (x *exchange) bodyUnread() bool {
	if x.body != nil {
		return x.body.untouched()
	}
	return x.in.Body == nil || x.in.Body == http.NoBody
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readTicket decodes every cookie called name and keeps the best: the first
// that verifies with the current key, else one signed with an older key,
// else an expired one, else forged. Several cookies can share the name (one
// set on a parent domain, say); taking only the first would let a stale or
// foreign one start a new session.
//
// memo, when set, is the connection's last cookie that verified: the same
// value again skips the HMAC.
func readTicket(h http.Header, name string, sg *signer, now time.Time, maxAge time.Duration, memo *cookieMemo) (ticket, cookieState) {
	best, bestSt := ticket{}, cookieNone
	tries := 0
	for _, line := range h["Cookie"] {
		for len(line) > 0 && tries < maxCookieTries {
			var v string
			var ok bool
			if v, line, ok = nextCookie(line, name); !ok {
				continue
			}
			tries++
			tk, st := memo.decode(sg, v, now, maxAge)
			if st == cookieValid {
				return tk, st
			}
			if cookieRank[st] > cookieRank[bestSt] {
				best, bestSt = tk, st
			}
		}
	}
	return best, bestSt
}

// maxCookieTries bounds the cookies checked per request: each costs an
// HMAC, and a request may carry thousands of them.
const maxCookieTries = 8

// cookieRank orders what reading a cookie can find, best last.
var cookieRank = [...]int{cookieNone: 0, cookieForged: 1, cookieExpired: 2, cookieOldKey: 3, cookieValid: 4}

// nextCookie takes the next pair off a Cookie header line and returns its
// value if it is called name.
func nextCookie(line, name string) (value, rest string, ok bool) {
	part, rest, _ := strings.Cut(line, ";")
	part = strings.TrimSpace(part)
	if len(part) > len(name) && part[len(name)] == '=' && part[:len(name)] == name {
		return strings.Trim(part[len(name)+1:], `"`), rest, true
	}
	return "", rest, false
}

// privateCache does what HAProxy's "cookie ... nocache" does: a response
// that sets the affinity cookie must not be stored by a shared cache, or
// the cache would hand one client's cookie to everyone. It adds "private"
// and drops the directives meant for shared caches, unless the response is
// private or uncacheable already.
func privateCache(h http.Header) {
	var keep []string
	for _, line := range h["Cache-Control"] {
		for _, d := range strings.Split(line, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(d, "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "private", "no-store":
				return
			case "public", "s-maxage", "proxy-revalidate", "":
				continue
			}
			keep = append(keep, d)
		}
	}
	h.Set("Cache-Control", strings.Join(append(keep, "private"), ", "))
}

// removeCookie drops every cookie called name from h's Cookie headers.
func removeCookie(h http.Header, name string) {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return
	}
	prefix := name + "="
	kept := lines[:0]
	for _, line := range lines {
		if !strings.Contains(line, prefix) {
			kept = append(kept, line)
			continue
		}
		var parts []string
		for _, part := range strings.Split(line, ";") {
			if p := strings.TrimSpace(part); p != "" && !strings.HasPrefix(p, prefix) {
				parts = append(parts, p)
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = kept
}
