package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The fast path forwards the common request, a GET or HEAD without a body,
// over a purpose-built HTTP/1.1 client: pooled backend connections used by
// the goroutine running the backend worker actor's call (usually the
// handler's own: Router.run calls with actors.RunOnCaller), with no
// goroutines per connection or per request, no Request.Clone and no header
// map built for the backend request. Everything else (bodies, upgrades, https backends, a Transport
// set in Config) goes through httputil.ReverseProxy as before. The fast
// path does what that proxy does with the router's Rewrite: the same
// hop-by-hop headers removed, X-Forwarded-For/-Host/-Proto set (see forwarded), the
// router's cookie stripped, 1xx responses passed on, streaming responses
// (unknown length, or server-sent events) flushed as they come, trailers
// passed on, and a client that leaves cancels the backend request (its
// connection is then closed).

// idleConnTimeout closes pooled backend connections unused for this long,
// as http.Transport's IdleConnTimeout in newTransport.
const idleConnTimeout = 90 * time.Second

// fastEligible reports whether req can take the fast path: a GET or HEAD
// with no body, in origin form. A body means the request cannot be replayed
// on a fresh connection when a pooled one turns out to be closed, and
// httputil.ReverseProxy also handles 100-continue and a backend answering
// before the body is sent.
func fastEligible(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody) && req.ContentLength == 0 &&
		len(req.TransferEncoding) == 0 && req.URL != nil && req.URL.Opaque == "" &&
		strings.HasPrefix(req.URL.Path, "/")
}

// connPool keeps a backend's idle keep-alive connections, most recently
// used first.
type connPool struct {
	addr   string // host:port
	dialer *net.Dialer
	max    int

	mu     sync.Mutex
	idle   []*backendConn
	closed bool
}

func newConnPool(u *url.URL, dialer *net.Dialer, max int) *connPool {
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &connPool{addr: addr, dialer: dialer, max: max}
}

// backendConnIDs numbers backend connections. A client connection keeps the
// number of its last one, not a pointer, so a closed one can be collected.
var backendConnIDs atomic.Uint64

// backendConn is one connection to a backend, owned by one request at a
// time.
type backendConn struct {
	id       uint64 // unique in the process, never 0: a client's preference (see connPool.get)
	conn     net.Conn
	raw      syscall.RawConn // nil: conn has no descriptor to use
	br       *bufio.Reader
	bw       *bufio.Writer
	hold     bool               // Write keeps the bytes in held instead of sending them
	held     []byte             // a request's last bytes, sent by the next Read...
	sent     int                // ...from this offset on
	sendRead func(uintptr) bool // c.sendReadStep, made once
	in       []byte             // sendThenRead's buffer, for sendReadStep
	got      int                // what sendReadStep read
	ioErr    error              // and its error
	read     int64              // bytes read from conn so far
	limit    int64              // while reading response headers: read may not reach it
	idleAt   time.Time          // when it went back to the pool
	deadline time.Time          // the read deadline set last (zero: none)
	aborted  atomic.Bool
}

func (c *backendConn) Read(p []byte) (n int, err error) {
	if c.limit > 0 && c.read >= c.limit {
		return 0, errHeaderTooLarge
	}
	if len(c.held) > c.sent {
		n, err = c.sendThenRead(p)
	} else {
		n, err = c.conn.Read(p)
	}
	c.read += int64(n)
	return n, err
}

// Write is bw's sink: it sends p, or holds it for the next Read while hold
// is set.
func (c *backendConn) Write(p []byte) (int, error) {
	if c.hold {
		c.held = append(c.held[:0], p...)
		return len(p), nil
	}
	return c.conn.Write(p)
}

// flushHeld flushes bw, holding its bytes for the next Read when c can
// send them there (see sendThenRead) and was idle less than surelyOpenIdle.
// A connection idle for longer may have been closed by its backend, which
// a read that tries first sees at once.
func (c *backendConn) flushHeld(now time.Time) error {
	c.hold = c.raw != nil && now.Sub(c.idleAt) < surelyOpenIdle
	err := c.bw.Flush()
	c.hold = false
	return err
}

