package router

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Errors for request bodies the client failed to send: answered 408 and
// 400 (or not at all when the client left), never charged to the backend.
var (
	errClientSlow = errors.New("request body too slow")
	errBadBody    = errors.New("malformed request body")
	errClientLeft = errors.New("client left mid-body")
)

// bodyReader wraps a request body so a client cannot hold a backend's
// request slot by trickling it: each read must bring bytes within
// BodyReadTimeout, and the body must average MinUploadRate over the time
// spent waiting for the client (the backend reading slowly does not count).
type bodyReader struct {
	body    io.ReadCloser
	ctl     *http.ResponseController
	timeout time.Duration
	rate    int64 // bytes per second; 0: no rate check

	// Read is called by one goroutine at a time (the transport's writer).
	read   int64
	waited time.Duration

	err     atomic.Pointer[error] // the first client failure
	touched atomic.Bool           // Read was called: the body cannot go elsewhere

	mu      sync.Mutex // deadlines vs stop
	stopped bool
}

func (r *Router) newBodyReader(w http.ResponseWriter, body io.ReadCloser) *bodyReader {
	b := &bodyReader{body: body, ctl: http.NewResponseController(w), timeout: r.cfg.BodyReadTimeout}
	if r.cfg.MinUploadRate > 0 {
		b.rate = int64(r.cfg.MinUploadRate)
	}
	return b
}

func (b *bodyReader) Read(p []byte) (int, error) {
	b.touched.Store(true)
	if err := b.failed(); err != nil {
		return 0, err
	}
	wait := b.timeout
	if b.rate > 0 {
		// The bytes read so far have earned read/rate of waiting, on top of
		// a grace of one timeout.
		earned := b.timeout + time.Duration(b.read*int64(time.Second)/b.rate) - b.waited
		if earned <= 0 {
			return 0, b.fail(fmt.Errorf("%w: %d bytes in %v, want %d B/s", errClientSlow, b.read, b.waited.Round(time.Millisecond), b.rate))
		}
		wait = min(wait, earned)
	}
	start := time.Now()
	b.setDeadline(start.Add(wait))
	n, err := b.body.Read(p)
	b.waited += time.Since(start)
	b.read += int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.setDeadline(time.Time{}) // the server's own read of the next request must not inherit it
	default:
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			err = fmt.Errorf("%w: nothing for %v", errClientSlow, wait.Round(time.Millisecond))
		case ne != nil, errors.Is(err, io.ErrUnexpectedEOF):
			err = fmt.Errorf("%w: %w", errClientLeft, err)
		default: // net/http's framing errors: bad chunk size and the like
			err = fmt.Errorf("%w: %w", errBadBody, err)
		}
		return n, b.fail(err)
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.body.Close() }

// untouched reports whether no read of the body has begun: no byte of it
// can have reached a backend, and it can still go whole to another one
// (httputil.ReverseProxy keeps the transport from closing it when a dial
// fails).
func (b *bodyReader) untouched() bool { return !b.touched.Load() }

func (b *bodyReader) fail(err error) error {
	b.err.CompareAndSwap(nil, &err)
	return *b.err.Load()
}

// failed returns the client's failure, if any.
func (b *bodyReader) failed() error {
	if p := b.err.Load(); p != nil {
		return *p
	}
	return nil
}

// setDeadline sets the client connection's read deadline, unless the
// handler has returned (the connection may then serve another request).
func (b *bodyReader) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		_ = b.ctl.SetReadDeadline(t) // unsupported (e.g. in tests): no timeout
	}
}

// stop clears the deadline when the handler returns.
func (b *bodyReader) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		b.stopped = true
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
}
