package router

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// backendHost is the Host of in's backend request to u: the backend's own,
// or with PreserveHost the client's.
func (r *Router) backendHost(in *http.Request, u *url.URL) string {
	if r.cfg.PreserveHost && in.Host != "" {
		return in.Host
	}
	return u.Host
}

// peer is what the router itself sees of in's client: its IP ("" when
// RemoteAddr has none) and the scheme it came over.
func peer(in *http.Request) (ip, proto string) {
	ip, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		ip = ""
	}
	proto = "http"
	if in.TLS != nil {
		proto = "https"
	}
	return ip, proto
}

// trusted reports whether ip is in one of TrustedProxies.
func (r *Router) trusted(ip string) bool { return len(r.cfg.TrustedProxies) > 0 && r.trustedPeer(ip) }

// forwarded returns the X-Forwarded-For, -Host and -Proto values of in's
// backend request (xff is empty when in's RemoteAddr has no IP). From a
// peer in TrustedProxies the incoming values are kept, the peer appended
// to X-Forwarded-For; from any other peer they are replaced.
func (r *Router) forwarded(in *http.Request) (xff, host, proto string) {
	ip, proto := peer(in)
	if !r.trusted(ip) {
		return ip, in.Host, proto
	}
	xff = ip
	if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
		xff = strings.Join(append(prior[:len(prior):len(prior)], ip), ", ")
	}
	host = in.Host
	if v := in.Header.Get("X-Forwarded-Host"); v != "" {
		host = v
	}
	return xff, host, forwardedProto(in, proto)
}

// forwardedProto is the X-Forwarded-Proto a trusted proxy sent, if it is
// http or https, else proto.
func forwardedProto(in *http.Request, proto string) string {
	switch v := in.Header.Get("X-Forwarded-Proto"); {
	case strings.EqualFold(v, "https"):
		return "https"
	case strings.EqualFold(v, "http"):
		return "http"
	}
	return proto
}

// forwardedHeader returns the Forwarded header (RFC 7239) of in's backend
// request, "" when Config.Forwarded is off.
func (r *Router) forwardedHeader(in *http.Request) string {
	if !r.cfg.Forwarded {
		return ""
	}
	ip, proto := peer(in)
	node := "unknown"
	switch {
	case strings.Contains(ip, ":"):
		node = `"[` + ip + `]"` // IPv6: bracketed, so quoted
	case ip != "":
		node = ip
	}
	hop := "for=" + node + ";host=" + forwardedValue(in.Host) + ";proto=" + proto
	if prior := in.Header["Forwarded"]; len(prior) > 0 && r.trusted(ip) {
		return strings.Join(prior, ", ") + ", " + hop
	}
	return hop
}

// forwardedValue is v as a Forwarded parameter value: a token as it is,
// anything else (a host with a port, say) quoted.
func forwardedValue(v string) string {
	if validToken(v) {
		return v
	}
	return strconv.Quote(v)
}

// trustedPeer reports whether ip is in one of TrustedProxies.
func (r *Router) trustedPeer(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range r.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// viaHTTPS reports whether in's client reached the router, or a trusted
// proxy in front of it, over TLS.
func (r *Router) viaHTTPS(in *http.Request) bool {
	ip, proto := peer(in)
	return proto == "https" || (r.trusted(ip) && forwardedProto(in, proto) == "https")
}
