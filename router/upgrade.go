package router

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Upgraded connections (WebSocket and other Upgrade tunnels) live for
// minutes or hours. They do not run on the backend's worker actor, whose
// capacity is for ordinary requests: each backend has its own cap on them
// (MaxUpgradesPerBackend), they are closed after UpgradeIdleTimeout without
// traffic, and Close ends them.

// errUpgradeLimit: the backend has MaxUpgradesPerBackend upgraded
// connections open.
var errUpgradeLimit = errors.New("the backend's upgraded connections are at their limit")

func isUpgrade(req *http.Request) bool {
	return req.Header.Get("Upgrade") != "" && headerHasToken(req.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// runUpgrade proxies an upgrade request in the handler's goroutine, outside
// the worker actor, under the backend's upgrade cap. Its context ends when
// the client leaves or the router closes, which closes both connections.
func (r *Router) runUpgrade(reqCtx context.Context, x *exchange) error {
	r.upMu.Lock()
	if r.closed.Load() {
		r.upMu.Unlock()
		return ErrClosed
	}
	r.upWG.Add(1)
	r.upMu.Unlock()
	defer r.upWG.Done()

	b := x.b
	if !b.acquireUpgrade(r.cfg.MaxUpgradesPerBackend) {
		return errUpgradeLimit
	}
	defer b.upgrades.Add(-1)
	b.requests.Add(1)

	ctx, cancel := context.WithCancel(reqCtx)
	defer cancel()
	stop := context.AfterFunc(r.closing, cancel)
	defer stop()
	uw := &upgradeWriter{ResponseWriter: x.w, r: r, idle: r.cfg.UpgradeIdleTimeout,
		websocket: strings.EqualFold(x.in.Header.Get("Upgrade"), "websocket")}
	// The backend connection's own net.Conn, for a write deadline on the
	// close frame: the transport hands ReverseProxy a bare io.ReadWriteCloser.
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { uw.backendConn.Store(&info.Conn) },
	})
	x.in = x.in.WithContext(ctx)
	x.w = uw
	x.serve()
	if uw.conn != nil {
		r.upMu.Lock()
		delete(r.upConns, uw.conn)
		r.upMu.Unlock()
		close(uw.conn.ended)
	}
	return r.finish(reqCtx, x, nil)
}

// upgradeWriter hands ReverseProxy a client connection that closes itself
// after the idle timeout and that Close can end cleanly, and wraps its
// backend connection likewise (see wrapBackend).
type upgradeWriter struct {
	http.ResponseWriter
	r           *Router
	idle        time.Duration
	websocket   bool
	backendConn atomic.Pointer[net.Conn] // the backend connection, once the transport has one
	upstream    *upstreamConn            // the wrapped backend side, if any
	conn        *idleConn                // once hijacked
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrapBackend puts a WebSocket's backend side, the body of its 101
// response, behind an upstreamConn, so that a close frame can be sent that
// way too. ReverseProxy calls it (through ModifyResponse) before Hijack.
func (w *upgradeWriter) wrapBackend(res *http.Response) {
	rwc, ok := res.Body.(io.ReadWriteCloser)
	nc := w.backendConn.Load()
	if !w.websocket || !ok || nc == nil {
		return
	}
	w.upstream = &upstreamConn{ReadWriteCloser: rwc, conn: *nc, out: wsOutbound{track: true}}
	res.Body = w.upstream
}

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	ic := &idleConn{Conn: conn, idle: w.idle, handshake: w.r.closeHandshake, ended: make(chan struct{}),
		out: wsOutbound{track: w.websocket, swallow: true}, upstream: w.upstream}
	ic.touch()
	w.conn = ic
	w.r.upMu.Lock()
	w.r.upConns[ic] = struct{}{}
	w.r.upMu.Unlock()
	return ic, brw, nil
}

