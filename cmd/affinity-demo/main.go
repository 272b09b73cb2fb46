// Command affinity-demo runs one workload against a pool of stateful workers
// once per affinity mode and prints what each mode costs.
//
// Every worker keeps a small per-session cache (LRU, bounded like any real
// worker memory). A call whose session is cached is cheap; a miss recomputes
// the session's state, which takes -miss-cost more. Halfway through each
// run one worker is crashed on purpose, so it restarts with an empty cache.
//
//	go run ./cmd/affinity-demo
//	go run ./cmd/affinity-demo -sessions 500 -callers 64 -workers 8 -duration 5s
package main

import (
	"container/list"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

const poolName = "cache"

type options struct {
	sessions int
	callers  int
	workers  int
	cache    int
	duration time.Duration
	work     time.Duration
	missCost time.Duration
	ui       string // address of the live page; "" for none
	page     *livePage
}

func main() {
	var o options
	// Named here: under `go run`, os.Args[0] is a path in the build cache.
	flag.CommandLine.Init("affinity-demo", flag.ExitOnError)
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintln(out, "usage: affinity-demo [flags]")
		fmt.Fprintln(out, "Runs one workload of stateful workers once per affinity mode and prints what each mode costs.")
		flag.PrintDefaults()
	}
	flag.IntVar(&o.sessions, "sessions", 200, "number of sessions")
	flag.IntVar(&o.callers, "callers", 32, "concurrent callers")
	flag.IntVar(&o.workers, "workers", 4, "workers in the pool")
	flag.IntVar(&o.cache, "cache", 0, "sessions each worker can cache (0: 1.5 times its fair share)")
	flag.DurationVar(&o.duration, "duration", 4*time.Second, "run time per mode")
	flag.DurationVar(&o.work, "work", 50*time.Microsecond, "how long one call keeps its worker busy on cached state")
	flag.DurationVar(&o.missCost, "miss-cost", 200*time.Microsecond, "extra time to rebuild a session's state on a cache miss")
	flag.StringVar(&o.ui, "ui", "", "serve the live page of the runtime running now (and its /metrics) on this address, e.g. 127.0.0.1:8081")
	flag.Parse()
	if o.sessions < 1 || o.callers < 1 || o.workers < 1 || o.cache < 0 || o.duration <= 0 || o.work < 0 || o.missCost < 0 {
		fmt.Fprintln(os.Stderr, "affinity-demo: -sessions, -callers, -workers and -duration must be positive; -cache, -work and -miss-cost not negative")
		os.Exit(2)
	}
	if o.cache == 0 {
		// Room for the sessions bound to it plus some that move there after
		// the crash; real worker memory is bounded too.
		o.cache = (o.sessions*3 + 2*o.workers - 1) / (2 * o.workers)
	}

	// Ctrl-C stops the current run early; the runtime still shuts down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if o.ui != "" {
		page, err := serveLivePage(ctx, o.ui)
		if err != nil {
			fmt.Fprintln(os.Stderr, "affinity-demo:", err)
			os.Exit(1)
		}
		defer page.close()
		o.page = page
	}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "affinity-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	fmt.Printf("%d sessions, %d concurrent callers, %d workers (capacity 1, each caching at most %d sessions), %v per mode.\n",
		o.sessions, o.callers, o.workers, o.cache, o.duration)
	fmt.Printf("A call keeps its worker busy for %v on cached state, plus %v to rebuild the state on a cache miss.\n", o.work, o.missCost)
	fmt.Printf("Halfway through each run one worker panics on purpose and restarts with an empty cache.\n\n")

	var results []result
	for _, mode := range []actors.Affinity{actors.Hint, actors.StrictQueue, actors.StrictFailFast} {
		fmt.Printf("running %-16s ... ", mode)
		r, err := runMode(ctx, o, mode)
		if err != nil {
			fmt.Println()
			return fmt.Errorf("%s: %w", mode, err)
		}
		fmt.Printf("%d calls in %v\n", r.calls, r.elapsed.Round(10*time.Millisecond))
		results = append(results, r)
		if ctx.Err() != nil {
			break // interrupted: report what ran
		}
	}
	fmt.Println()
	printTables(results)
	explain(o, results)
	return nil
}

// request is what callers send. crash makes the worker panic.
type request struct{ crash bool }

// response says whether the worker had the session's state cached.
type response struct{ hit bool }

