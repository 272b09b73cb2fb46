package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Server serves HTTP/1.1 over plain TCP for less CPU per request than
// net/http's server alone. It answers the common request itself: a GET or
// HEAD with no body, an origin-form target and nothing unusual in its head.
// It uses one goroutine per connection, none per request, and no timer per
// request: one janitor goroutine enforces the timeouts, dates the
// responses and watches for clients that leave during a long request. On
// unix it reads and writes a TCP or unix-socket connection through its
// descriptor, waiting for a request before reading it (see frontConn.serve
// and sysRead).
//
// The first request of any other kind hands its whole connection, bytes
// already read included, to the wrapped http.Server, which serves that
// connection from then on. Bodies, upgrades (WebSocket), HTTP/1.0, heads
// larger than 4 KiB and malformed requests all stay net/http's, with its
// limits and its error answers. TLS (and so HTTP/2) is not Server's: serve
// it with the http.Server directly.
//
// What differs from net/http for the requests Server answers itself:
//   - The ResponseWriter implements http.Flusher, not http.Hijacker
//     (upgrades never reach it), and does not sniff a missing
//     Content-Type: a proxy passes on what its backend sent.
//   - Timeouts are enforced by the janitor, so they end up to a quarter of
//     a second late; a new connection that sends nothing is closed after
//     ReadHeaderTimeout, else IdleTimeout.
//   - A client that leaves is noticed once its request has run for half a
//     second, by the janitor peeking at the connection every quarter
//     second (net/http watches from the start, at a goroutine and a read
//     per request); not at all while a pipelined request runs, or on a
//     connection that is not a *net.TCPConn or *net.UnixConn.
//   - The http.Server's BaseContext, ConnContext and ConnState apply to
//     every connection. A handed-off one gets them again from net/http,
//     with the handoff listener and a connection wrapping the accepted
//     one; the accepted one ends StateHijacked. A nil context from
//     BaseContext or ConnContext is an error, not a panic.
//     Call Server's SetKeepAlivesEnabled: the http.Server's reaches only
//     handed-off connections.
//   - A connection's requests share one header map and its values, refilled
//     for each request: a handler must not use r.Header once ServeHTTP has
//     returned (net/http allocates a new map per request).
type Server struct {
	srv      *http.Server
	handoff  *handoffListener
	headerTO time.Duration // 0: none
	idleTO   time.Duration // 0: none
	newTO    time.Duration // for a new connection's first byte: headerTO, else idleTO

	now                atomic.Int64               // the janitor's clock (Unix ns), for stamps
	date               atomic.Pointer[dateLine]   // "Date: ...\r\n", rewritten every second
	stop               chan struct{}              // closed to stop the janitor
	wg                 sync.WaitGroup             // the janitor, the fallback and every connection
	once               sync.Once                  // starts the janitor and the fallback
	lns                map[*net.Listener]struct{} // guarded by mu
	mu                 sync.Mutex                 // guards lns and conn; shut is set under it
	conn               map[*frontConn]struct{}    // the connections Server still owns
	done               chan struct{}              // closed once closing and conn is empty
	shut               atomic.Bool                // Shutdown or Close was called
	noKeepAlive        atomic.Bool                // SetKeepAlivesEnabled(false)
	stopOnce, doneOnce sync.Once
}

type dateLine struct {
	sec  int64
	line []byte
}

