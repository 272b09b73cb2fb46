package router

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// parse reads the head in the first end bytes of the read buffer as a
// request Server serves itself, or returns nil to hand the connection to
// net/http: a method other than GET or HEAD, any framing header (a body),
// Upgrade or Expect, HTTP/1.0, a target not in origin form, a missing or
// repeated Host, or anything net/http would refuse.
func (c *frontConn) parse(ctx context.Context, end int) *http.Request {
	buf, _ := c.br.Peek(end)
	head := string(buf[:end-2]) // each line keeps its CRLF; the blank one goes
	line, rest, _ := strings.Cut(head, "\r\n")
	method, line, _ := strings.Cut(line, " ")
	target, proto, _ := strings.Cut(line, " ")
	if (method != http.MethodGet && method != http.MethodHead) || proto != "HTTP/1.1" || !plainTarget(target) {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	h := c.header
	clear(h)
	n := strings.Count(rest, "\r\n")
	if cap(c.values) < n {
		c.values = make([]string, n)
	}
	values := c.values[:n] // reused, as the header map is
	host, hosts, closing := "", 0, false
	for i := 0; rest != ""; i++ {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validToken(name) {
			return nil // also obs-fold, and space before the colon
		}
		value = strings.Trim(value, " \t")
		if !fieldValue(value) {
			return nil
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		switch name {
		case "Host":
			host, hosts = value, hosts+1
			continue // req.Host, as net/http: not in the header map
		case "Content-Length", "Transfer-Encoding", "Upgrade", "Expect", "Te", "Trailer":
			return nil
		case "Connection":
			if closing, ok = connectionClose(value, closing); !ok {
				return nil
			}
		}
		values[i] = value
		if len(h[name]) == 0 {
			h[name] = values[i : i+1 : i+1] // no slice of its own
		} else {
			h[name] = append(h[name], value)
		}
	}
	if hosts != 1 || !plainHost(host) {
		return nil
	}
	req := c.tmpl.WithContext(ctx)
	req.Method, req.URL, req.RequestURI, req.Host, req.Close = method, u, target, host, closing
	return req
}

// plainTarget reports whether t is an origin-form target of visible ASCII.
func plainTarget(t string) bool {
	if t == "" || t[0] != '/' {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f || t[i] == '#' {
			return false
		}
	}
	return true
}

// plainHost reports whether h is a host[:port] of letters, digits and
// "-._:[]" (an IPv6 literal), the Host values Server accepts.
func plainHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._:[]", c) >= 0) {
			return false
		}
	}
	return h != ""
}

// connectionClose reads a Connection header value: close and keep-alive are
// Server's, any other token (upgrade, a header name) is net/http's.
func connectionClose(v string, closing bool) (bool, bool) {
	for t := range strings.SplitSeq(v, ",") {
		switch t = textproto.TrimString(t); {
		case strings.EqualFold(t, "close"):
			closing = true
		case strings.EqualFold(t, "keep-alive"), t == "":
		default:
			return closing, false
		}
	}
	return closing, true
}

// bufferedBodyMax is how much of a body of unknown length is held back so
// that a short one can still go out with a Content-Length, as net/http does.
const bufferedBodyMax = 2048

// frontResponse is the http.ResponseWriter of a request Server serves.
type frontResponse struct {
	c      *frontConn
	header http.Header
	head   bool // a HEAD request: no body goes out
	close  bool // close the connection after this response

	status    int
	wrote     bool   // the final status was set
	sent      bool   // the head went out
	noBody    bool   // 1xx, 204 and 304, and HEAD
	chunked   bool   // Transfer-Encoding: chunked
	remaining int64  // with a Content-Length: bytes still owed
	held      []byte // body held back while the length is unknown (!sent)
	headLen   int    // what a HEAD handler wrote, while !sent
	err       error  // the first write error: the connection is dropped
}

var errBodyTooLong = errors.New("affinity router: response body longer than its Content-Length")

func (r *frontResponse) reset(req *http.Request) {
	clear(r.header)
	*r = frontResponse{c: r.c, header: r.header, head: req.Method == http.MethodHead, close: req.Close, held: r.held[:0]}
}

// Header implements http.ResponseWriter.
func (r *frontResponse) Header() http.Header { return r.header }

