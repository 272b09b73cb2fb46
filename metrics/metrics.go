// Package metrics exports an Affinity runtime as Prometheus metrics.
//
// Register adds a collector to a registry you own (there are no package
// globals); every figure is read from Runtime.Stats when the registry is
// scraped, so the metrics add nothing to a call's path beyond the counters
// the runtime keeps anyway. The two histograms need Config.RecordTimings;
// without an event subscriber (Config.OnEvent) they hold a random sample of
// one call in actors.TimingSampleEvery, so their _count is about that
// fraction of affinity_calls_executed_total while their quantiles stay
// representative.
//
//	reg := prometheus.NewRegistry()
//	if err := metrics.Register(reg, rt); err != nil { ... }
//	http.Handle("/metrics", metrics.Handler(reg))
//
// Metrics (labels in braces):
//
//	affinity_calls_total{pool,mode,outcome}            calls routed: hit, bound, detour, rebind, queued, failed
//	affinity_calls_executed_total{pool}                calls a worker finished
//	affinity_call_errors_total{pool}                   of which failed (error or panic)
//	affinity_call_duration_seconds{pool}               histogram: time a call ran on its worker
//	affinity_call_wait_seconds{pool}                   histogram: time from a call being made to its start
//	affinity_queue_depth{pool}                         calls waiting now
//	affinity_calls_in_flight{pool}                     calls running now
//	affinity_pool_saturated_total{pool}                calls refused because the queue was full
//	affinity_queue_timeouts_total{pool}                calls that waited past the queue timeout
//	affinity_worker_taints_total{pool,reason}          panic, fatal_error, health_check, recycle, start_failed, exited
//	affinity_worker_restarts_total{pool}               new incarnations after a taint
//	affinity_workers_failed_total{pool}                workers out of restart budget
//	affinity_workers{pool,state}                       workers starting, ready or restarting
//	affinity_worker_incarnation{pool,worker}           current incarnation of each worker
//	affinity_worker_bound_sessions{pool,worker}        sessions bound to each worker's incarnation
//	affinity_worker_in_flight{pool,worker}             calls running on each worker
//	affinity_sessions                                  live sessions (active or passivated)
//	affinity_session_actors                            of which have a running actor
package metrics

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// ErrNilArgument: Register was given a nil registry or runtime.
var ErrNilArgument = errors.New("metrics: nil registry or runtime")

// Register adds rt's metrics to reg. Registering the same runtime twice on
// one registry fails with prometheus.AlreadyRegisteredError.
func Register(reg prometheus.Registerer, rt *actors.Runtime) error {
	if reg == nil || rt == nil {
		return ErrNilArgument
	}
	return reg.Register(&collector{stats: rt.Stats})
}

// Handler serves the metrics of g (a *prometheus.Registry, say) in the
// Prometheus exposition format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	callsDesc       = desc("affinity_calls_total", "Calls routed, by affinity mode and routing outcome.", "pool", "mode", "outcome")
	executedDesc    = desc("affinity_calls_executed_total", "Calls a worker finished.", "pool")
	errorsDesc      = desc("affinity_call_errors_total", "Calls a worker finished with an error or a panic.", "pool")
	durationDesc    = desc("affinity_call_duration_seconds", "Time a call ran on its worker (needs Config.RecordTimings).", "pool")
	waitDesc        = desc("affinity_call_wait_seconds", "Time from a call being made to its start on a worker (needs Config.RecordTimings).", "pool")
	queueDesc       = desc("affinity_queue_depth", "Calls waiting for a worker.", "pool")
	inflightDesc    = desc("affinity_calls_in_flight", "Calls running on workers.", "pool")
	saturatedDesc   = desc("affinity_pool_saturated_total", "Calls refused because the pool's queue was full.", "pool")
	timeoutsDesc    = desc("affinity_queue_timeouts_total", "Calls that waited longer than the queue timeout.", "pool")
	taintsDesc      = desc("affinity_worker_taints_total", "Worker incarnations tainted, by reason.", "pool", "reason")
	restartsDesc    = desc("affinity_worker_restarts_total", "New worker incarnations after a taint.", "pool")
	failedDesc      = desc("affinity_workers_failed_total", "Workers that ran out of restart budget.", "pool")
	workersDesc     = desc("affinity_workers", "Workers by state.", "pool", "state")
	incarnationDesc = desc("affinity_worker_incarnation", "Current incarnation of a worker (0 before its first start).", "pool", "worker")
	boundDesc       = desc("affinity_worker_bound_sessions", "Sessions bound to a worker's current incarnation.", "pool", "worker")
	workerBusyDesc  = desc("affinity_worker_in_flight", "Calls running on a worker, and slots reserved for waiting calls.", "pool", "worker")
	sessionsDesc    = desc("affinity_sessions", "Live sessions, active or passivated.")
	actorsDesc      = desc("affinity_session_actors", "Live sessions whose actor is running (not passivated).")
)

// collector reads a snapshot of the runtime's counters at each scrape.
type collector struct {
	stats func() actors.Stats
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{callsDesc, executedDesc, errorsDesc, durationDesc, waitDesc, queueDesc,
		inflightDesc, saturatedDesc, timeoutsDesc, taintsDesc, restartsDesc, failedDesc, workersDesc,
		incarnationDesc, boundDesc, workerBusyDesc, sessionsDesc, actorsDesc} {
		ch <- d
	}
}

// modes are the affinity modes a routed call can have.
var modes = []messages.Affinity{messages.Hint, messages.StrictQueue, messages.StrictFailFast}

// workerStates are the states Stats reports for a worker.
var workerStates = []string{"starting", "ready", "restarting"}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(sessionsDesc, float64(st.Sessions))
	gauge(actorsDesc, float64(st.SessionActors))
	for name, ps := range st.Pools {
		for _, m := range modes {
			for o := range messages.OutcomeCount {
				counter(callsDesc, ps.DispatchedByMode[m][o], name, m.String(), messages.Outcome(o).String())
			}
		}
		counter(executedDesc, ps.Executed, name)
		counter(errorsDesc, ps.ExecErrors, name)
		ch <- histogram(durationDesc, ps.Exec, name)
		ch <- histogram(waitDesc, ps.Wait, name)
		gauge(queueDesc, float64(ps.Queued), name)
		gauge(inflightDesc, float64(ps.Inflight), name)
		counter(saturatedDesc, ps.Saturated, name)
		counter(timeoutsDesc, ps.QueueTimeouts, name)
		for r, n := range ps.Tainted {
			counter(taintsDesc, n, name, messages.TaintReason(r).String())
		}
		counter(restartsDesc, ps.Restarts, name)
		counter(failedDesc, ps.Failed, name)
		byState := map[string]int{}
		for _, w := range ps.Workers {
			byState[w.State]++
			id := strconv.Itoa(w.ID)
			gauge(incarnationDesc, float64(w.Incarnation), name, id)
			gauge(boundDesc, float64(w.Bound), name, id)
			gauge(workerBusyDesc, float64(w.Inflight), name, id)
		}
		for _, s := range workerStates {
			gauge(workersDesc, float64(byState[s]), name, s)
		}
	}
}

// histogram turns a runtime histogram into a Prometheus one (cumulative
// buckets, in seconds).
func histogram(d *prometheus.Desc, h actors.Histogram, pool string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(actors.TimingBuckets))
	var cum uint64
	for i, bound := range actors.TimingBuckets[:] {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[bound.Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets, pool)
}