// cacheWorker keeps per-session state in an LRU cache of bounded size. With
// Capacity 1 the runtime never calls it concurrently, and ReleaseSession runs
// between calls, so the cache needs no lock.
type cacheWorker struct {
	capacity int
	work     time.Duration
	missCost time.Duration
	lru      *list.List // of *entry, most recently used first
	index    map[string]*list.Element
}

type entry struct {
	session string
	state   uint64
}

func (w *cacheWorker) Handle(_ context.Context, call messages.Call) (any, error) {
	if req, _ := call.Payload.(request); req.crash {
		panic("injected crash")
	}
	el, hit := w.index[call.Session]
	if hit {
		w.lru.MoveToFront(el)
	} else {
		el = w.lru.PushFront(&entry{session: call.Session, state: burn(call.Session, w.missCost)})
		w.index[call.Session] = el
		if w.lru.Len() > w.capacity {
			old := w.lru.Remove(w.lru.Back()).(*entry)
			delete(w.index, old.session)
		}
	}
	e := el.Value.(*entry)
	e.state = burn(call.Session, w.work) ^ e.state // the call's own work on the state
	return response{hit: hit}, nil
}

// ReleaseSession drops a closed or expired session's state.
func (w *cacheWorker) ReleaseSession(_ context.Context, session string, _ messages.CleanupSource) {
	if el, ok := w.index[session]; ok {
		w.lru.Remove(el)
		delete(w.index, session)
	}
}

// burn stands in for real work: the call itself, or the expensive rebuild of
// a session's state on a miss (loading a model context, replaying a log...).
// It keeps the worker busy for about cost of wall time (a timer would be too
// coarse at this scale), yielding the CPU often so that, on a machine with
// fewer cores than workers, every worker still advances like a separate
// device instead of the Go scheduler deciding who runs.
func burn(session string, cost time.Duration) uint64 {
	h := fnv.New64a()
	var sum uint64
	for start := time.Now(); time.Since(start) < cost; runtime.Gosched() {
		for range 16 {
			h.Write([]byte(session))
			sum += h.Sum64()
		}
	}
	return sum
}

// tally counts one caller's outcomes; callers merge theirs at the end, so
// the hot path takes no lock.
type tally struct {
	requests, calls, ok  int
	hits, misses         int
	busy, unavailable    int
	failed, queueTimeout int
	other, recovered     int
	callLat, requestLat  []time.Duration
	firstOther           error
}

// record counts one call and its outcome.
func (t *tally) record(d time.Duration, v any, err error) {
	t.calls++
	t.callLat = append(t.callLat, d)
	switch {
	case err == nil:
		t.ok++
		if r, _ := v.(response); r.hit {
			t.hits++
		} else {
			t.misses++
		}
	case errors.Is(err, actors.ErrWorkerBusy):
		t.busy++
	case errors.Is(err, actors.ErrSessionWorkerUnavailable):
		t.unavailable++
	case errors.Is(err, actors.ErrWorkerFailed):
		t.failed++
	case errors.Is(err, actors.ErrQueueTimeout):
		t.queueTimeout++
	default:
		t.other++
		if t.firstOther == nil {
			t.firstOther = err
		}
	}
}

// failures counts the calls that failed.
func (t *tally) failures() int {
	return t.busy + t.unavailable + t.failed + t.queueTimeout + t.other
}

func (t *tally) merge(o *tally) {
	t.requests += o.requests
	t.calls += o.calls
	t.ok += o.ok
	t.hits += o.hits
	t.misses += o.misses
	t.busy += o.busy
	t.unavailable += o.unavailable
	t.failed += o.failed
	t.queueTimeout += o.queueTimeout
	t.other += o.other
	t.recovered += o.recovered
	t.callLat = append(t.callLat, o.callLat...)
	t.requestLat = append(t.requestLat, o.requestLat...)
	if t.firstOther == nil {
		t.firstOther = o.firstOther
	}
}

