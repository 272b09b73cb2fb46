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
// A backend is down after a refused connection or a timeout (passive) or
// Health.Fall failed checks (active), and up again after Health.Rise good
// checks. While a session's home is down:
//
//   - Temporary (default): requests go to the session's next backend in
//     rendezvous order, and return home once it is up.
//   - Sticky: the session moves for good (its hash epoch, kept in the
//     cookie, is bumped until its home is a healthy backend).
//   - Strict: 503 with a body that says why.
//
// A request that never reached its backend (connection refused) and has no
// body is retried on the next choice.
//
// # Scaling
//
// Adding a backend moves about 1/(N+1) of the sessions to it at once, all
// from the others evenly; removing one moves only its sessions.
//
// # Actors
//
// Each backend runs its requests on a worker actor of an actors.Runtime
// with capacity MaxConnsPerBackend; requests beyond that wait in FIFO order
// up to QueueTimeout. Each client session is a session actor of that
// runtime. A panic while proxying restarts the worker actor; the request
// gets 502.
package router
