package router

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
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
	x.in = x.in.WithContext(ctx)
	uw := &upgradeWriter{ResponseWriter: x.w, r: r, idle: r.cfg.UpgradeIdleTimeout,
		websocket: strings.EqualFold(x.in.Header.Get("Upgrade"), "websocket")}
	x.w = uw
	x.serve()
	if uw.conn != nil {
		r.upMu.Lock()
		delete(r.upConns, uw.conn)
		r.upMu.Unlock()
	}
	return r.finish(reqCtx, x, nil)
}

// upgradeWriter hands ReverseProxy a client connection that closes itself
// after the idle timeout and that Close can end cleanly.
type upgradeWriter struct {
	http.ResponseWriter
	r         *Router
	idle      time.Duration
	websocket bool
	conn      *idleConn // once hijacked
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	ic := &idleConn{Conn: conn, idle: w.idle, websocket: w.websocket}
	ic.touch()
	w.conn = ic
	w.r.upMu.Lock()
	w.r.upConns[ic] = struct{}{}
	w.r.upMu.Unlock()
	return ic, brw, nil
}

// idleConn fails a read once neither direction has moved for idle. Reads
// wait in slices of idle; a slice that ends while writes went on is
// retried, so a one-way stream (server pushes only) stays open.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last traffic

	websocket bool
	wmu       sync.Mutex   // writes to the client, and goingAway
	frames    frameTracker // of the bytes written to the client, under wmu
	gone      bool         // a close frame was sent: no more writes
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		deadline := time.Unix(0, c.last.Load()).Add(c.idle)
		if now := time.Now(); !now.Before(deadline) {
			c.goingAway(now.Add(time.Second))
			return 0, errUpgradeIdle
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

func (c *idleConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.gone {
		return 0, net.ErrClosed
	}
	// A client that stops reading must not pin the connection either.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.touch()
		if c.websocket {
			c.frames.feed(p[:n])
		}
	}
	return n, err
}

// goingAway sends a WebSocket client a close frame (1001, going away)
// before Close tears the connection down, so the client sees a clean close
// and not an abnormal one (1006). It is skipped when a write is under way
// or stopped mid-frame: a frame cannot be injected there.
func (c *idleConn) goingAway(deadline time.Time) {
	if !c.websocket || !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if c.gone || !c.frames.atBoundary() {
		return
	}
	c.gone = true
	_ = c.Conn.SetWriteDeadline(deadline)
	_, _ = c.Conn.Write(closeGoingAway[:])
}

// closeGoingAway is a server's WebSocket close frame with status 1001.
var closeGoingAway = [...]byte{0x88, 0x02, 0x03, 0xe9}

// frameTracker follows WebSocket frame boundaries in a byte stream (RFC
// 6455 section 5.2), to know where a control frame may be injected.
type frameTracker struct {
	hdr  [14]byte
	hdrN int    // header bytes of the current frame seen
	need int    // its header length, once the first two bytes are known
	left uint64 // its payload bytes still to come
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

var errUpgradeIdle = errors.New("affinity router: upgraded connection idle")

// CloseWrite passes a backend's end of stream on to the client as a
// half-close, as ReverseProxy does on a bare connection.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