// do runs one request of session s to its end: it retries ErrWorkerBusy
// with backoff (what a strict_fail_fast caller has to do) and recovers a
// session whose worker was lost by one hint call, which rebinds it.
func (t *tally) do(ctx, stop context.Context, s *actors.Session, req request) {
	t.requests++
	begin := time.Now()
	defer func() { t.requestLat = append(t.requestLat, time.Since(begin)) }()
	backoff := 50 * time.Microsecond
	for {
		start := time.Now()
		v, err := s.Call(ctx, req)
		t.record(time.Since(start), v, err)
		switch {
		case errors.Is(err, actors.ErrWorkerBusy):
			if !sleep(stop, backoff+rand.N(backoff)) {
				return // the run is over; drop the request
			}
			backoff = min(2*backoff, 2*time.Millisecond)
			continue
		case errors.Is(err, actors.ErrSessionWorkerUnavailable):
			start = time.Now()
			v, err = s.Call(ctx, req, actors.WithAffinity(actors.Hint))
			t.record(time.Since(start), v, err)
			if err == nil {
				t.recovered++
			}
		}
		return
	}
}

// sleep waits for d, or returns false when stop ends first.
func sleep(stop context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stop.Done():
		return false
	}
}

type result struct {
	mode    actors.Affinity
	elapsed time.Duration
	tally
	stats actors.PoolStats
	bound []int // sessions bound per worker at the end
}

// runMode starts a runtime whose pool defaults to mode, drives the workload
// for o.duration with a crash halfway, and shuts the runtime down.
func runMode(ctx context.Context, o options, mode actors.Affinity) (result, error) {
	rt, err := actors.Start(actors.Config{RecordTimings: o.page != nil, Pools: []actors.PoolConfig{{
		Name:     poolName,
		Size:     o.workers,
		Affinity: mode,
		NewWorker: func(context.Context, actors.WorkerInfo) (actors.Worker, error) {
			return &cacheWorker{capacity: o.cache, work: o.work, missCost: o.missCost, lru: list.New(), index: make(map[string]*list.Element)}, nil
		},
	}}})
	if err != nil {
		return result{}, err
	}

	if o.page != nil {
		if err := o.page.show(rt, "affinity-demo: "+mode.String()); err != nil {
			return result{}, err
		}
	}
	sessions := make([]*actors.Session, o.sessions)
	for i := range sessions {
		sessions[i] = rt.Session(fmt.Sprintf("user-%03d", i))
	}

	// stop ends the run; calls use ctx, so the ones in flight at the end
	// still finish normally instead of being cancelled.
	stop, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	began := time.Now()
	tallies := make([]tally, o.callers+1) // the last one is the crasher's
	var wg sync.WaitGroup
	for c := range o.callers {
		wg.Go(func() {
			// Each caller owns a share of the sessions, like users who wait
			// for one answer before asking again.
			var own []*actors.Session
			for i := c; i < len(sessions); i += o.callers {
				own = append(own, sessions[i])
			}
			if len(own) == 0 {
				own = append(own, sessions[c%len(sessions)])
			}
			t := &tallies[c]
			for stop.Err() == nil {
				t.do(ctx, stop, own[rand.N(len(own))], request{})
			}
		})
	}
	wg.Go(func() {
		if !sleep(stop, o.duration/2) {
			return
		}
		t := &tallies[o.callers]
		t.do(ctx, stop, rt.Session("crash-test"), request{crash: true})
	})
	wg.Wait()

	r := result{mode: mode, elapsed: time.Since(began), stats: rt.Stats().Pools[poolName]}
	r.bound = make([]int, o.workers)
	for _, s := range sessions {
		if w, _, ok := s.Binding(poolName); ok && w < len(r.bound) {
			r.bound[w]++
		}
	}
	for i := range tallies {
		r.merge(&tallies[i])
	}

	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := rt.Shutdown(sctx); err != nil {
		return r, fmt.Errorf("shutdown: %w", err)
	}
	return r, nil
}