// NewServer returns a Server answering with srv.Handler (which must be
// set) and serving what it hands off with srv. srv's ReadHeaderTimeout
// (else ReadTimeout) and IdleTimeout (else ReadTimeout) apply to
// Server's connections too, to a resolution of janitorTick. Call Serve, not
// srv.Serve; Shutdown and Close stop both.
func NewServer(srv *http.Server) (*Server, error) {
	if srv == nil || srv.Handler == nil {
		return nil, errors.New("affinity router: NewServer needs an http.Server with a Handler")
	}
	s := &Server{
		srv:      srv,
		handoff:  newHandoffListener(),
		headerTO: srv.ReadHeaderTimeout,
		idleTO:   srv.IdleTimeout,
		stop:     make(chan struct{}),
		lns:      map[*net.Listener]struct{}{},
		conn:     map[*frontConn]struct{}{},
		done:     make(chan struct{}),
	}
	if s.headerTO <= 0 {
		s.headerTO = srv.ReadTimeout
	}
	if s.idleTO <= 0 {
		s.idleTO = srv.ReadTimeout
	}
	// net/http waits for a new connection's first request for
	// ReadHeaderTimeout; Server also bounds a silent new connection by
	// IdleTimeout when that is all that is set.
	s.newTO = s.headerTO
	if s.newTO <= 0 {
		s.newTO = s.idleTO
	}
	s.tick(time.Now())
	return s, nil
}

// janitorTick is how often the janitor looks at every connection.
const janitorTick = 250 * time.Millisecond

// watchAfter is how long a request runs before its client's connection is
// watched for the client leaving (net/http watches every request from its
// start, at the cost of a goroutine and a read per request).
const watchAfter = 2 * janitorTick

// Serve accepts connections on ln until Shutdown or Close, and then
// returns http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	defer ln.Close() // as net/http: whatever ends Serve, the listener closes
	s.mu.Lock()
	if s.shut.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	base := context.Background()
	if f := s.srv.BaseContext; f != nil {
		if base = f(ln); base == nil {
			s.mu.Unlock()
			return errNilBaseContext
		}
	}
	base = context.WithValue(base, http.ServerContextKey, s.srv)
	s.lns[&ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, &ln)
		s.mu.Unlock()
	}()
	s.once.Do(s.start)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shut.Load() {
				return http.ErrServerClosed
			}
			if transientAcceptError(err) { // as net/http: out of descriptors passes
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-s.stop:
					return http.ErrServerClosed
				}
			}
			return err
		}
		backoff = 0
		ctx := base
		if f := s.srv.ConnContext; f != nil {
			if ctx = f(ctx, nc); ctx == nil {
				s.logf("router: ConnContext returned nil: connection from %v closed", nc.RemoteAddr())
				_ = nc.Close()
				continue
			}
		}
		c := newFrontConn(s, nc, ctx)
		if !s.add(c) {
			_ = nc.Close()
			return http.ErrServerClosed
		}
		c.connState(http.StateNew)
		go c.serve()
	}
}

// start runs the janitor and the fallback http.Server.
func (s *Server) start() {
	s.wg.Add(2)
	go s.janitor()
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(s.handoff) // returns when the handoff listener closes
	}()
}

