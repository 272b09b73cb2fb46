// Package router is Affinity's HTTP affinity router: a reverse proxy
// (an http.Handler) that sends every request of a client session to the same
// backend, with the failover and rebalancing behaviour of Heroku's session
// affinity.
//
// # Sessions and the cookie
//
// A client's first request starts a session: a random 128-bit id, sent back
// in an HMAC-signed cookie (HttpOnly, SameSite=Lax, Secure under TLS). The
// cookie never names a backend. The session's home backend is computed on
// every request by rendezvous hashing of the session id over the backend
// names, so two routers with the same keys and backend list route a cookie
// the same way without sharing state. A missing, tampered, wrongly signed
// or expired cookie starts a new session; it is never an error.
//
// # Failover
//
// A backend is down after a refused connection (at once) or Health.Fall
// failures in a row, where a failure is a failed active check or a response
// slower than ResponseHeaderTimeout (one slow response does not evict a
// backend), and up again after Health.Rise good checks. While a session's
// home is down:
//
//   - Temporary (default): requests go to the session's next backend in
//     rendezvous order, and return home once it is up.
//   - Sticky: the session moves for good (its hash epoch, kept in the
//     cookie, is bumped until its home is a healthy backend).
//   - Strict: 503 with a body that says why.
//
// A request that never reached its backend (connection refused) is retried
// on the next choice, with its body when it has one: no byte of it has been
// read yet. One that reached its backend is never replayed elsewhere.
//
// # Scaling
//
// Adding a backend moves about 1/(N+1) of the sessions to it at once, all
// from the others evenly; removing one moves only its sessions. Backends of
// unequal size take weights (Backend.Weight, SetWeight): each is home to a
// share of sessions proportional to its weight, and a new weight moves
// sessions only to or from that backend.
//
// # Actors
//
// Each backend runs its requests on a worker actor of an actors.Runtime
// with capacity MaxConnsPerBackend; requests beyond that wait in FIFO order
// up to QueueTimeout. Each client session is a session actor of that
// runtime, up to MaxSessions of them (beyond, a returning client shares the
// new clients' session actor: routing lives in the cookie, so only memory
// changes). A panic while proxying restarts the worker actor, however often
// it happens (with a backoff of up to a second); the request gets 502.
//
// # Abuse
//
// Long-lived requests cannot take a backend's request slots: upgraded
// connections (WebSockets) run outside the worker actor under their own
// per-backend cap, MaxUpgradesPerBackend, and close after
// UpgradeIdleTimeout without traffic; a request body must bring bytes
// within BodyReadTimeout and average MinUploadRate, or the client gets 408.
// New sessions avoid a backend whose slots are all taken. A malformed
// request body gets 400 and is not charged to the backend. After a chunked
// HTTP/1 request the connection is closed (RFC 9112 section 6.1: net/http
// hides whether Content-Length came too, so every chunked request is
// treated as if it had). A response that sets the cookie is marked
// "Cache-Control: private", as HAProxy's "cookie ... nocache" does, so a
// shared cache cannot give one client's cookie to others. Of several
// cookies with the router's name, the one that verifies is used. Close
// ends upgraded connections rather than waiting for them: each end of a
// WebSocket first gets a close frame (1001, going away) when its stream is
// at a frame boundary, then both TCP connections are closed.
//
// # Serving it
//
// Router is an http.Handler; Server serves it (or any handler) over plain
// HTTP/1.1 for less CPU than net/http's server alone, answering GET and
// HEAD requests without a body itself and handing every other connection
// to the http.Server it wraps. Serve TLS (and HTTP/2) with the http.Server
// directly.
//
// # Admin API security
//
// AdminHandler is meant for a private listener, and is hardened against the
// two ways a web page in an operator's browser could reach it anyway:
// cross-site requests and DNS rebinding. It answers only requests whose
// Host is a loopback name or one of AdminConfig.Hosts, refuses requests with
// a cross-origin Origin or Sec-Fetch-Site, and requires Content-Type
// application/json on every request that is not GET, HEAD or OPTIONS, which
// a page cannot send cross-origin without a CORS preflight the API never
// grants. These checks are always on. AdminConfig.Token adds a bearer token
// for every request except GET /healthz, for admin listeners that others
// can reach; it is compared in constant time.
package router
