package actors

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/affinity-go/affinity/messages"
	"github.com/affinity-go/affinity/supervisor"
)

// fuzzWorker answers every call, and every stream with one item, with the
// name of the pool it ran in, so a fuzz target can tell where a call went.
type fuzzWorker struct{}

func (fuzzWorker) Handle(_ context.Context, c messages.Call) (any, error) { return c.Pool, nil }

func (fuzzWorker) HandleStream(_ context.Context, c messages.Call, send func(any) error) error {
	return send(c.Pool)
}

func fuzzFactory(context.Context, WorkerInfo) (Worker, error) { return fuzzWorker{}, nil }

// fuzzSentinels are the errors a call may end with; anything else is a bug.
var fuzzSentinels = []error{
	ErrWorkerBusy, ErrSessionWorkerUnavailable, ErrNoWorkersAvailable, ErrPoolSaturated, ErrQueueTimeout,
	ErrPoolNotFound, ErrRefLost, ErrWorkerFailed, ErrShutdown, ErrInvalidArgument, ErrStreamingUnsupported,
	context.DeadlineExceeded, context.Canceled,
}

func isSentinel(err error) bool {
	for _, s := range fuzzSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fuzzConfigInput is the primitive form of a Config that FuzzConfig mutates.
// Durations are in microseconds so that small, zero and negative values,
// where the edge cases are, come up often.
type fuzzConfigInput struct {
	Pools          uint8 // %4: 0..3 pools
	Names          [3]string
	Sizes          [3]int // %8, sign kept
	Capacity       int    // %8, sign kept
	QueueSize      int
	QueueTimeout   int32
	Affinity       uint8 // pool i gets Affinity+i (wrapping)
	MaxCalls       int
	MaxAge         int32
	DefaultPool    string
	SessionTTL     int32
	HealthInterval int32
	HealthTimeout  int32
	MaxRestarts    int
	Window         int32
	InitialBackoff int32
	MaxBackoff     int32
	PoolRestart    bool // the policy goes on pool 0 instead of the runtime
	NilFactory     bool // the last pool has no factory
}

func us(v int32) time.Duration { return time.Duration(v) * time.Microsecond }

func (in fuzzConfigInput) config() Config {
	policy := supervisor.Policy{MaxRestarts: in.MaxRestarts, Window: us(in.Window),
		InitialBackoff: us(in.InitialBackoff), MaxBackoff: us(in.MaxBackoff)}
	cfg := Config{DefaultPool: in.DefaultPool, SessionIdleTTL: us(in.SessionTTL),
		HealthInterval: us(in.HealthInterval), HealthTimeout: us(in.HealthTimeout)}
	if !in.PoolRestart {
		cfg.Restart = policy
	}
	n := int(in.Pools % 4)
	for i := 0; i < n; i++ {
		pc := PoolConfig{Name: in.Names[i], Size: in.Sizes[i] % 8, NewWorker: fuzzFactory,
			Affinity: Affinity(in.Affinity + uint8(i)), Capacity: in.Capacity % 8, QueueSize: in.QueueSize,
			QueueTimeout: us(in.QueueTimeout), MaxCalls: in.MaxCalls, MaxAge: us(in.MaxAge)}
		if i == 0 && in.PoolRestart {
			pc.Restart = &policy
		}
		if i == n-1 && in.NilFactory {
			pc.NewWorker = nil
		}
		cfg.Pools = append(cfg.Pools, pc)
	}
	return cfg
}

// problem is an independent reading of the documented rules: the first
// reason cfg must be refused, or "" when Start must accept it.
func problem(cfg Config) string {
	if len(cfg.Pools) == 0 {
		return "no pools"
	}
	names := map[string]bool{}
	for _, p := range cfg.Pools {
		switch {
		case p.Name == "" || names[p.Name]:
			return "empty or duplicate name"
		case p.Size < 1:
			return "size below 1"
		case p.NewWorker == nil:
			return "nil factory"
		case p.Affinity > StrictFailFast:
			return "unknown affinity"
		case p.Capacity < 0 || p.QueueSize < 0 || p.QueueTimeout < 0 || p.MaxCalls < 0 || p.MaxAge < 0:
			return "negative pool limit"
		case p.Restart != nil && p.Restart.Validate() != nil:
			return "bad pool restart policy"
		}
		names[p.Name] = true
	}
	switch {
	case cfg.DefaultPool != "" && !names[cfg.DefaultPool]:
		return "unknown default pool"
	case cfg.HealthInterval < 0 || cfg.HealthTimeout < 0:
		return "negative health interval or timeout"
	case cfg.HealthInterval > 0 && cfg.HealthInterval < MinHealthInterval:
		return "health interval too short"
	case cfg.Restart.Validate() != nil:
		return "bad restart policy"
	}
	return ""
}

// FuzzConfig starts runtimes from arbitrary configurations. Start must never
// panic or hang, must refuse exactly the invalid configurations with
// ErrInvalidConfig, and a runtime it returns must take a call in its default
// pool and shut down cleanly, leaving no goroutine behind.
func FuzzConfig(f *testing.F) {
	valid := fuzzConfigInput{Pools: 1, Names: [3]string{"p"}, Sizes: [3]int{2}, Affinity: uint8(Hint)}
	three := fuzzConfigInput{Pools: 3, Names: [3]string{"a", "b", "c"}, Sizes: [3]int{1, 2, 3}, Capacity: 2,
		QueueSize: 1, QueueTimeout: 1, DefaultPool: "b", SessionTTL: -1, HealthInterval: 1000, HealthTimeout: 1,
		MaxRestarts: -1, Window: 1, InitialBackoff: 1, MaxBackoff: 1}
	seeds := []fuzzConfigInput{valid, three}
	for _, tweak := range []func(*fuzzConfigInput){
		func(in *fuzzConfigInput) { in.Pools = 0 },
		func(in *fuzzConfigInput) { in.Names[0] = "" },
		func(in *fuzzConfigInput) { in.Pools, in.Names[1], in.Sizes[1] = 2, "p", 1 }, // duplicate name
		func(in *fuzzConfigInput) { in.Sizes[0] = 0 },
		func(in *fuzzConfigInput) { in.Sizes[0] = -3 },
		func(in *fuzzConfigInput) { in.Capacity = -1 },
		func(in *fuzzConfigInput) { in.QueueSize = -1 },
		func(in *fuzzConfigInput) { in.QueueTimeout = -1 },
		func(in *fuzzConfigInput) { in.Affinity = 4 },
		func(in *fuzzConfigInput) { in.Affinity = 255 },
		func(in *fuzzConfigInput) { in.MaxCalls = -1 },
		func(in *fuzzConfigInput) { in.MaxAge = -1 },
		func(in *fuzzConfigInput) { in.DefaultPool = "nope" },
		func(in *fuzzConfigInput) { in.HealthInterval = -1 },
		func(in *fuzzConfigInput) { in.HealthTimeout = -1 },
		func(in *fuzzConfigInput) { in.Window = -1 },
		func(in *fuzzConfigInput) { in.InitialBackoff = -1 },
		func(in *fuzzConfigInput) { in.InitialBackoff, in.MaxBackoff = 100, 10 },
		func(in *fuzzConfigInput) { in.InitialBackoff, in.MaxBackoff, in.PoolRestart = 100, 10, true },
		func(in *fuzzConfigInput) { in.NilFactory = true },
		// Valid edge cases: every worker recycled after each call or at
		// once, expiry and health checks as often as they can run.
		func(in *fuzzConfigInput) { in.MaxCalls, in.Affinity = 1, uint8(StrictQueue) },
		func(in *fuzzConfigInput) { in.MaxAge, in.HealthInterval, in.Affinity = 1, 1, uint8(StrictFailFast) },
		func(in *fuzzConfigInput) { in.SessionTTL, in.QueueSize, in.Capacity = 1, 1, 7 },
		func(in *fuzzConfigInput) { in.Affinity, in.Names[0] = uint8(DefaultAffinity), "\x00ü" },
	} {
		in := valid
		tweak(&in)
		seeds = append(seeds, in)
	}
	for _, in := range seeds {
		f.Add(in.Pools, in.Names[0], in.Names[1], in.Names[2], in.Sizes[0], in.Sizes[1], in.Sizes[2],
			in.Capacity, in.QueueSize, in.QueueTimeout, in.Affinity, in.MaxCalls, in.MaxAge, in.DefaultPool,
			in.SessionTTL, in.HealthInterval, in.HealthTimeout, in.MaxRestarts, in.Window, in.InitialBackoff,
			in.MaxBackoff, in.PoolRestart, in.NilFactory)
	}

	f.Fuzz(func(t *testing.T, pools uint8, name0, name1, name2 string, size0, size1, size2, capacity, queueSize int,
		queueTimeout int32, affinity uint8, maxCalls int, maxAge int32, defaultPool string,
		sessionTTL, healthInterval, healthTimeout int32, maxRestarts int, window, initialBackoff, maxBackoff int32,
		poolRestart, nilFactory bool) {
		in := fuzzConfigInput{Pools: pools, Names: [3]string{name0, name1, name2}, Sizes: [3]int{size0, size1, size2},
			Capacity: capacity, QueueSize: queueSize, QueueTimeout: queueTimeout, Affinity: affinity, MaxCalls: maxCalls,
			MaxAge: maxAge, DefaultPool: defaultPool, SessionTTL: sessionTTL, HealthInterval: healthInterval,
			HealthTimeout: healthTimeout, MaxRestarts: maxRestarts, Window: window, InitialBackoff: initialBackoff,
			MaxBackoff: maxBackoff, PoolRestart: poolRestart, NilFactory: nilFactory}
		cfg := in.config()
		before := goleak.IgnoreCurrent()
		// The fuzzing engine has no per-input time limit: a hang must fail
		// the input rather than stall the run.
		done := make(chan struct{})
		go func() {
			defer close(done)
			checkConfig(t, cfg)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("Start, a call or Shutdown hung with %+v", in)
		}
		goleak.VerifyNone(t, before)
	})
}

func checkConfig(t *testing.T, cfg Config) {
	want := problem(cfg)
	rt, err := Start(cfg)
	if err != nil {
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Start: %v, not ErrInvalidConfig", err)
		}
		if want == "" {
			t.Errorf("Start refused a valid config: %v", err)
		}
		return
	}
	if want != "" {
		t.Errorf("Start accepted a config with %s", want)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if _, err := rt.Session("after").Call(context.Background(), nil); !errors.Is(err, ErrShutdown) {
			t.Errorf("call after Shutdown: %v, want ErrShutdown", err)
		}
	}()

	st := rt.Stats()
	for _, p := range cfg.Pools {
		if ps := st.Pools[p.Name]; ps.Size != p.Size || ps.Ready != p.Size {
			t.Errorf("pool %q: size %d, ready %d after Start, want %d", p.Name, ps.Size, ps.Ready, p.Size)
		}
	}
	wantPool := cfg.DefaultPool
	if wantPool == "" {
		wantPool = cfg.Pools[0].Name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := rt.Session("s").Call(ctx, nil)
	recycling := false
	for _, p := range cfg.Pools {
		recycling = recycling || p.MaxCalls > 0 || p.MaxAge > 0
	}
	switch {
	case err == nil:
		if got != wantPool {
			t.Errorf("call ran in pool %v, want the default pool %q", got, wantPool)
		}
	case !isSentinel(err):
		t.Errorf("call: %v wraps no documented error", err)
	case !recycling:
		// Nothing can take the only worker away from a lone call.
		t.Errorf("call: %v", err)
	}
}

// FuzzCallOptions makes calls and streams with arbitrary session ids, pool
// names and raw affinity values. Invalid input must get the documented error
// (never a panic): an unknown mode ErrInvalidArgument, an unknown pool
// ErrPoolNotFound, an empty session id ErrInvalidArgument; valid input runs
// in the pool it names (later options win; empty names none).
func FuzzCallOptions(f *testing.F) {
	rt, err := Start(Config{Pools: []PoolConfig{
		{Name: "a", Size: 2, NewWorker: fuzzFactory},
		{Name: "b", Size: 1, Affinity: StrictQueue, NewWorker: fuzzFactory},
		{Name: "ü", Size: 1, Affinity: StrictFailFast, Capacity: 2, NewWorker: fuzzFactory},
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			f.Error(err)
		}
	})

	for _, seed := range []struct {
		session, pool1 string
		aff1           uint8
		pool2          string
		aff2, opts     uint8
		stream         bool
	}{
		{"s", "", 0, "", 0, 0, false},
		{"s", "a", 1, "", 0, 1, false},
		{"s", "b", 2, "ü", 3, 2, false},
		{"s", "ü", 3, "", 0, 2, true},
		{"s", "nope", 1, "", 0, 1, false},
		{"s", "A", 0, "", 0, 1, true},
		{"s", "a", 4, "", 0, 1, false},
		{"s", "a", 255, "b", 0, 2, true},
		{"s", "a", 1, "a ", 2, 2, false},
		{"", "a", 1, "", 0, 1, false},
		{"\xff", "\xff", 3, "", 0, 1, true},
	} {
		f.Add(seed.session, seed.pool1, seed.aff1, seed.pool2, seed.aff2, seed.opts, seed.stream)
	}

	f.Fuzz(func(t *testing.T, session, pool1 string, aff1 uint8, pool2 string, aff2, nOpts uint8, stream bool) {
		opts := []CallOption{WithPool(pool1), WithAffinity(Affinity(aff1)), WithPool(pool2), WithAffinity(Affinity(aff2))}
		opts = opts[:2*int(nOpts%3)]
		// Expected outcome: the last non-empty pool, the last non-default
		// mode, checked in that order before the session id.
		wantPool, mode := "a", DefaultAffinity
		for _, o := range opts {
			if o.pool != "" {
				wantPool = o.pool
			}
			if o.affinity != DefaultAffinity {
				mode = o.affinity
			}
		}
		var want error
		switch {
		case mode > StrictFailFast:
			want = ErrInvalidArgument
		case wantPool != "a" && wantPool != "b" && wantPool != "ü":
			want = ErrPoolNotFound
		case session == "":
			want = ErrInvalidArgument
		}

		s := rt.Session(session)
		defer s.Close() // fuzzed ids must not pile up in the runtime
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got any
		if stream {
			var st *Stream
			if st, err = s.Stream(ctx, nil, opts...); err == nil {
				got, err = st.Recv()
				if _, end := st.Recv(); end != io.EOF {
					t.Errorf("stream did not end after its one item: %v", end)
				}
				st.Close()
			}
		} else {
			got, err = s.Call(ctx, nil, opts...)
		}
		switch {
		case want != nil && !errors.Is(err, want):
			t.Fatalf("got %v, %v; want %v", got, err, want)
		case want == nil && err != nil:
			t.Fatalf("valid call failed: %v", err)
		case want == nil && got != wantPool:
			t.Fatalf("call ran in pool %v, want %q", got, wantPool)
		}
	})
}

// FuzzCallRef makes calls on refs with arbitrary fields, as a ref read back
// from outside (a cookie, a database) could have. Only a ref naming a live
// incarnation of a pool's worker in a session may run, and there it runs;
// anything else gets ErrInvalidArgument, ErrPoolNotFound or ErrRefLost.
func FuzzCallRef(f *testing.F) {
	// The factory records every incarnation it builds: with no-op workers
	// and no recycling, those are the live ones for the whole run.
	var mu sync.Mutex
	live := map[string]map[int]uint64{"a": {}, "b": {}}
	factory := func(ctx context.Context, info WorkerInfo) (Worker, error) {
		mu.Lock()
		defer mu.Unlock()
		live[info.Pool][info.ID] = info.Incarnation
		return fuzzFactory(ctx, info)
	}
	rt, err := Start(Config{Pools: []PoolConfig{
		{Name: "a", Size: 2, NewWorker: factory},
		{Name: "b", Size: 1, Affinity: StrictFailFast, NewWorker: factory},
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			f.Error(err)
		}
	})
	// Start returned once every worker was built; taking the lock orders
	// the factory's writes before the fuzz function's reads.
	mu.Lock()
	known := live
	mu.Unlock()
	f.Add("s", "a", 0, uint64(1), "k", "", uint8(0))
	f.Add("s", "a", 1, uint64(2), "", "a", uint8(3))
	f.Add("s", "b", 0, uint64(1), "k", "", uint8(2))
	f.Add("s", "a", 1, uint64(1), "k", "", uint8(0))
	f.Add("s", "a", 2, uint64(3), "k", "", uint8(0))
	f.Add("s", "a", -1, uint64(1), "k", "", uint8(0))
	f.Add("s", "nope", 0, uint64(1), "k", "", uint8(0))
	f.Add("s", "a", 0, uint64(1), "k", "b", uint8(0))
	f.Add("s", "a", 0, uint64(0), "k", "", uint8(0))
	f.Add("", "a", 0, uint64(1), "k", "", uint8(0))
	f.Add("s", "a", 0, uint64(1), "k", "", uint8(9))

	f.Fuzz(func(t *testing.T, session, pool string, worker int, inc uint64, key, optPool string, aff uint8) {
		ref := messages.Ref{Session: session, Pool: pool, Worker: worker, Incarnation: inc, Key: key}
		var want error
		switch {
		case Affinity(aff) > StrictFailFast, !ref.Valid(), optPool != "" && optPool != pool:
			want = ErrInvalidArgument
		case known[pool] == nil:
			want = ErrPoolNotFound
		case known[pool][worker] != inc:
			want = ErrRefLost
		}
		defer rt.Session(session).Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := rt.CallRef(ctx, ref, nil, WithPool(optPool), WithAffinity(Affinity(aff)))
		switch {
		case want != nil && !errors.Is(err, want):
			t.Fatalf("got %v, %v; want %v", got, err, want)
		case want == nil && (err != nil || got != pool):
			t.Fatalf("ref call: %v, %v; want a run in pool %q", got, err, pool)
		}
	})
}
