package router

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"sync"
	"time"
)

// ticket is what the affinity cookie carries: a random session id, the
// session's hash epoch (bumped by a sticky failover), whether the session is
// currently served away from home (so its return can be counted), and when
// the cookie was issued. It never holds a backend address: the backend is
// recomputed from the session id by rendezvous hashing over the backend
// list, which is what lets two routers agree without sharing state.
type ticket struct {
	sid    [16]byte
	epoch  uint8
	away   bool
	issued int64 // unix seconds
}

const (
	ticketVersion = 1
	payloadLen    = 1 + 16 + 1 + 1 + 8
	macLen        = 16 // truncated HMAC-SHA256: 128 bits
	cookieRawLen  = payloadLen + macLen
)

// cookieEncoding is strict: a value whose last character carries non-zero
// padding bits is refused, so that each ticket has exactly one valid
// cookie, the one the router wrote.
var cookieEncoding = base64.RawURLEncoding.Strict()

// cookieState is what reading the cookie found.
type cookieState uint8

const (
	cookieNone    cookieState = iota // no cookie: a new client
	cookieValid                      // signed with the current key
	cookieOldKey                     // valid, signed with an older key: re-sign
	cookieForged                     // malformed or bad signature
	cookieExpired                    // valid signature, older than MaxAge
)

// signer signs with keys[0] and verifies with every key. HMAC states are
// pooled: building one costs two SHA-256 blocks and several allocations.
type signer struct {
	keys []keyMAC
}

type keyMAC struct {
	pool *sync.Pool
}

func newSigner(keys [][]byte) *signer {
	s := &signer{keys: make([]keyMAC, len(keys))}
	for i, k := range keys {
		k := append([]byte(nil), k...)
		s.keys[i] = keyMAC{pool: &sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
	}
	return s
}

func (k keyMAC) sum(payload []byte, out *[sha256.Size]byte) {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(payload)
	h.Sum(out[:0])
	k.pool.Put(h)
}

func (t *ticket) marshal(b *[payloadLen]byte) {
	b[0] = ticketVersion
	copy(b[1:17], t.sid[:])
	b[17] = t.epoch
	b[18] = 0
	if t.away {
		b[18] = 1
	}
	binary.BigEndian.PutUint64(b[19:], uint64(t.issued))
}

// encode returns the signed cookie value.
func (s *signer) encode(t *ticket) string {
	var raw [cookieRawLen]byte
	var sum [sha256.Size]byte
	p := (*[payloadLen]byte)(raw[:payloadLen])
	t.marshal(p)
	s.keys[0].sum(p[:], &sum)
	copy(raw[payloadLen:], sum[:macLen])
	return cookieEncoding.EncodeToString(raw[:])
}

// decodeScratch holds decode's buffers: on the stack they would escape
// (through the hash.Hash interface) and cost allocations on every request.
type decodeScratch struct {
	src [cookieEncodedLen]byte
	raw [cookieRawLen + 2]byte // room to detect an over-long value
	sum [sha256.Size]byte
}

// cookieEncodedLen is the length of a cookie value: unpadded base64 of
// cookieRawLen bytes.
const cookieEncodedLen = (cookieRawLen*8 + 5) / 6

var decodeScratches = sync.Pool{New: func() any { return new(decodeScratch) }}

// decode verifies value and returns its ticket.
func (s *signer) decode(value string, now time.Time, maxAge time.Duration) (ticket, cookieState) {
	if cookieEncodedLen != len(value) {
		return ticket{}, cookieForged
	}
	sc := decodeScratches.Get().(*decodeScratch)
	defer decodeScratches.Put(sc)
	copy(sc.src[:], value)
	raw, sum := &sc.raw, &sc.sum
	n, err := cookieEncoding.Decode(raw[:], sc.src[:])
	if err != nil || n != cookieRawLen || raw[0] != ticketVersion || raw[18] > 1 {
		return ticket{}, cookieForged
	}
	state := cookieForged
	for i, k := range s.keys {
		k.sum(raw[:payloadLen], sum)
		if hmac.Equal(sum[:macLen], raw[payloadLen:cookieRawLen]) {
			state = cookieValid
			if i > 0 {
				state = cookieOldKey
			}
			break
		}
	}
	if state == cookieForged {
		return ticket{}, cookieForged
	}
	var t ticket
	copy(t.sid[:], raw[1:17])
	t.epoch = raw[17]
	t.away = raw[18] == 1
	t.issued = int64(binary.BigEndian.Uint64(raw[19:payloadLen]))
	if t.expired(now, maxAge) {
		return t, cookieExpired
	}
	return t, state
}

// expired reports whether t is older than maxAge at now, or from the
// future beyond a minute of clock skew.
func (t *ticket) expired(now time.Time, maxAge time.Duration) bool {
	age := now.Unix() - t.issued
	return age > int64(maxAge/time.Second) || age < -60
}

// cookieMemo remembers the last cookie value that verified on one
// connection (a keep-alive client sends the same cookie with every
// request), so the next request carrying exactly that value, under the
// same keys, skips the base64 decoding and the HMAC. Its age is checked
// every time. Only the connection's goroutine uses it.
type cookieMemo struct {
	signer *signer // the keys it verified with
	value  string
	tk     ticket
	state  cookieState // cookieValid or cookieOldKey
}

// decode is s.decode, through m when m is not nil.
func (m *cookieMemo) decode(s *signer, value string, now time.Time, maxAge time.Duration) (ticket, cookieState) {
	if m == nil {
		return s.decode(value, now, maxAge)
	}
	if m.signer == s && m.value == value {
		if m.tk.expired(now, maxAge) {
			return m.tk, cookieExpired
		}
		return m.tk, m.state
	}
	t, st := s.decode(value, now, maxAge)
	if st == cookieValid || st == cookieOldKey {
		*m = cookieMemo{signer: s, value: value, tk: t, state: st}
	}
	return t, st
}

// newSessionID draws a random session id.
func newSessionID() (sid [16]byte) {
	_, _ = rand.Read(sid[:]) // crypto/rand.Read never fails (Go >= 1.24)
	return sid
}