func (s *Server) add(c *frontConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut.Load() {
		return false
	}
	s.conn[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// forget drops c, closed or handed off, from the connections Server owns.
func (s *Server) forget(c *frontConn) {
	s.mu.Lock()
	delete(s.conn, c)
	drained := s.shut.Load() && len(s.conn) == 0
	s.mu.Unlock()
	if drained {
		s.doneOnce.Do(func() { close(s.done) })
	}
	s.wg.Done()
}

// Shutdown stops accepting, closes idle connections, lets running requests
// finish (their responses say Connection: close) and shuts the fallback
// http.Server down, all within ctx. It returns ctx's error if that ended
// first; Close then ends what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	// Now, not when the goroutine below gets to it: handed-off requests
	// that end from here on must say Connection: close.
	s.srv.SetKeepAlivesEnabled(false)
	fallback := make(chan error, 1)
	go func() { fallback <- s.srv.Shutdown(ctx) }() // ends with ctx at the latest
	s.closeWaiting(true)
	var err error
	select {
	case <-s.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if ferr := <-fallback; err == nil {
		err = ferr
	}
	if err == nil {
		s.stopJanitor()
		s.wg.Wait()
	}
	return err
}

// Close closes the listeners and every connection at once, cancelling the
// requests running on them, and closes the fallback http.Server.
func (s *Server) Close() error {
	s.closeListeners()
	err := s.srv.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.close()
	}
	s.mu.Unlock()
	s.stopJanitor()
	return err
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	s.shut.Store(true)
	for ln := range s.lns {
		_ = (*ln).Close()
	}
	empty := len(s.conn) == 0
	s.mu.Unlock()
	if empty {
		s.doneOnce.Do(func() { close(s.done) })
	}
	s.once.Do(func() {}) // never start after shutting down
	_ = s.handoff.Close()
}

// closeWaiting closes the connections waiting for their next request, and
// with fresh those waiting for their first.
func (s *Server) closeWaiting(fresh bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conn {
		if c.state.CompareAndSwap(stIdle, stClosed) || fresh && c.state.CompareAndSwap(stNew, stClosed) {
			c.close()
		}
	}
}

// SetKeepAlivesEnabled turns HTTP keep-alives on or off, as
// http.Server.SetKeepAlivesEnabled does, for Server's connections and the
// handed-off ones: off, every response says Connection: close and idle
// connections are closed. They are on by default.
func (s *Server) SetKeepAlivesEnabled(v bool) {
	s.noKeepAlive.Store(!v)
	s.srv.SetKeepAlivesEnabled(v)
	if !v {
		s.closeWaiting(false)
	}
}

func (s *Server) stopJanitor() {
	s.stopOnce.Do(func() { close(s.stop) })
}

// janitor enforces the timeouts, keeps the clock and the Date line, and
// looks for clients that left long requests, every janitorTick until
// stopped.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(janitorTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.tick(now)
			s.sweep(now.UnixNano())
		}
	}
}

func (s *Server) tick(now time.Time) {
	s.now.Store(now.UnixNano())
	if d := s.date.Load(); d != nil && d.sec == now.Unix() {
		return
	}
	line := make([]byte, 0, 40)
	line = append(line, "Date: "...)
	line = now.UTC().AppendFormat(line, http.TimeFormat)
	line = append(line, "\r\n"...)
	s.date.Store(&dateLine{sec: now.Unix(), line: line})
}

// sweep closes connections idle or reading a head for too long and cancels
// long requests whose clients left.
func (s *Server) sweep(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conn {
		age := time.Duration(now - c.since.Load())
		switch st := c.state.Load(); {
		case st == stIdle && s.idleTO > 0 && age >= s.idleTO,
			st == stHead && s.headerTO > 0 && age >= s.headerTO,
			st == stNew && s.newTO > 0 && age >= s.newTO:
			if c.state.CompareAndSwap(st, stClosed) {
				c.close()
			}
		case st == stActive && age >= watchAfter && !c.pipelined.Load():
			c.peeks.Add(1)
			if c.clientLeft() {
				c.gone.Store(true)
				c.cancelRequest()
			}
		}
	}
}

// Connection states. The connection's goroutine moves between idle, head
// and active; the janitor may close an idle or head connection; Shutdown
// may close an idle one. Each move is a CAS, so exactly one side acts.
const (
	stNew     int32 = iota // a new connection, waiting for its first byte
	stIdle                 // waiting for a request's first byte
	stHead                 // reading a request head
	stActive               // a handler runs
	stWriting              // the response is being finished
	stClosed               // closed by the janitor or Shutdown
)

