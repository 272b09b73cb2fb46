package router

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// With Config.AccessLog set, every request is logged once it is answered.
// The record is kept by a ResponseWriter wrapper made only then, so a
// router without an access log pays nothing for it.

var outcomeNames = [...]string{outcomeHit: "hit", outcomeNew: "new", outcomeFallback: "fallback",
	outcomeReturn: "return", outcomeRebind: "rebind"}

func (o outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// accessRecord is what the access log says of one request.
type accessRecord struct {
	start    time.Time
	backend  string // the last backend tried; "" when none was
	outcome  string // how it was routed; "" when it was not
	upgraded bool   // tunnelled: ReverseProxy wrote the 101 on the hijacked connection
}

// loggedWriter counts what a handler writes, for the access log.
type loggedWriter struct {
	http.ResponseWriter
	status int   // the final status; 0 until one is written
	bytes  int64 // body bytes written
}

func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *loggedWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggedWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// loggedRawWriter is a loggedWriter over Server's ResponseWriter, which
// keeps the fast path's raw response heads.
type loggedRawWriter struct {
	*loggedWriter
	raw rawHead
}

func (w loggedRawWriter) beginHead(code int, length int64) *bufio.Writer {
	if w.status == 0 {
		w.status = code
	}
	return w.raw.beginHead(code, length)
}

func (w loggedRawWriter) endHead(hasDate bool) { w.raw.endHead(hasDate) }

// logged wraps w for the access log.
func logged(w http.ResponseWriter) (http.ResponseWriter, *loggedWriter) {
	lw := &loggedWriter{ResponseWriter: w}
	if raw, ok := w.(rawHead); ok {
		return loggedRawWriter{loggedWriter: lw, raw: raw}, lw
	}
	return lw, lw
}

// logAccess writes the access log line of req.
func (r *Router) logAccess(req *http.Request, lw *loggedWriter, rec *accessRecord) {
	client := req.RemoteAddr
	if host, _, err := net.SplitHostPort(client); err == nil {
		client = host
	}
	status := lw.status
	if status == 0 && rec.upgraded {
		status = http.StatusSwitchingProtocols
	}
	ev := r.cfg.AccessLog.Info().
		Str("client", client).
		Str("method", req.Method).
		Str("host", req.Host).
		Str("uri", req.RequestURI).
		Str("proto", req.Proto).
		Int("status", status). // 0: no response (the client left first)
		Int64("bytes", lw.bytes).
		Float64("duration_ms", float64(time.Since(rec.start).Microseconds())/1000)
	if rec.backend != "" {
		ev = ev.Str("backend", rec.backend)
	}
	if rec.outcome != "" {
		ev = ev.Str("outcome", rec.outcome)
	}
	ev.Send()
}