// idleConn fails a read once neither direction has moved for idle. Reads
// wait in slices of idle; a slice that ends while writes went on is
// retried, so a one-way stream (server pushes only) stays open. A
// WebSocket gets a close frame first, and handshake to answer it.
type idleConn struct {
	net.Conn
	idle      time.Duration
	handshake time.Duration
	last      atomic.Int64  // unix nanoseconds of the last traffic
	closeBy   time.Time     // once idle: when to stop waiting for the close answer (the reader's only)
	ended     chan struct{} // closed once its upgrade has returned

	out      wsOutbound    // writes to the client
	upstream *upstreamConn // the backend side of a WebSocket, or nil
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		deadline, err := c.readDeadline()
		if err != nil {
			return 0, err
		}
		_ = c.Conn.SetReadDeadline(deadline)
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.touch()
		}
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() {
			continue // the loop ends it unless a write moved meanwhile
		}
		return n, err
	}
}

// readDeadline is how long the next read may wait. Once the connection has
// been idle for c.idle, a WebSocket client gets a close frame and until
// c.handshake later to answer it: its answer, passed on, ends the upgrade
// (see wsOutbound.write). Then, or with no close frame sent, errUpgradeIdle.
func (c *idleConn) readDeadline() (time.Time, error) {
	now := time.Now()
	if !c.closeBy.IsZero() {
		if now.Before(c.closeBy) {
			return c.closeBy, nil
		}
		return time.Time{}, errUpgradeIdle
	}
	deadline := time.Unix(0, c.last.Load()).Add(c.idle)
	if now.Before(deadline) {
		return deadline, nil
	}
	c.closeBy = now.Add(c.handshake)
	if !c.goingAway(c.closeBy) {
		return time.Time{}, errUpgradeIdle
	}
	return c.closeBy, nil
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.out.write(p, func(p []byte) (int, error) {
		// A client that stops reading must not pin the connection either.
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
		c.out.capDeadline(c.Conn)
		return c.Conn.Write(p)
	})
	if n > 0 {
		c.touch()
	}
	return n, err
}

// goingAway sends both ends of a WebSocket a close frame (1001, going
// away) before Close tears the connections down, so each sees a clean
// close and not an abnormal one (1006). It reports whether the client got
// one, or will once the frame being sent to it ends.
func (c *idleConn) goingAway(deadline time.Time) bool {
	sent := c.out.inject(c.Conn, deadline, func() {
		_, _ = c.Conn.Write(closeGoingAway[:])
	})
	if c.upstream != nil {
		c.upstream.goingAway(deadline)
	}
	return sent
}

// upstreamConn is the backend side of an upgraded WebSocket: the
// transport's connection, with its writes (the client's frames) followed.
type upstreamConn struct {
	io.ReadWriteCloser
	conn net.Conn // the same connection, for the close frame's deadline
	out  wsOutbound
}

func (u *upstreamConn) Write(p []byte) (int, error) { return u.out.write(p, u.ReadWriteCloser.Write) }

// goingAway sends the backend a client's close frame, 1001, masked as a
// client's frames must be (RFC 6455 section 5.3).
func (u *upstreamConn) goingAway(deadline time.Time) {
	u.out.inject(u.conn, deadline, func() {
		var m [4]byte
		_, _ = rand.Read(m[:])
		frame := [...]byte{0x88, 0x82, m[0], m[1], m[2], m[3], closeGoingAway[2] ^ m[0], closeGoingAway[3] ^ m[1]}
		_, _ = u.ReadWriteCloser.Write(frame[:])
	})
}

// wsOutbound serializes the writes of one direction of an upgraded
// connection and, for a WebSocket, follows its frames, so that a close
// frame can be put between two of them.
type wsOutbound struct {
	mu      sync.Mutex
	track   bool         // a WebSocket: follow frames
	swallow bool         // once gone, writes succeed unsent instead of failing
	frames  frameTracker // of the bytes written, under mu
	gone    bool         // a close frame was injected: no more writes
	after   func()       // sends a close frame once the frame under way ends, under mu
	closing atomic.Int64 // unix ns: the write deadline of a pending close frame, 0 if none
}