// frontConn is one client connection while Server owns it.
type frontConn struct {
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	header http.Header // reused per request: handlers must not keep it
	values []string    // the header map's values, reused likewise
	tmpl   http.Request
	res    frontResponse
	base   context.Context // its requests' contexts derive from it
	// lastConn: the id of the backend connection the fast path used last
	// for this client, taken again while it is idle (see connPool.get).
	lastConn atomic.Uint64

	// Reading and writing through the descriptor (see serve, frontReader
	// and frontWriter).
	raw      syscall.RawConn    // nil: nc has none; nc's methods are used
	fd       uintptr            // nc's descriptor while raw.Read runs
	writeRaw func(uintptr) bool // c.writeStep, made once
	out      []byte             // frontWriter's bytes, for writeStep
	wrote    int                // what writeStep wrote
	writeErr error              // and its error

	state     atomic.Int32
	since     atomic.Int64 // janitor clock when the state began
	pipelined atomic.Bool  // the next request was already read

	waitFirst bool         // the next read waits for bytes first (see frontReader)
	scanned   int          // bytes of a partial head already searched for its end
	gone      atomic.Bool  // the janitor saw the client leave
	peeks     atomic.Int64 // the janitor's looks for the client leaving
	closeOnce sync.Once

	mu     sync.Mutex         // guards cancel
	cancel context.CancelFunc // the running request's, or nil
	// The Router's exchange for the running request, told when the client
	// leaves: cheaper than a context.AfterFunc per request.
	exchange atomic.Pointer[exchange]
	cookie   cookieMemo // the Router's, for this connection's requests
}

// errNilBaseContext is Serve's error when the http.Server's BaseContext
// returns nil (net/http panics).
var errNilBaseContext = errors.New("router: the http.Server's BaseContext returned nil")

// newFrontConn returns the connection nc, its requests' contexts derived
// from ctx (Serve's, after ConnContext).
func newFrontConn(s *Server, nc net.Conn, ctx context.Context) *frontConn {
	c := &frontConn{s: s, nc: nc, raw: rawConnOf(nc), header: make(http.Header)}
	c.br = bufio.NewReaderSize(frontReader{c}, frontBufferSize)
	c.bw = bufio.NewWriterSize(frontWriter{c}, frontBufferSize)
	c.writeRaw = c.writeStep
	c.tmpl = http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: c.header,
		Body: http.NoBody, RemoteAddr: nc.RemoteAddr().String()}
	c.res.c, c.res.header = c, make(http.Header)
	// As net/http's. Unless BaseContext or ConnContext made it
	// cancellable, Background is below it, so that a request's WithCancel
	// registers with no parent.
	c.base = context.WithValue(context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr()), frontConnKey{}, c)
	c.since.Store(s.now.Load())
	return c
}

// frontBufferSize is the size of each connection's read and write buffers;
// a request head that does not fit in the read buffer goes to net/http.
const frontBufferSize = 4096

var errWouldBlock = errors.New("would block")

// frontWriter writes the connection for its bufio.Writer: through raw
// when there is one, for sysWrite's sake.
type frontWriter struct{ c *frontConn }

func (w frontWriter) Write(p []byte) (int, error) {
	c := w.c
	if c.raw == nil {
		return c.nc.Write(p)
	}
	c.out, c.wrote, c.writeErr = p, 0, nil
	rerr := c.raw.Write(c.writeRaw)
	n, err := c.wrote, c.writeErr
	c.out, c.writeErr = nil, nil
	if rerr != nil {
		return n, rerr // closed, or past the write deadline
	}
	if err != nil {
		return n, opError("write", c.nc, err)
	}
	return n, nil
}

// writeStep is frontWriter's step, c.writeRaw, under raw.Write: false
// waits until the connection is writable.
func (c *frontConn) writeStep(fd uintptr) bool {
	sent, err := writeFD(fd, c.out[c.wrote:])
	c.wrote += sent
	c.writeErr = err
	return !wouldBlock(err)
}

// frontReader reads the connection for its bufio.Reader. Under raw.Read
// it never blocks: errWouldBlock sends serve back to the poller. After a
// response it does not even try: the client sends its next request only
// once it has the response, so a read then would nearly always find
// nothing, at the cost of a system call per request.
type frontReader struct{ c *frontConn }

