package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// Requests the counter worker understands. A CallRequest's Payload reaches
// the worker as Call.Payload unchanged, so plain Go values will do.
type (
	count   struct{}              // add one to the session's counter, return it
	crash   struct{}              // panic: the worker is tainted and restarted
	openDoc struct{ key string }  // create a document here, return a ref to it
	write   struct{ text string } // on a ref: append to its document
	countTo struct{ n int }       // streaming: send n items
	// hold keeps the worker busy: it calls started once it runs, then waits
	// until release is closed. started must not block: it runs on the worker.
	hold struct {
		started func()
		release <-chan struct{}
	}
)

// counter keeps state that lives in this worker incarnation's memory only:
// a call counter per session, and documents that refs point to. With the
// pool's default Capacity of 1 the runtime never calls it concurrently, so
// its maps need no lock.
type counter struct {
	calls map[string]int
	docs  map[string][]string
}

func newCounter(context.Context, actors.WorkerInfo) (actors.Worker, error) {
	return &counter{calls: map[string]int{}, docs: map[string][]string{}}, nil
}

func (w *counter) Handle(ctx context.Context, c messages.Call) (any, error) {
	switch p := c.Payload.(type) {
	case count:
		w.calls[c.Session]++
		return w.calls[c.Session], nil
	case hold:
		return w.hold(ctx, p)
	case crash:
		panic("counter corrupted")
	case openDoc:
		w.docs[p.key] = nil
		return c.NewRef(p.key), nil
	case write:
		return w.write(c, p)
	}
	return nil, fmt.Errorf("unknown request %T", c.Payload)
}

func (w *counter) hold(ctx context.Context, p hold) (any, error) {
	p.started()
	select {
	case <-p.release:
		return "released", nil
	case <-ctx.Done(): // the runtime shut down: never keep a worker forever
		return nil, ctx.Err()
	}
}

// write appends to the document a ref names. The runtime guarantees the call
// runs on the incarnation that made the ref; whether the document still
// exists is the worker's business.
func (w *counter) write(c messages.Call, p write) (any, error) {
	if c.Ref == nil {
		return nil, errors.New("write needs a ref")
	}
	doc, ok := w.docs[c.Ref.Key]
	if !ok {
		return nil, fmt.Errorf("no document %q", c.Ref.Key)
	}
	w.docs[c.Ref.Key] = append(doc, p.text)
	return len(w.docs[c.Ref.Key]), nil
}

// HandleStream makes the worker an actors.StreamWorker: each send becomes
// one messages.StreamItem in the requesting actor's mailbox.
func (w *counter) HandleStream(_ context.Context, c messages.Call, send func(any) error) error {
	p, ok := c.Payload.(countTo)
	if !ok {
		return fmt.Errorf("unknown stream request %T", c.Payload)
	}
	for i := 1; i <= p.n; i++ {
		if err := send(fmt.Sprintf("%s's item %d/%d from worker %d", c.Session, i, p.n, c.Worker)); err != nil {
			return err // the stream was cancelled
		}
	}
	return nil
}

// ReleaseSession makes the worker an actors.SessionReleaser: when a session
// ends (closed, owner gone, expired), its counter is dropped.
func (w *counter) ReleaseSession(_ context.Context, session string, _ messages.CleanupSource) {
	delete(w.calls, session)
}
