package router

import (
	"bufio"
	"context"
	"errors"
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
// responses and watches for clients that leave during a long request.
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
//     second (net/http watches from the start, at a goroutine and a read
//     per request), and not at all while a pipelined request runs.
//   - The http.Server's BaseContext, ConnContext, ConnState and
//     SetKeepAlivesEnabled apply to handed-off connections only.
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
		c := newFrontConn(s, nc)
		if !s.add(c) {
			_ = nc.Close()
			return http.ErrServerClosed
		}
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
	fallback := make(chan error, 1)
	go func() { fallback <- s.srv.Shutdown(ctx) }() // ends with ctx at the latest
	s.closeIdle()
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

// closeIdle closes the connections waiting for a request.
func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conn {
		if c.state.CompareAndSwap(stIdle, stClosed) || c.state.CompareAndSwap(stNew, stClosed) {
			c.close()
		}
	}
}

func (s *Server) stopJanitor() {
	s.stopOnce.Do(func() { close(s.stop) })
}

// janitor enforces the timeouts, keeps the clock and the Date line, and
// starts watching long requests, every janitorTick until stopped.
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

// sweep closes connections idle or reading a head for too long and starts
// watching requests that run long.
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
			if c.state.CompareAndSwap(stActive, stWatched) {
				go c.watch() // ended by the connection's goroutine (see endRequest)
			}
		}
	}
}

// Connection states. The connection's goroutine moves between idle, head
// and active; the janitor may close an idle or head connection, or mark an
// active one watched; Shutdown may close an idle one. Each move is a CAS,
// so exactly one side acts.
const (
	stNew     int32 = iota // a new connection, waiting for its first byte
	stIdle                 // waiting for a request's first byte
	stHead                 // reading a request head
	stActive               // a handler runs
	stWatched              // a handler runs and the client's side is read
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

	state     atomic.Int32
	since     atomic.Int64 // janitor clock when the state began
	pipelined atomic.Bool  // the next request was already read

	// The watcher (see watch) reads one byte while a long request runs.
	watchDone chan struct{}
	extra     [1]byte
	hasExtra  bool // extra holds a byte the watcher read
	gone      atomic.Bool
	closeOnce sync.Once

	mu     sync.Mutex         // guards cancel
	cancel context.CancelFunc // the running request's, or nil
	// The Router's exchange for the running request, told when the client
	// leaves: cheaper than a context.AfterFunc per request.
	exchange atomic.Pointer[exchange]
	cookie   cookieMemo // the Router's, for this connection's requests
}

func newFrontConn(s *Server, nc net.Conn) *frontConn {
	c := &frontConn{s: s, nc: nc, header: make(http.Header), watchDone: make(chan struct{}, 1)}
	c.br = bufio.NewReaderSize(frontReader{c}, frontBufferSize)
	c.bw = bufio.NewWriterSize(nc, frontBufferSize)
	c.tmpl = http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: c.header,
		Body: http.NoBody, RemoteAddr: nc.RemoteAddr().String()}
	c.res.c, c.res.header = c, make(http.Header)
	// As net/http's; Background below it, so that a request's WithCancel
	// registers with no parent.
	c.base = context.WithValue(context.WithValue(context.WithValue(context.Background(),
		http.ServerContextKey, s.srv), http.LocalAddrContextKey, nc.LocalAddr()), frontConnKey{}, c)
	c.since.Store(s.now.Load())
	return c
}

// frontBufferSize is the size of each connection's read and write buffers;
// a request head that does not fit in the read buffer goes to net/http.
const frontBufferSize = 4096

// frontReader reads the connection for its bufio.Reader, the watcher's
// byte first.
type frontReader struct{ c *frontConn }

func (r frontReader) Read(p []byte) (int, error) {
	c := r.c
	if c.hasExtra && len(p) > 0 {
		p[0], c.hasExtra = c.extra[0], false
		return 1, nil
	}
	return c.nc.Read(p)
}

func (c *frontConn) close() {
	c.closeOnce.Do(func() {
		c.cancelRequest()
		_ = c.nc.Close()
	})
}

func (c *frontConn) setState(st int32) bool {
	c.since.Store(c.s.now.Load())
	cur := c.state.Load()
	return cur != stClosed && c.state.CompareAndSwap(cur, st)
}

// serve serves requests until the connection ends or is handed off.
func (c *frontConn) serve() {
	handedOff := false
	defer func() {
		if !handedOff {
			c.close()
		}
		c.s.forget(c)
	}()
	for first := true; ; first = false {
		// Shutdown sets shut, then closes idle connections: checking
		// after becoming idle means one of the two sees the other.
		if !first && (!c.setState(stIdle) || c.s.shut.Load()) {
			return
		}
		end, ok := c.readHead()
		if !ok {
			return
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
			handedOff = c.state.CompareAndSwap(stHead, stWriting) && c.handOff()
			return
		}
		_, _ = c.br.Discard(end)
		if !c.run(req, cancel) || c.s.shut.Load() {
			return
		}
	}
}

// readHead waits for a whole request head in the read buffer and returns
// its length, or 0 when it cannot be Server's (too large, or bare LF line
// ends, which net/http accepts and Server does not). ok false: the
// connection ended.
func (c *frontConn) readHead() (end int, ok bool) {
	if _, err := c.br.Peek(1); err != nil {
		return 0, false
	}
	if !c.setState(stHead) {
		return 0, false
	}
	for scanned := 0; ; {
		buf, _ := c.br.Peek(c.br.Buffered())
		for i := scanned; i < len(buf); i++ {
			if buf[i] != '\n' {
				continue
			}
			if i == 0 || buf[i-1] != '\r' {
				return 0, true // a bare LF: net/http's to judge
			}
			if i >= 3 && buf[i-2] == '\n' {
				return i + 1, true // CRLF CRLF
			}
			if i == 1 {
				return 0, true // an empty line first: net/http's to refuse
			}
		}
		scanned = len(buf)
		if len(buf) == c.br.Size() {
			return 0, true
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return 0, false
		}
	}
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

// endRequest ends the active state, stopping the watcher if the janitor
// started one. false: the client left or the connection was closed.
func (c *frontConn) endRequest() bool {
	if c.state.CompareAndSwap(stActive, stWriting) {
		return true
	}
	if c.state.Load() == stClosed {
		return false
	}
	// Watched: stop the read, keep any byte it got.
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	<-c.watchDone
	_ = c.nc.SetReadDeadline(time.Time{})
	return !c.gone.Load() && c.state.CompareAndSwap(stWatched, stWriting)
}

// watch reads the client's side while a long request runs, as net/http's
// background read does: end of stream cancels the request; a byte (the
// next pipelined request) is kept for the reader.
func (c *frontConn) watch() {
	defer func() { c.watchDone <- struct{}{} }()
	n, err := c.nc.Read(c.extra[:])
	if n == 1 {
		c.hasExtra = true
		return
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return // stopped by endRequest
	}
	c.gone.Store(true)
	c.cancelRequest()
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

func (c *frontConn) logf(format string, args ...any) {
	if l := c.s.srv.ErrorLog; l != nil {
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