// write passes p to send unless a close frame was injected. Then it
// fails, which ends the upgrade, or with swallow drops p: the client's side
// swallows the backend's answer to its close frame, so that the upgrade
// lasts until the client's own answer fails on the backend's side (RFC 6455
// section 7.1.1: the server closes the connection once it has the peer's).
// A close frame waiting for the frame under way goes right after its last
// byte; what p holds beyond that is treated as written after it.
func (o *wsOutbound) write(p []byte, send func([]byte) (int, error)) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gone {
		return o.refuse(p)
	}
	whole := p
	if o.after != nil {
		p = p[:o.frames.frameEnd(p)]
	}
	n, err := send(p)
	if o.track && n > 0 {
		o.frames.feed(p[:n])
	}
	if err != nil || o.after == nil || !o.frames.atBoundary() {
		return n, err
	}
	if !o.frames.closed { // that frame was no close frame of the peer's own
		o.gone = true
		o.after()
	}
	o.after = nil
	if !o.gone {
		return n, nil
	}
	m, err := o.refuse(whole[n:])
	return n + m, err
}

// refuse answers a write that comes after the close frame.
func (o *wsOutbound) refuse(p []byte) (int, error) {
	if o.swallow {
		return len(p), nil
	}
	return 0, net.ErrClosed
}

// inject runs send, which writes a close frame on conn by deadline, unless
// this is no WebSocket or a close frame went that way already; it reports
// whether it ran send or will. A write stopped mid-frame leaves send to
// the write that ends that frame (a frame cannot be cut). It waits for a
// write under way, one that has already delivered its bytes included, but
// no longer than deadline: a write stuck on a peer that does not read fails
// then, as does one that starts meanwhile (see capDeadline).
func (o *wsOutbound) inject(conn net.Conn, deadline time.Time, send func()) (sent bool) {
	if !o.track {
		return false
	}
	o.closing.Store(deadline.UnixNano())
	_ = conn.SetWriteDeadline(deadline)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gone || o.frames.closed {
		return false
	}
	if !o.frames.atBoundary() {
		o.after = send
		return true
	}
	o.gone = true
	send()
	return true
}

// capDeadline brings conn's write deadline, just set by a writer, back to
// a pending close frame's. Run after that writer's SetWriteDeadline, it
// wins over it whichever of the two reads closing first.
func (o *wsOutbound) capDeadline(conn net.Conn) {
	if d := o.closing.Load(); d != 0 {
		_ = conn.SetWriteDeadline(time.Unix(0, d))
	}
}

// closeGoingAway is a server's WebSocket close frame with status 1001.
var closeGoingAway = [...]byte{0x88, 0x02, 0x03, 0xe9}

// frameTracker follows WebSocket frame boundaries in a byte stream (RFC
// 6455 section 5.2), to know where a control frame may be injected.
type frameTracker struct {
	hdr    [14]byte
	hdrN   int    // header bytes of the current frame seen
	need   int    // its header length, once the first two bytes are known
	left   uint64 // its payload bytes still to come
	closed bool   // a close frame went by: the closing handshake has begun
}

func (f *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			n := min(uint64(len(p)), f.left)
			f.left -= n
			p = p[n:]
			continue
		}
		f.hdr[f.hdrN] = p[0]
		f.hdrN++
		p = p[1:]
		if f.hdrN == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4 // masking key
			}
		}
		if f.hdrN >= 2 && f.hdrN == f.need {
			f.closed = f.closed || f.hdr[0]&0x0f == 0x8
			switch n := uint64(f.hdr[1] & 0x7f); n {
			case 126:
				f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
			case 127:
				f.left = binary.BigEndian.Uint64(f.hdr[2:10])
			default:
				f.left = n
			}
			f.hdrN = 0
		}
	}
}

func (f *frameTracker) atBoundary() bool { return f.left == 0 && f.hdrN == 0 }

// frameEnd is how many bytes of p end the frame under way: all of p if it
// does not end there.
func (f frameTracker) frameEnd(p []byte) int {
	for i := 0; i < len(p); {
		if f.left > 0 {
			n := min(uint64(len(p)-i), f.left)
			f.left -= n
			i += int(n)
		} else {
			f.feed(p[i : i+1])
			i++
		}
		if f.atBoundary() {
			return i
		}
	}
	return len(p)
}

var errUpgradeIdle = errors.New("affinity router: upgraded connection idle")

// CloseWrite passes a backend's end of stream on to the client as a
// half-close, as ReverseProxy does on a bare connection.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
