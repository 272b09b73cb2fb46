package router

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	rtmetrics "github.com/affinity-go/affinity/metrics"
)

type metrics struct {
	requests    atomic.Uint64
	byOutcome   [outcomeRebind + 1]atomic.Uint64
	forged      atomic.Uint64
	expired     atomic.Uint64
	strict      atomic.Uint64
	unavailable atomic.Uint64
	busy        atomic.Uint64
	badGateway  atomic.Uint64
	clientGone  atomic.Uint64
	badRequest  atomic.Uint64

	sessionsRefused atomic.Uint64
}

func (m *metrics) count(o outcome) { m.byOutcome[o].Add(1) }

// countOutcome counts a routing decision, and on its backend the fallbacks
// it serves and the sessions that return to it.
func (r *Router) countOutcome(d decision) {
	r.m.count(d.outcome)
	switch d.outcome {
	case outcomeNew:
		d.target.sessions.Add(1)
	case outcomeFallback:
		d.target.fallbacks.Add(1)
	case outcomeReturn:
		d.target.returns.Add(1)
	}
}

// latencyBounds are the buckets (seconds) of the per-backend request
// duration histogram.
var latencyBounds = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// latency is a request duration histogram: an atomic add per field, so
// requests on every core record without a lock.
type latency struct {
	counts [len(latencyBounds) + 1]atomic.Uint64 // per bucket; the last: above all bounds
	sumNs  atomic.Int64
}

// since records the time from start until now.
func (l *latency) since(start time.Time) {
	d := time.Since(start)
	s := d.Seconds()
	i := 0
	for i < len(latencyBounds) && s > latencyBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sumNs.Add(int64(d))
}

// Metrics is a snapshot of the router's counters.
type Metrics struct {
	Requests    uint64 // requests received
	Hits        uint64 // served by the session's home backend
	NewSessions uint64 // requests without a usable cookie: a new session
	Fallbacks   uint64 // served elsewhere because home was down (temporary)
	Returns     uint64 // sessions back home after a fallback
	Rebinds     uint64 // sessions moved for good (sticky)
	Forged      uint64 // cookies with a bad signature or format
	Expired     uint64 // cookies older than Cookie.MaxAge
	Strict      uint64 // 503s because home was down (strict)
	Unavailable uint64 // 503s because no backend was healthy
	Busy        uint64 // 503s because the backend's queue was full or timed out
	BadGateway  uint64 // 502/504s: the backend failed or timed out
	ClientGone  uint64 // clients that left before their answer
	BadRequest  uint64 // 400/408s: malformed or too slow request bodies
	// Sessions is how many client sessions have their own session actor;
	// SessionsRefused counts requests of returning clients run in the shared
	// session actor because MaxSessions were tracked already.
	Sessions        uint64
	SessionsRefused uint64
	// Upgraded is how many upgraded connections (WebSockets) are open.
	Upgraded uint64
}

// Metrics returns the current counters.
func (r *Router) Metrics() Metrics {
	m := &r.m
	return Metrics{
		Requests:    m.requests.Load(),
		Hits:        m.byOutcome[outcomeHit].Load(),
		NewSessions: m.byOutcome[outcomeNew].Load(),
		Fallbacks:   m.byOutcome[outcomeFallback].Load(),
		Returns:     m.byOutcome[outcomeReturn].Load(),
		Rebinds:     m.byOutcome[outcomeRebind].Load(),
		Forged:      m.forged.Load(),
		Expired:     m.expired.Load(),
		Strict:      m.strict.Load(),
		Unavailable: m.unavailable.Load(),
		Busy:        m.busy.Load(),
		BadGateway:  m.badGateway.Load(),
		ClientGone:  m.clientGone.Load(),
		BadRequest:  m.badRequest.Load(),

		Sessions:        uint64(max(r.sessions.count.Load(), 0)),
		SessionsRefused: m.sessionsRefused.Load(),
		Upgraded:        r.upgraded(),
	}
}

func (r *Router) upgraded() uint64 {
	var n int64
	for _, b := range r.tbl.Load().backends {
		n += b.upgrades.Load()
	}
	return uint64(max(n, 0))
}