func (r frontReader) Read(p []byte) (int, error) {
	c := r.c
	if c.raw == nil {
		return c.nc.Read(p)
	}
	if c.waitFirst {
		c.waitFirst = false
		return 0, errWouldBlock
	}
	n, err := readFD(c.fd, p)
	switch {
	case wouldBlock(err):
		return 0, errWouldBlock
	case err != nil:
		return 0, opError("read", c.nc, err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// close ends the connection, from any goroutine: the client sees it end,
// and the running request is cancelled. A raw connection is shut down
// rather than closed (serve closes it when it returns): serve's raw.Read
// holds the descriptor while a handler runs, and nc.Close would wait for
// the handler to return, which may wait for the cancel.
func (c *frontConn) close() {
	c.closeOnce.Do(func() {
		// First: the cancelled handler must find it ended.
		if c.raw == nil || c.raw.Control(shutdownFD) != nil {
			_ = c.nc.Close()
		}
		c.cancelRequest()
	})
}

func (c *frontConn) setState(st int32) bool {
	c.since.Store(c.s.now.Load())
	cur := c.state.Load()
	return cur != stClosed && c.state.CompareAndSwap(cur, st)
}

// serve serves requests until the connection ends or is handed off.
//
// With a raw connection the whole loop runs inside one raw.Read: serving
// until a read would block, then letting the poller wait. One raw.Read
// for the connection's life matters: each one forgets readiness the
// poller saw before it began, so a read could then no longer wait first.
func (c *frontConn) serve() {
	next := stepEnd
	defer func() {
		if next == stepHandOff && c.handOff() {
			c.connState(http.StateHijacked) // net/http reports on from StateNew
		} else {
			c.close()
			_ = c.nc.Close() // see close
			c.connState(http.StateClosed)
		}
		c.s.forget(c)
	}()
	if c.raw == nil {
		next = c.step() // reads block: it never returns stepWait
		return
	}
	_ = c.raw.Read(func(fd uintptr) bool {
		c.fd = fd
		next = c.step()
		return next != stepWait
	}) // an error (the connection closed) leaves next at stepWait: the end
	if next == stepWait {
		next = stepEnd
	}
}

// What serve does after step.
const (
	stepWait    = iota // wait until the client's side is readable, then step
	stepEnd            // close the connection
	stepHandOff        // hand the connection to net/http
)

// step serves every request it can read without blocking and returns what
// the connection needs next.
func (c *frontConn) step() int {
	for {
		end, err := c.readHead()
		if err == errWouldBlock {
			return stepWait
		}
		if err != nil {
			return stepEnd
		}
		ctx, cancel := context.WithCancel(c.base)
		var req *http.Request
		if end > 0 {
			req = c.parse(ctx, end)
		}
		if req == nil {
			cancel()
			// Out of the janitor's reach first: it must not close a
			// connection net/http now owns.
			if c.state.CompareAndSwap(stHead, stWriting) {
				return stepHandOff
			}
			return stepEnd
		}
		_, _ = c.br.Discard(end)
		c.connState(http.StateActive)
		if !c.run(req, cancel) || c.s.shut.Load() {
			return stepEnd
		}
		c.connState(http.StateIdle)
		// Shutdown sets shut, then closes idle connections: checking
		// after becoming idle means one of the two sees the other (and
		// likewise for SetKeepAlivesEnabled).
		if !c.setState(stIdle) || c.s.shut.Load() || c.s.noKeepAlive.Load() {
			return stepEnd
		}
		c.waitFirst = c.br.Buffered() == 0
	}
}

// readHead looks for a whole request head in the read buffer, reading
// more as needed, and returns its length, or 0 when it cannot be Server's
// (too large, or bare LF line ends, which net/http accepts and Server does
// not). An error: the connection ended, or (errWouldBlock) the rest of the
// head has not arrived; the search then resumes where it stopped.
func (c *frontConn) readHead() (end int, err error) {
	if _, err := c.br.Peek(1); err != nil {
		return 0, err
	}
	if c.state.Load() != stHead && !c.setState(stHead) {
		return 0, net.ErrClosed
	}
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if end, found := headEnd(buf, c.scanned); found {
			c.scanned = 0
			return end, nil
		}
		c.scanned = len(buf)
		if len(buf) == c.br.Size() {
			c.scanned = 0
			return 0, nil
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// headEnd searches buf from offset from for the end of a request head and
// returns its length, or 0 when the head is net/http's to judge: bare LF
// line ends, or an empty line first. found false: no end yet.
func headEnd(buf []byte, from int) (end int, found bool) {
	for i := from; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i == 0 || buf[i-1] != '\r' {
			return 0, true // a bare LF
		}
		if i >= 3 && buf[i-2] == '\n' {
			return i + 1, true // CRLF CRLF
		}
		if i == 1 {
			return 0, true // an empty line first
		}
	}
	return 0, false
}

// handOff gives the connection, with every byte read and not consumed, to
// the fallback http.Server. false: it is shutting down (the caller closes).
func (c *frontConn) handOff() bool {
	if err := c.bw.Flush(); err != nil {
		return false
	}
	buffered, _ := c.br.Peek(c.br.Buffered())
	rc := &replayConn{Conn: c.nc, pending: append([]byte(nil), buffered...)}
	return c.s.handoff.push(rc)
}

// run serves one request and reports whether the connection may serve
// another.
func (c *frontConn) run(req *http.Request, cancel context.CancelFunc) (keep bool) {
	c.setCancel(cancel)
	c.pipelined.Store(c.br.Buffered() > 0)
	c.res.reset(req)
	if !c.setState(stActive) {
		cancel()
		return false
	}
	if d := c.s.srv.WriteTimeout; d > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	}
	ok := c.callHandler(req)
	keep = c.endRequest()
	cancel()
	c.setCancel(nil)
	if !ok {
		return false
	}
	return c.res.finish() && keep
}

// callHandler runs the handler; false: it panicked (the connection is then
// dropped, as net/http does).
func (c *frontConn) callHandler(req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.logf("http: panic serving %v: %v\n%s", c.tmpl.RemoteAddr, v, buf)
			}
			ok = false
		}
	}()
	c.s.srv.Handler.ServeHTTP(&c.res, req)
	return true
}

