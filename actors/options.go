package actors

import (
	"context"
	"fmt"

	"github.com/affinity-go/affinity/messages"
)

// CallOption overrides the pool or affinity of one call, or lends it its
// caller's goroutine. Options are plain values (no allocation); later
// options win.
type CallOption struct {
	pool      string
	affinity  Affinity
	onCaller  bool
	window    int
	windowSet bool
}

// maxStreamWindow bounds WithStreamWindow: a stream's buffer is allocated
// whole when it starts.
const maxStreamWindow = 1 << 16

// WithStreamWindow bounds how many items of a streaming call may wait for
// Recv: the worker's send waits once n items are ahead of what the reader
// took. The default is 16 in one process and 64 across cluster members,
// where the reader acks every n/2 items with a remote message. n must be
// between 1 and 65536. Calls that do not stream ignore it.
func WithStreamWindow(n int) CallOption { return CallOption{window: n, windowSet: true} }

// streamWindow returns the window opts ask for (0: the default), or an
// error for one out of range.
func streamWindow(opts []CallOption) (int, error) {
	n := 0
	for _, o := range opts {
		if o.windowSet {
			if o.window < 1 || o.window > maxStreamWindow {
				return 0, fmt.Errorf("%w: stream window %d (want 1 to %d)", ErrInvalidArgument, o.window, maxStreamWindow)
			}
			n = o.window
		}
	}
	return n, nil
}

// RunOnCaller lets a call of the blocking API whose context can be
// cancelled run on its caller's goroutine, as a call whose context cannot
// be cancelled may (see PoolConfig.OwnGoroutineOnly). A call that runs
// there returns when the worker's Handle returns, even if ctx ends first:
// the worker must watch ctx. A call that waits for its worker still
// returns as soon as ctx ends. It suits callers that would wait for the
// call anyway, such as a server answering a request.
func RunOnCaller() CallOption { return CallOption{onCaller: true} }

// onCaller reports whether opts include RunOnCaller.
func onCaller(opts []CallOption) bool {
	for _, o := range opts {
		if o.onCaller {
			return true
		}
	}
	return false
}

// WithPool runs the call in the named pool instead of the default one.
func WithPool(name string) CallOption { return CallOption{pool: name} }

// WithAffinity overrides the pool's default affinity mode for this call.
func WithAffinity(a Affinity) CallOption { return CallOption{affinity: a} }

// resolve validates a call's input and picks its pool and mode.
func (rt *Runtime) resolve(ctx context.Context, opts []CallOption, ref *messages.Ref) (*pool, Affinity, error) {
	if ctx == nil {
		return nil, 0, fmt.Errorf("%w: nil context", ErrInvalidArgument)
	}
	var poolName string
	mode := DefaultAffinity
	for _, o := range opts {
		if o.pool != "" {
			poolName = o.pool
		}
		if o.affinity != DefaultAffinity {
			mode = o.affinity
		}
	}
	if !mode.Valid() {
		return nil, 0, fmt.Errorf("%w: %w: %d", ErrInvalidArgument, ErrInvalidAffinity, uint8(mode))
	}
	if ref != nil {
		if !ref.Valid() {
			return nil, 0, fmt.Errorf("%w: incomplete ref %+v", ErrInvalidArgument, *ref)
		}
		if poolName != "" && poolName != ref.Pool {
			return nil, 0, fmt.Errorf("%w: ref lives in pool %q, call names pool %q", ErrInvalidArgument, ref.Pool, poolName)
		}
		poolName = ref.Pool
	}
	p := rt.defaultPool
	if poolName != "" {
		if p = rt.byName[poolName]; p == nil {
			return nil, 0, fmt.Errorf("%w: %q", ErrPoolNotFound, poolName)
		}
	}
	if mode == DefaultAffinity {
		mode = p.cfg.Affinity
	}
	return p, mode, nil
}