// WriteMetrics writes the counters in the Prometheus text format (0.0.4).
func (r *Router) WriteMetrics(w io.Writer) error {
	bw := bufio.NewWriter(w)
	m := r.Metrics()
	counter := func(name, help string, v uint64) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " + strconv.FormatUint(v, 10) + "\n")
	}
	counter("affinity_router_requests_total", "Requests received.", m.Requests)
	counter("affinity_router_affinity_hits_total", "Requests served by their session's home backend.", m.Hits)
	counter("affinity_router_new_sessions_total", "Requests that started a session (no, forged or expired cookie).", m.NewSessions)
	counter("affinity_router_fallbacks_total", "Requests served away from their down home backend (temporary failover).", m.Fallbacks)
	counter("affinity_router_returns_total", "Sessions served at home again after a fallback.", m.Returns)
	counter("affinity_router_rebinds_total", "Sessions moved for good to another backend (sticky failover).", m.Rebinds)
	counter("affinity_router_forged_cookies_total", "Cookies with a bad format or signature, treated as new clients.", m.Forged)
	counter("affinity_router_expired_cookies_total", "Cookies past their max age, treated as new clients.", m.Expired)
	counter("affinity_router_strict_rejections_total", "503 answers because the home backend was down (strict failover).", m.Strict)
	counter("affinity_router_unavailable_total", "503 answers because no backend was healthy.", m.Unavailable)
	counter("affinity_router_busy_total", "503 answers because the backend's connection queue was full or timed out.", m.Busy)
	counter("affinity_router_bad_gateway_total", "502 and 504 answers: the backend failed or timed out.", m.BadGateway)
	counter("affinity_router_client_gone_total", "Requests whose client left before the answer.", m.ClientGone)
	counter("affinity_router_bad_requests_total", "400 and 408 answers: malformed or too slow request bodies.", m.BadRequest)
	counter("affinity_router_sessions_refused_total", "Requests of returning clients run in the shared session actor because max sessions were tracked.", m.SessionsRefused)
	gauge := func(name, help string, v uint64) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " + strconv.FormatUint(v, 10) + "\n")
	}
	gauge("affinity_router_sessions", "Client sessions with their own session actor.", m.Sessions)
	gauge("affinity_router_upgraded_connections", "Upgraded connections (WebSockets) open.", m.Upgraded)

	bs := r.Backends()
	perBackend := func(name, typ, help string, value func(BackendStatus) uint64) {
		bw.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
		for _, b := range bs {
			bw.WriteString(name + "{backend=\"" + escapeLabel(b.Name) + "\"} " + strconv.FormatUint(value(b), 10) + "\n")
		}
	}
	perBackend("affinity_router_backend_up", "gauge", "Whether the backend is healthy (1) or down (0).", func(b BackendStatus) uint64 {
		if b.Healthy {
			return 1
		}
		return 0
	})
	perBackend("affinity_router_backend_requests_total", "counter", "Requests sent to the backend.",
		func(b BackendStatus) uint64 { return b.Requests })
	perBackend("affinity_router_backend_failures_total", "counter", "Refused connections and timeouts seen on the backend.",
		func(b BackendStatus) uint64 { return b.Failures })
	perBackend("affinity_router_backend_fallbacks_total", "counter", "Requests the backend served for sessions whose home backend was down.",
		func(b BackendStatus) uint64 { return b.Fallbacks })
	perBackend("affinity_router_backend_returns_total", "counter", "Sessions served at home by the backend again after a fallback.",
		func(b BackendStatus) uint64 { return b.Returns })
	r.writeLatency(bw)
	if err := r.writeRuntimeMetrics(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// writeLatency writes the per-backend request duration histogram.
func (r *Router) writeLatency(bw *bufio.Writer) {
	const name = "affinity_router_backend_request_duration_seconds"
	bw.WriteString("# HELP " + name + " Time to proxy a request to the backend, waiting for a request slot included.\n# TYPE " + name + " histogram\n")
	for _, b := range r.tbl.Load().backends {
		label := `backend="` + escapeLabel(b.name) + `"`
		var cum uint64 // the count is the buckets' sum: one snapshot, always consistent
		for i, bound := range latencyBounds {
			cum += b.latency.counts[i].Load()
			bw.WriteString(name + "_bucket{" + label + `,le="` + strconv.FormatFloat(bound, 'g', -1, 64) + `"} ` + strconv.FormatUint(cum, 10) + "\n")
		}
		count := cum + b.latency.counts[len(latencyBounds)].Load()
		bw.WriteString(name + "_bucket{" + label + `,le="+Inf"} ` + strconv.FormatUint(count, 10) + "\n")
		bw.WriteString(name + "_sum{" + label + "} " + strconv.FormatFloat(time.Duration(b.latency.sumNs.Load()).Seconds(), 'g', -1, 64) + "\n")
		bw.WriteString(name + "_count{" + label + "} " + strconv.FormatUint(count, 10) + "\n")
	}
}

// writeRuntimeMetrics appends the metrics of the router's runtime (package
// metrics): its sessions, its workers (one per backend) and their calls.
func (r *Router) writeRuntimeMetrics(w io.Writer) error {
	reg := prometheus.NewRegistry()
	if err := rtmetrics.Register(reg, r.rt); err != nil {
		return err
	}
	fams, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.FmtText)
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