// WriteHeader implements http.ResponseWriter.
func (r *frontResponse) WriteHeader(code int) {
	if r.wrote {
		return
	}
	if code < 100 || code > 999 {
		panic("affinity router: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		r.informational(code)
		return
	}
	r.wrote, r.status = true, code
	h := r.header
	delete(h, "Transfer-Encoding")
	bodyStatus := code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	r.noBody = r.head || !bodyStatus
	if code == http.StatusSwitchingProtocols {
		r.close = true // nothing after it is HTTP
	}
	if r.c.s.shut.Load() || r.c.s.noKeepAlive.Load() || headerHasToken(h, "Connection", "close") {
		r.close = true
	}
	switch cl := h["Content-Length"]; {
	case !bodyStatus:
	case r.head && len(cl) == 0:
		r.remaining = -1 // measured if the handler writes the body a GET would get
		return
	case r.head:
	case len(cl) == 1 && len(h["Trailer"]) == 0:
		if n := parseLength([]byte(cl[0])); n >= 0 {
			r.remaining = n
			break
		}
		fallthrough
	default:
		delete(h, "Content-Length")
		if len(h["Trailer"]) > 0 {
			r.chunked = true // trailers need chunks: no waiting for the length
			break
		}
		r.remaining = -1 // decided when the body ends or overflows held
		return
	}
	r.sendHead()
}

// informational writes a 1xx response at once, with the current headers.
func (r *frontResponse) informational(code int) {
	bw := r.c.bw
	writeStatusLine(bw, code)
	writeHeaders(bw, r.header)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil && r.err == nil {
		r.err = err
	}
}

// sendHead writes the status line and headers, choosing chunks when the
// length is still unknown.
func (r *frontResponse) sendHead() {
	r.sent = true
	bw, h := r.c.bw, r.header
	if r.remaining < 0 && !r.head {
		r.chunked = true
	}
	if r.close {
		h["Connection"] = []string{"close"}
	} else {
		delete(h, "Connection")
	}
	writeStatusLine(bw, r.status)
	writeHeaders(bw, h)
	if _, ok := h["Date"]; !ok {
		bw.Write(r.c.s.date.Load().line)
	}
	if r.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
}

// beginHead implements rawHead.
func (r *frontResponse) beginHead(code int, length int64) *bufio.Writer {
	r.wrote, r.sent, r.status, r.remaining, r.noBody = true, true, code, length, r.head
	if r.c.s.shut.Load() {
		r.close = true
	}
	writeStatusLine(r.c.bw, code)
	return r.c.bw
}

// endHead implements rawHead.
func (r *frontResponse) endHead(hasDate bool) {
	bw := r.c.bw
	if !hasDate {
		bw.Write(r.c.s.date.Load().line)
	}
	if r.close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// Write implements http.ResponseWriter.
func (r *frontResponse) Write(p []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	switch {
	case r.err != nil:
		return 0, r.err
	case r.noBody:
		if !r.head {
			return 0, http.ErrBodyNotAllowed
		}
		// As net/http: a HEAD handler may write the body it would send,
		// which is measured (not sent) while its length is unknown.
		if !r.sent {
			if r.headLen += len(p); r.headLen > bufferedBodyMax {
				r.sendHead()
			}
		}
		return len(p), nil
	case !r.sent:
		if len(r.held)+len(p) <= bufferedBodyMax {
			r.held = append(r.held, p...)
			return len(p), nil
		}
		if err := r.sendHeld(); err != nil {
			return 0, err
		}
	}
	if r.chunked {
		if err := r.writeChunk(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if int64(len(p)) > r.remaining {
		r.close = true
		return 0, errBodyTooLong
	}
	r.remaining -= int64(len(p))
	return r.write(p)
}

func (r *frontResponse) write(p []byte) (int, error) {
	n, err := r.c.bw.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *frontResponse) writeChunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw := r.c.bw
	var size [16]byte
	bw.Write(strconv.AppendInt(size[:0], int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := r.write(crlf)
	return err
}

var crlf = []byte("\r\n")

// sendHeld sends the head, in chunks now that the length cannot be
// measured, and the body held so far.
func (r *frontResponse) sendHeld() error {
	r.sendHead()
	err := r.writeChunk(r.held)
	r.held = r.held[:0]
	return err
}

// Flush implements http.Flusher.
func (r *frontResponse) Flush() { _ = r.FlushError() }

// FlushError flushes what was written so far (http.ResponseController
// calls it).
func (r *frontResponse) FlushError() error {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if !r.sent {
		if err := r.sendHeld(); err != nil {
			return err
		}
	}
	if r.err != nil {
		return r.err
	}
	if err := r.c.bw.Flush(); err != nil {
		r.err = err
	}
	return r.err
}

// finish ends the response after its handler returned, and reports
// whether the connection may serve another request.
func (r *frontResponse) finish() bool {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if !r.sent {
		length := len(r.held) + r.headLen // the held or measured bytes are the whole body
		r.remaining = 0
		if length > 0 || !r.head {
			r.header["Content-Length"] = []string{strconv.Itoa(length)}
		}
		r.sendHead()
		_, _ = r.write(r.held)
		r.held = r.held[:0]
	}
	if r.chunked && !r.noBody {
		bw := r.c.bw
		bw.WriteString("0\r\n")
		r.writeTrailers(bw)
		_, _ = r.write(crlf)
	} else if r.remaining > 0 && !r.noBody {
		r.close = true // short body: the client would wait for the rest
	}
	if r.err == nil {
		if err := r.c.bw.Flush(); err != nil {
			r.err = err
		}
	}
	return r.err == nil && !r.close
}

// writeTrailers writes the announced trailers and those set with
// http.TrailerPrefix.
func (r *frontResponse) writeTrailers(bw *bufio.Writer) {
	h := r.header
	for _, line := range h["Trailer"] {
		for k := range strings.SplitSeq(line, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			for _, v := range h[k] {
				writeHeaderLine(bw, k, v)
			}
		}
	}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validToken(name) {
			for _, v := range vv {
				writeHeaderLine(bw, name, v)
			}
		}
	}
}

// writeStatusLine writes the status line as net/http's server does.
func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	writeCode(bw, code)
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		writeCode(bw, code)
	}
	bw.WriteString("\r\n")
}

// writeCode writes a status code of three digits (WriteHeader checks it).
func writeCode(bw *bufio.Writer, code int) {
	bw.WriteByte(byte('0' + code/100))
	bw.WriteByte(byte('0' + code/10%10))
	bw.WriteByte(byte('0' + code%10))
}

// writeHeaders writes h, skipping names that are not tokens (as net/http
// does; http.TrailerPrefix ones among them) and turning CR and LF in values
// into spaces.
func writeHeaders(bw *bufio.Writer, h http.Header) {
	for k, vv := range h {
		if !validToken(k) {
			continue
		}
		for _, v := range vv {
			writeHeaderLine(bw, k, v)
		}
	}
}