// sendThenRead sends the held bytes and reads the first bytes of the
// answer in one raw read. The poller is armed before the bytes leave, so
// the answer cannot arrive unseen, and the read can wait first: conn.Read
// would try first and, the answer not being there yet, make one more
// system call per request for nothing.
func (c *backendConn) sendThenRead(p []byte) (int, error) {
	c.in, c.got, c.ioErr = p, 0, nil
	rerr := c.raw.Read(c.sendRead)
	n, err := c.got, c.ioErr
	c.in, c.ioErr = nil, nil
	rest := c.held[c.sent:]
	c.held, c.sent = c.held[:0], 0
	switch {
	case rerr != nil:
		return 0, rerr // closed, or a deadline passed
	case wouldBlock(err) && len(rest) > 0: // the socket is full
		if _, err := c.conn.Write(rest); err != nil {
			return 0, err
		}
		return c.conn.Read(p)
	case err != nil:
		op := "read"
		if len(rest) > 0 {
			op = "write" // the request did not all go
		}
		return 0, opError(op, c.conn, err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// sendReadStep is sendThenRead's step, c.sendRead, under raw.Read: false
// waits until the connection is readable.
func (c *backendConn) sendReadStep(fd uintptr) bool {
	if c.sent < len(c.held) {
		sent, err := writeFD(fd, c.held[c.sent:])
		c.sent += sent
		if err != nil {
			c.ioErr = err // EAGAIN too: the rest goes through conn
			return true
		}
		return false // sent: wait for the answer
	}
	c.got, c.ioErr = readFD(fd, c.in)
	return !wouldBlock(c.ioErr)
}

// surelyOpenIdle is how long a backend connection may have been idle and
// still be taken as open: a backend may close connections idle for a few
// seconds (Node's default keep-alive timeout is 5 s). Past it, flushHeld
// lets the read try first, and get prefers the most recently freed
// connection to a client's last one.
const surelyOpenIdle = time.Second

// abort unblocks the request using c: its client left.
func (c *backendConn) abort() {
	c.aborted.Store(true)
	_ = c.conn.SetDeadline(aLongTimeAgo)
}

// setReadDeadline sets the read deadline unless abort did (or does).
func (c *backendConn) setReadDeadline(t time.Time) {
	c.deadline = t
	_ = c.conn.SetReadDeadline(t)
	if c.aborted.Load() {
		_ = c.conn.SetDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// maxResponseHeaderBytes bounds a backend's response headers, as
// http.Transport's default MaxResponseHeaderBytes does.
const maxResponseHeaderBytes = 10 << 20

var errHeaderTooLarge = errors.New("affinity router: backend response headers too large")

// maxInformational bounds the 1xx responses read before the final one.
const maxInformational = 5

// awaitHeaders bounds the wait for response headers to within timeout
// of now, give or take timeout/8. A deadline that still falls in that
// window is left: moving a deadline costs more than reading the clock, and
// with keep-alive nearly every request would move it.
func (c *backendConn) awaitHeaders(now time.Time, timeout time.Duration) {
	if min := now.Add(timeout); c.deadline.IsZero() || c.deadline.Before(min) {
		c.setReadDeadline(min.Add(timeout / 8))
	}
}

// get returns an idle connection (reused true) or dials a new one; now is
// the time. It takes the connection numbered prefer when that has been idle
// here for less than surelyOpenIdle, else the connection idle the shortest
// time.
//
// prefer is the connection the client's previous request used. Keeping a
// client connection on one backend connection, as HAProxy does, spares the
// backend a request on a connection it has only just answered on: a Go
// net/http backend is then still ending that request's goroutines, and
// taking the most recent connection for every request measurably widened
// the latency spread behind the router (bench/router/README.md).
func (p *connPool) get(ctx context.Context, now time.Time, prefer uint64) (c *backendConn, reused bool, err error) {
	var stale []*backendConn
	p.mu.Lock()
	if prefer != 0 {
		i := slices.IndexFunc(p.idle, func(c *backendConn) bool { return c.id == prefer })
		if i >= 0 && now.Sub(p.idle[i].idleAt) < surelyOpenIdle {
			c = p.idle[i]
			p.idle = slices.Delete(p.idle, i, i+1) // the rest stay oldest first, for prune
			p.mu.Unlock()
			return c, true, nil
		}
	}
	for len(p.idle) > 0 {
		last := len(p.idle) - 1
		c = p.idle[last]
		p.idle[last] = nil
		p.idle = p.idle[:last]
		if now.Sub(c.idleAt) < idleConnTimeout {
			break
		}
		stale = append(stale, c)
		c = nil
	}
	p.mu.Unlock()
	for _, s := range stale {
		_ = s.conn.Close()
	}
	if c != nil {
		return c, true, nil
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, false, err
	}
	return newBackendConn(conn), false, nil
}

func newBackendConn(conn net.Conn) *backendConn {
	c := &backendConn{conn: conn, raw: rawConnOf(conn), id: backendConnIDs.Add(1)}
	c.sendRead = c.sendReadStep
	c.br = bufio.NewReaderSize(c, 4096)
	c.bw = bufio.NewWriterSize(c, 4096)
	return c
}

// put returns a healthy connection to the pool, or closes it when the pool
// is full or closed. usedAt is when its last request was sent: the idle
// time is counted from then (a clock read saved), so a connection that
// served a response longer than idleConnTimeout is closed when next taken
// rather than reused.
func (p *connPool) put(c *backendConn, usedAt time.Time) {
	c.idleAt = usedAt
	p.mu.Lock()
	if !p.closed && len(p.idle) < p.max {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		_ = c.conn.Close()
	}
}

// prune closes connections idle for longer than idleConnTimeout.
func (p *connPool) prune(now time.Time) {
	p.mu.Lock()
	var stale []*backendConn
	kept := p.idle[:0]
	for _, c := range p.idle { // oldest first
		if now.Sub(c.idleAt) >= idleConnTimeout {
			stale = append(stale, c)
			continue
		}
		kept = append(kept, c)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.mu.Unlock()
	for _, c := range stale {
		_ = c.conn.Close()
	}
}

// close closes the idle connections; connections in use are closed when
// they come back.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.conn.Close()
	}
}

// serveFast proxies x over the fast path. Its errors go where
// ReverseProxy's ErrorHandler put them: x.proxyErr before the response,
// x.aborted after its headers went out.
func (x *exchange) serveFast() {
	pool := x.b.pool
	ctx := x.in.Context()
	var prefer uint64
	if x.lastConn != nil {
		prefer = x.lastConn.Load()
	}
	for try := 0; ; try++ {
		now := time.Now()
		c, reused, err := pool.get(ctx, now, prefer)
		prefer = 0
		if err != nil {
			x.proxyErr = err
			return
		}
		// The handler, waiting for this exchange, aborts c if the client
		// leaves (see leave): no AfterFunc or goroutine per request.
		x.conn.Store(c)
		if x.gone.Load() {
			c.abort()
		}
		keep, retry, err := x.exchangeOn(c, now)
		x.conn.Store(nil)
		if x.gone.Load() || c.aborted.Load() {
			keep = false // leave may have aborted c: its deadlines are spent
		}
		if keep {
			if x.lastConn != nil {
				x.lastConn.Store(c.id)
			}
			pool.put(c, now)
		} else {
			_ = c.conn.Close()
		}
		if err == nil {
			return
		}
		// A pooled connection the backend closed while idle fails before
		// any byte of a response: a GET or HEAD may go again on a new one.
		if retry && reused && try == 0 && ctx.Err() == nil {
			continue
		}
		x.proxyErr = err
		return
	}
}

// leave is called by the handler when its client left while the worker
// actor runs x: it unblocks the fast path's backend connection, which is
// then closed.
func (x *exchange) leave() {
	x.gone.Store(true)
	if c := x.conn.Load(); c != nil {
		c.abort()
	}
}

// exchangeOn sends x's request on c and copies the response to the
// client. keep says whether c may serve another request; retry whether
// the request failed before the backend sent a byte.
func (x *exchange) exchangeOn(c *backendConn, now time.Time) (keep, retry bool, err error) {
	start := c.read
	if err := x.writeRequest(c.bw); err != nil {
		return false, false, err // nothing sent: c is closed, as after any error
	}
	if err := c.flushHeld(now); err != nil {
		return false, !isTimeout(err), err
	}
	c.awaitHeaders(now, x.r.cfg.ResponseHeaderTimeout)
	c.limit = c.read + maxResponseHeaderBytes // cleared once the headers are in
	if ok, keep := x.simpleResponse(c); ok {
		return keep, false, nil
	}
	res, retry, err := x.readFinal(c, start)
	if err != nil {
		return false, retry, err
	}
	c.limit = 0
	if res.ContentLength < 0 || int64(c.br.Buffered()) < res.ContentLength {
		// The body is still to come, for as long as it takes. (A body
		// already buffered needs no read: the deadline is left, and reset
		// by the connection's next request.)
		c.setReadDeadline(time.Time{})
	}
	x.responded = true
	announced := x.passHead(res)

	var flush func() error
	if res.ContentLength == -1 || isEventStream(res.Header) {
		flush = http.NewResponseController(x.w).Flush
	}
	if err := x.copyBody(res.Body, flush); err != nil {
		x.aborted = true // as ReverseProxy: drop the client connection
		return false, false, nil
	}
	_ = res.Body.Close() // fills res.Trailer
	if len(res.Trailer) > 0 {
		if flush == nil {
			_ = http.NewResponseController(x.w).Flush() // chunked, so trailers can follow
		}
		h := x.w.Header()
		for k, vv := range res.Trailer {
			if len(res.Trailer) != announced {
				k = http.TrailerPrefix + k
			}
			h[k] = append(h[k], vv...)
		}
	}
	return !res.Close && c.br.Buffered() == 0, false, nil
}

// readFinal reads the backend's final response from c, passing any 1xx
// response but 100 on to the client. retry: the request may be sent again
// elsewhere (c answered nothing since start and did not time out).
func (x *exchange) readFinal(c *backendConn, start int64) (res *http.Response, retry bool, err error) {
	for informational := 0; ; informational++ {
		res, err = http.ReadResponse(c.br, x.in)
		if err != nil {
			return nil, c.read == start && !isTimeout(err), err
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return nil, false, errors.New("affinity router: backend switched protocols on a request that asked for no upgrade")
		}
		if res.StatusCode >= 200 {
			return res, false, nil
		}
		if informational == maxInformational {
			return nil, false, errors.New("affinity router: too many 1xx responses from the backend")
		}
		if res.StatusCode == http.StatusContinue {
			continue // nothing was expected: dropped, as http.Transport does
		}
		// 1xx (103 Early Hints and the like): passed on as ReverseProxy does.
		h := x.w.Header()
		for k, vv := range res.Header {
			h[k] = append(h[k], vv...)
		}
		x.w.WriteHeader(res.StatusCode)
		clear(h)
	}
}

// passHead sends the client res's status and headers, hop-by-hop ones
// removed, with the router's cookie, and announces res's trailers. It
// returns how many it announced.
func (x *exchange) passHead(res *http.Response) (announced int) {
	removeHopByHop(res.Header)
	if x.cookie != "" {
		res.Header.Add("Set-Cookie", x.cookie)
		privateCache(res.Header)
	}
	h := x.w.Header()
	for k, vv := range res.Header {
		if len(h[k]) == 0 {
			h[k] = vv
		} else {
			h[k] = append(h[k], vv...)
		}
	}
	if announced = len(res.Trailer); announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	x.w.WriteHeader(res.StatusCode)
	return announced
}

// copyBody copies a response body to the client, flushing after every
// write when flush is set. Any error, either side, ends the exchange.
func (x *exchange) copyBody(body io.Reader, flush func() error) error {
	bp := fastBuffers.Get().(*[32 << 10]byte)
	defer fastBuffers.Put(bp)
	buf := bp[:]
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := x.w.Write(buf[:n]); err != nil {
				return err
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// fastBuffers recycles the fast path's body copy buffers (pointers to
// arrays: putting one back allocates nothing).
var fastBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	base, _, _ := strings.Cut(ct[0], ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// hopHeaders are removed in both directions, as by httputil.ReverseProxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop removes the hop-by-hop headers and those named in
// Connection from a response's headers.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

// skipRequestHeader lists the client's headers the backend request never
// carries as they are: hop-by-hop ones, the framing (a fast-path request
// has no body), Host (written apart: see Router.backendHost), the forwarding headers
// (replaced), and Cookie (written without the router's cookie).
var skipRequestHeader = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Host": true, "Cookie": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// writeRequest writes x's backend request: what ReverseProxy sends after
// the router's Rewrite (SetURL, SetXForwarded, the cookie removed). A
// header name that is not an HTTP token (only a request built in code can
// have one) fails it, as it fails http.Transport.
func (x *exchange) writeRequest(w *bufio.Writer) error {
	in, u := x.in, x.b.url
	w.WriteString(in.Method)
	w.WriteByte(' ')
	w.WriteString(backendURI(u, in.URL))
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(x.r.backendHost(in, u))
	w.WriteString("\r\n")

	var connTokens []string
	for _, v := range in.Header["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if t = textproto.TrimString(t); t != "" {
				connTokens = append(connTokens, textproto.CanonicalMIMEHeaderKey(t))
			}
		}
	}
	for k, vv := range in.Header {
		if skipRequestHeader[k] || (len(connTokens) > 0 && contains(connTokens, k)) {
			continue
		}
		if !validToken(k) {
			return fmt.Errorf("affinity router: invalid header field name %q", k)
		}
		for _, v := range vv {
			writeHeaderLine(w, k, v)
		}
	}
	if headerHasToken(in.Header, "Te", "trailers") {
		w.WriteString("Te: trailers\r\n")
	}
	x.writeCookies(w)
	xff, host, proto := x.r.forwarded(in)
	if xff != "" {
		writeHeaderLine(w, "X-Forwarded-For", xff)
	}
	writeHeaderLine(w, "X-Forwarded-Host", host)
	if fwd := x.r.forwardedHeader(in); fwd != "" {
		writeHeaderLine(w, "Forwarded", fwd)
	}
	w.WriteString("X-Forwarded-Proto: ")
	w.WriteString(proto)
	w.WriteString("\r\n\r\n")
	return nil
}

// validToken reports whether s is an HTTP token (RFC 9110 section 5.6.2).
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return s != ""
}

// tokenByte marks the bytes of HTTP tokens.
var tokenByte = func() (t [256]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = !strings.ContainsRune(`()<>@,;:\"/[]?={}`, c)
	}
	return t
}()

// writeCookies writes the client's Cookie lines without the router's
// cookie, as removeCookie does.
func (x *exchange) writeCookies(w *bufio.Writer) {
	lines := x.in.Header["Cookie"]
	if len(lines) == 0 {
		return
	}
	prefix := x.r.cookiePrefix
	for _, line := range lines {
		if !strings.Contains(line, prefix) {
			writeHeaderLine(w, "Cookie", line)
			continue
		}
		first := true
		for part := range strings.SplitSeq(line, ";") {
			p := strings.TrimSpace(part)
			if p == "" || strings.HasPrefix(p, prefix) {
				continue
			}
			if first {
				w.WriteString("Cookie: ")
				first = false
			} else {
				w.WriteString("; ")
			}
			writeHeaderValue(w, p)
		}
		if !first {
			w.WriteString("\r\n")
		}
	}
}

func writeHeaderLine(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	writeHeaderValue(w, v)
	w.WriteString("\r\n")
}

// writeHeaderValue writes v with CR and LF turned into spaces, as
// http.Header.Write does: a value can never split the request.
func writeHeaderValue(w *bufio.Writer, v string) {
	if !strings.ContainsAny(v, "\r\n") {
		w.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b == '\r' || b == '\n' {
			b = ' '
		}
		w.WriteByte(b)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// backendURI is the request target for the backend: the client's path
// joined to the backend URL's path, as ProxyRequest.SetURL does.
func backendURI(target, in *url.URL) string {
	if target.Path == "" || (target.Path == "/" && target.RawPath == "") {
		return in.RequestURI() // the join is the client's path itself
	}
	out := url.URL{RawQuery: in.RawQuery, ForceQuery: in.ForceQuery}
	out.Path, out.RawPath = joinURLPath(target, in)
	return out.RequestURI()
}

// joinURLPath is httputil's: b's path under a's.
func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath, bpath := a.EscapedPath(), b.EscapedPath()
	aslash, bslash := strings.HasSuffix(apath, "/"), strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

func singleJoiningSlash(a, b string) string {
	aslash, bslash := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}

// simpleResponse serves the common response straight from c's buffer,
// without http.ReadResponse's allocations: HTTP/1.1, a final status other
// than 204 and 304, a Content-Length, no hop-by-hop header but
// "Connection: keep-alive" and Keep-Alive, canonical header names, and the
// whole header block already read. ok false: nothing was consumed, and
// http.ReadResponse reads the response (and reports any error). keep says
// whether c may serve another request.
func (x *exchange) simpleResponse(c *backendConn) (ok, keep bool) {
	if x.in.Method == http.MethodHead {
		return false, false
	}
	sh, ok := readSimpleHead(c)
	if !ok {
		return false, false
	}
	c.limit = 0 // the headers are in
	x.writeSimpleHead(&sh)
	_, _ = c.br.Discard(sh.size)
	if int64(c.br.Buffered()) < sh.length {
		c.setReadDeadline(time.Time{}) // the body is still to come
	}
	x.responded = true
	var flush func() error
	if sh.eventStream {
		flush = http.NewResponseController(x.w).Flush
	}
	if !x.copySimpleBody(c, sh.length, flush) {
		x.aborted = true // either side broke off mid-body
		return true, false
	}
	return true, c.br.Buffered() == 0
}

// simpleHead is a simple response's head, checked, still in c's buffer.
type simpleHead struct {
	code        int
	lines       []byte // the header lines, each with its CRLF
	n           int    // how many
	size        int    // of the whole head, status line and blank line included
	length      int64  // Content-Length
	hasDate     bool
	hasType     bool // a Content-Type
	eventStream bool // Content-Type text/event-stream: flushed as it comes
}

// readSimpleHead checks the head buffered on c (see simpleResponse), and
// consumes nothing.
func readSimpleHead(c *backendConn) (sh simpleHead, ok bool) {
	if _, err := c.br.Peek(1); err != nil {
		return sh, false
	}
	buf, _ := c.br.Peek(c.br.Buffered())
	end := bytes.Index(buf, crlfCRLF)
	if end < 0 {
		return sh, false
	}
	head := buf[:end+2] // every line with its CRLF
	status, rest, ok := cutCRLFLine(head)
	if !ok {
		return sh, false
	}
	if sh.code, ok = simpleStatus(status); !ok {
		return sh, false
	}
	sh.lines, sh.size, sh.length = rest, end+4, -1
	for ; len(rest) > 0; sh.n++ {
		var line []byte
		if line, rest, ok = cutCRLFLine(rest); !ok || !sh.check(line) {
			return sh, false
		}
	}
	return sh, sh.length >= 0
}

// cutCRLFLine cuts the first line off b, which must end with CRLF: ok
// false for a bare LF (ReadResponse decides what that means).
func cutCRLFLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// simpleStatus parses an HTTP/1.1 status line with a final status other
// than 204 and 304.
func simpleStatus(status []byte) (code int, ok bool) {
	if len(status) < 12 || string(status[:9]) != "HTTP/1.1 " || (len(status) > 12 && status[12] != ' ') {
		return 0, false
	}
	for _, d := range status[9:12] {
		if d < '0' || d > '9' {
			return 0, false
		}
		code = code*10 + int(d-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0, false
	}
	return code, true
}

// check takes in one header line (without its CRLF), or reports that it
// makes the response not simple.
func (sh *simpleHead) check(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !canonicalToken(line[:colon]) || !fieldValue(line[colon+1:]) {
		return false // obs-fold, odd names or values: ReadResponse decides
	}
	key, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
	switch string(key) {
	case "Content-Length":
		if sh.length >= 0 {
			return false
		}
		sh.length = parseLength(value)
		return sh.length >= 0
	case "Connection":
		return bytes.EqualFold(value, []byte("keep-alive"))
	case "Date":
		sh.hasDate = true
	case "Content-Type":
		if sh.hasType {
			return false // which one counts is ReadResponse's path to decide
		}
		base, _, _ := bytes.Cut(value, []byte(";"))
		sh.hasType = true
		sh.eventStream = bytes.EqualFold(bytes.TrimSpace(base), []byte("text/event-stream"))
	case "Proxy-Connection", "Transfer-Encoding", "Trailer", "Upgrade", "Te",
		"Proxy-Authenticate", "Proxy-Authorization":
		return false
	}
	return true
}

// writeSimpleHead sends sh to the client: straight from the buffer when
// nothing is to be added to it (no header map, no strings), else through
// the header map.
func (x *exchange) writeSimpleHead(sh *simpleHead) {
	raw, ok := x.w.(rawHead)
	if !ok || x.cookie != "" || len(x.w.Header()) != 0 {
		x.headerMap(sh.lines, sh.n)
		x.w.WriteHeader(sh.code)
		return
	}
	bw := raw.beginHead(sh.code, sh.length)
	for rest := sh.lines; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i+1]
		rest = rest[i+1:]
		if !bytes.HasPrefix(line, []byte("Connection:")) && !bytes.HasPrefix(line, []byte("Keep-Alive:")) {
			_, _ = bw.Write(line)
		}
	}
	raw.endHead(sh.hasDate)
}

// copySimpleBody passes length bytes of body from c to the client,
// flushing after each write when flush is set. false: either side failed.
func (x *exchange) copySimpleBody(c *backendConn, length int64, flush func() error) bool {
	for length > 0 {
		if c.br.Buffered() == 0 {
			if _, err := c.br.Peek(1); err != nil {
				return false
			}
		}
		p, _ := c.br.Peek(int(min(length, int64(c.br.Buffered()))))
		if _, err := x.w.Write(p); err != nil {
			return false
		}
		if flush != nil && flush() != nil {
			return false
		}
		_, _ = c.br.Discard(len(p))
		length -= int64(len(p))
	}
	return true
}

// headerMap copies the n header lines of a simple response, checked by
// simpleResponse, to the client's header map, with the router's cookie,
// and writes the status line.
func (x *exchange) headerMap(lines []byte, n int) {
	// One string holds every name and value.
	text := string(lines)
	values := make([]string, n)
	h := x.w.Header()
	off, i := 0, 0
	for off < len(text) {
		e := off + strings.IndexByte(text[off:], '\n')
		line := text[off : e-1]
		off = e + 1
		colon := strings.IndexByte(line, ':')
		key := line[:colon]
		if key == "Connection" || key == "Keep-Alive" {
			continue // hop-by-hop
		}
		values[i] = strings.Trim(line[colon+1:], " \t")
		if len(h[key]) == 0 {
			h[key] = values[i : i+1 : i+1]
		} else {
			h[key] = append(h[key], values[i])
		}
		i++
	}
	if x.cookie != "" {
		h.Add("Set-Cookie", x.cookie)
		privateCache(h)
	}
}

// rawHead is implemented by Server's ResponseWriter: the fast path writes
// a backend's response head through it as bytes, with no header map.
type rawHead interface {
	// beginHead writes the status line of a final response whose body has
	// length bytes, and returns where the header lines go, each with its
	// CRLF.
	beginHead(code int, length int64) *bufio.Writer
	// endHead adds Date (unless the lines had one) and Connection: close
	// when the connection ends after this response, and ends the head.
	endHead(hasDate bool)
}

var crlfCRLF = []byte("\r\n\r\n")

// canonicalToken reports whether b is a header name in canonical form
// (as textproto.CanonicalMIMEHeaderKey would leave it).
func canonicalToken(b []byte) bool {
	upper := true
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z':
			if !upper {
				return false
			}
		case c >= 'a' && c <= 'z':
			if upper {
				return false
			}
		case c >= '0' && c <= '9', strings.IndexByte("!#$%&'*+.^_`|~", c) >= 0:
		case c == '-':
			upper = true
			continue
		default:
			return false
		}
		upper = false
	}
	return len(b) > 0
}

// fieldValue reports whether v (a request's or a response's header value)
// has no control bytes but tabs.
func fieldValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length, or returns -1.
func parseLength(b []byte) int64 {
	if len(b) == 0 || len(b) > 18 {
		return -1
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
