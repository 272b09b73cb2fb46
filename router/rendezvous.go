package router

import (
	"encoding/binary"
	"math"
)

// Rendezvous (highest random weight) hashing: a session's home is the
// backend with the highest score(session, backend). Adding a backend moves
// exactly the sessions it now wins, about 1/(N+1) of them, all to it;
// removing one moves only the sessions it won, spread evenly over the rest.
// Scores depend only on the session id, its epoch and backend names, so
// every router computes the same home for a cookie.
//
// With weights, a backend's score is w / -ln(u), u its plain score mapped
// into (0, 1) (Schindelhauer and Schomaker's weighted rendezvous hashing):
// each backend wins a share of sessions proportional to its weight, and a
// change of one backend's weight moves sessions only to or from it. With
// equal weights this ranks backends as the plain score does, so giving
// every backend the same weight moves no session.

// sessionKey hashes a session id and epoch (FNV-1a, 64 bit).
func sessionKey(sid [16]byte, epoch uint8) uint64 {
	h := fnvOffset
	lo, hi := binary.LittleEndian.Uint64(sid[:8]), binary.LittleEndian.Uint64(sid[8:])
	h = fnvWord(h, lo)
	h = fnvWord(h, hi)
	h ^= uint64(epoch)
	h *= fnvPrime
	return h
}

// nameKey hashes a backend name.
func nameKey(name string) uint64 {
	h := fnvOffset
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime
	}
	return mix64(h)
}

// score is the weight of a backend for a session.
func score(session, name uint64) uint64 { return mix64(session ^ name) }

// weighted is plain score s under weight w.
func weighted(s uint64, w int) float64 {
	u := (float64(s>>11) + 0.5) / (1 << 53) // in (0, 1), exact in a float64
	return float64(w) / -math.Log(u)
}

const (
	fnvOffset uint64 = 14695981039346656037
	fnvPrime  uint64 = 1099511628211
)

func fnvWord(h, w uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= w & 0xff
		h *= fnvPrime
		w >>= 8
	}
	return h
}

// mix64 is the splitmix64 finalizer: it spreads every input bit over the
// whole word, which plain FNV does not.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
