package actors

import (
	"context"
	"sync"
)

// group counts running goroutines like sync.WaitGroup, but can be waited
// for with a context, without leaving a goroutine behind when the context
// ends first.
type group struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (g *group) Add(n int) {
	g.mu.Lock()
	g.n += n
	g.mu.Unlock()
}

func (g *group) Done() {
	g.mu.Lock()
	g.n--
	if g.n == 0 && g.zero != nil {
		close(g.zero)
		g.zero = nil
	}
	g.mu.Unlock()
}

// wait returns once the count is zero, or ctx's error if it ends first.
func (g *group) wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	if g.zero == nil {
		g.zero = make(chan struct{})
	}
	zero := g.zero
	g.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