func printTables(results []result) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\trequests\tcalls\tok\tstate hits\tmisses\thit %\tbusy\tunavailable\tworker failed\tqueue timeout\tother\trecovered\trestarts\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n",
			r.mode, r.requests, r.calls, r.ok, r.hits, r.misses, pct(r.hits, r.hits+r.misses),
			r.busy, r.unavailable, r.failed, r.queueTimeout, r.other, r.recovered, r.stats.Restarts)
	}
	tw.Flush()
	fmt.Println()

	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tok/s\tcall p50\tcall p99\trequest p50\trequest p99\tdetours\tqueued\tsessions per worker\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%v\t%v\t%d\t%d\t%s\t\n",
			r.mode, float64(r.ok)/r.elapsed.Seconds(),
			quantile(r.callLat, 0.50), quantile(r.callLat, 0.99),
			quantile(r.requestLat, 0.50), quantile(r.requestLat, 0.99),
			r.stats.Dispatched[messages.OutcomeDetour], r.stats.Dispatched[messages.OutcomeQueued], joinInts(r.bound, "/"))
	}
	tw.Flush()
	fmt.Println(`
calls: every Call, including busy retries and recovery calls; requests: what callers wanted done.
state hits/misses: whether the worker that ran a call had the session's state cached (a miss costs the rebuild).
request latency: from a request's first call to its last (retries and recovery included).
restarts, detours (ran at once on another free worker), queued (had to wait): the runtime's counters (rt.Stats()).
sessions per worker: where the sessions were bound at the end of the run.`)
	for _, r := range results {
		if r.firstOther != nil {
			fmt.Printf("%s: first unexpected error: %v\n", r.mode, r.firstOther)
		}
	}
}

func explain(o options, results []result) {
	fmt.Println()
	for _, r := range results {
		hitPct := pct(r.hits, r.hits+r.misses)
		okRate := float64(r.ok) / r.elapsed.Seconds()
		failed := "no request failed apart from the injected crash"
		if n := r.failures() - r.failed; n > 0 {
			failed = fmt.Sprintf("%d calls failed besides the injected crash", n)
		}
		// Misses a strict mode cannot avoid: each session's first call and
		// the first call of each session moved by the crash.
		why := "the misses are first calls and sessions moved by the crash"
		if extra := r.misses - o.sessions - r.recovered; extra > o.sessions/20 {
			why = fmt.Sprintf("%d misses came from a worker with more sessions bound than its cache holds", extra)
		}
		var line string
		switch r.mode {
		case actors.Hint:
			line = fmt.Sprintf("hint: %s, and %.1f%% of calls found their session's state, for %.0f ok/s. "+
				"When the bound worker is busy a hint call runs on any free worker (%d did), else it waits "+
				"(%d did) and the first worker to free up takes it, preferring calls of its own sessions; the "+
				"misses are calls that ran elsewhere (no state there), first calls, and the crashed worker's "+
				"sessions, which rebound silently and rebuilt their state. Nothing fails, nothing is guaranteed.",
				failed, hitPct, okRate, r.stats.Dispatched[messages.OutcomeDetour], r.stats.Dispatched[messages.OutcomeQueued])
		case actors.StrictQueue:
			line = fmt.Sprintf("strict_queue: %.1f%% of calls found their state (%s), for %.0f ok/s. The price is waiting "+
				"for the session's own worker (call p50 %v, p99 %v) and, after the crash, %d calls of sessions bound to the "+
				"lost worker failed with ErrSessionWorkerUnavailable instead of running without their state. The demo "+
				"recovered %d sessions the documented way: one hint call rebinds a session (closing it works too), and "+
				"strict calls work again from there.",
				hitPct, why, okRate, quantile(r.callLat, 0.50), quantile(r.callLat, 0.99), r.unavailable, r.recovered)
		case actors.StrictFailFast:
			line = fmt.Sprintf("strict_fail_fast: state kept as well (%.1f%% hits; %s), for %.0f ok/s, and no call ever "+
				"waits: %d of %d calls were ErrWorkerBusy, answered at once (call p99 %v), and the caller had to retry "+
				"them with backoff, which shows in request latency (p99 %v). After the crash it fails and recovers like "+
				"strict_queue (%d unavailable, %d recovered).",
				hitPct, why, okRate, r.busy, r.calls, quantile(r.callLat, 0.99), quantile(r.requestLat, 0.99), r.unavailable, r.recovered)
		}
		fmt.Println(wrap(line, 100))
	}
	fmt.Println(wrap("worker failed is the injected crash call itself: the call running when a worker panics always gets ErrWorkerFailed.", 100))
}

func joinInts(ns []int, sep string) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, sep)
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// quantile returns the q-quantile of ds (sorting it), rounded for display.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	d := ds[min(int(q*float64(len(ds))), len(ds)-1)]
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// wrap breaks s into lines of at most width columns, indenting the rest.
func wrap(s string, width int) string {
	var b strings.Builder
	col := 0
	for i, word := range strings.Fields(s) {
		if i > 0 {
			if col+1+len(word) > width {
				b.WriteString("\n  ")
				col = 2
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(word)
		col += len(word)
	}
	return b.String()
}