// endRequest ends the active state. false: the client left or the
// connection was closed.
func (c *frontConn) endRequest() bool {
	return c.state.CompareAndSwap(stActive, stWriting) && !c.gone.Load()
}

// clientLeft peeks at the client's side of a connection whose request runs
// long, as net/http's background read does: the end of the stream, or an
// error, means the client left. Bytes waiting (a pipelined request) or
// none say nothing. The janitor calls it; it never blocks.
func (c *frontConn) clientLeft() bool {
	if c.raw == nil {
		return false
	}
	left := false
	_ = c.raw.Control(func(fd uintptr) { left = peerLeft(fd) })
	return left
}

// frontConnKey is the context key of the frontConn a request came on.
type frontConnKey struct{}

// cancelRequest cancels the running request's context, if any.
func (c *frontConn) cancelRequest() {
	if x := c.exchange.Load(); x != nil {
		x.leave()
	}
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
}

// setCancel records the running request's cancel func (nil: none runs).
func (c *frontConn) setCancel(f context.CancelFunc) {
	c.mu.Lock()
	c.cancel = f
	c.mu.Unlock()
}

func (c *frontConn) logf(format string, args ...any) { c.s.logf(format, args...) }

// connState tells the http.Server's ConnState hook, if any, of nc's state.
// A connection handed off ends StateHijacked here: net/http then reports
// the connection wrapping it from StateNew on.
func (c *frontConn) connState(st http.ConnState) {
	if f := c.s.srv.ConnState; f != nil {
		f(c.nc, st)
	}
}

// logf logs to the http.Server's ErrorLog, else to the standard logger.
func (s *Server) logf(format string, args ...any) {
	if l := s.srv.ErrorLog; l != nil {
		l.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// handoffListener is the fallback http.Server's listener: it accepts the
// connections Server hands off.
type handoffListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// replayConn returns the bytes Server read before the connection's reads.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func transientAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
