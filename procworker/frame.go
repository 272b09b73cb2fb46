package procworker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types. The numbering is the wire protocol (docs/worker-protocol.md).
const (
	frameReady   byte = 1  // worker → host: initialised, ready for calls
	frameCall    byte = 2  // host → worker: a call (flagStream: a streaming call)
	frameResult  byte = 3  // worker → host: a call's value
	frameError   byte = 4  // worker → host: a call's error (ends a stream too)
	frameItem    byte = 5  // worker → host: one item of a stream
	frameEnd     byte = 6  // worker → host: a stream ended without error
	frameRelease byte = 7  // host → worker: a session ended, drop its state
	framePing    byte = 8  // host → worker: heartbeat, id is a sequence number
	framePong    byte = 9  // worker → host: answer to the ping with the same id
	frameCancel  byte = 10 // host → worker: the caller of call id gave up
	frameCredit  byte = 11 // host → worker: stream call id may send n more items
)

// Frame flags.
const (
	flagRaw    byte = 1 << 0 // the payload is raw bytes, not JSON
	flagStream byte = 1 << 1 // call: the caller wants a stream
	flagRef    byte = 1 << 2 // result or item: the payload is a ref key (UTF-8)
)

// headerLen is type, flags and id: the part of a frame's length that every
// frame has.
const headerLen = 1 + 1 + 8

// DefaultMaxFrame bounds a frame's length when Config.MaxFrame is zero.
const DefaultMaxFrame = 16 << 20

// frame is one protocol message.
type frame struct {
	typ   byte
	flags byte
	id    uint64
	body  []byte
}

var (
	errShortFrame = errors.New("frame shorter than its header")
	errBigFrame   = errors.New("frame larger than the limit")
)

// appendFrame encodes f after buf: a 4-byte big-endian length of the rest,
// then type, flags, id (8 bytes, big-endian) and the body.
func appendFrame(buf []byte, f frame) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(headerLen+len(f.body)))
	buf = append(buf, f.typ, f.flags)
	buf = binary.BigEndian.AppendUint64(buf, f.id)
	return append(buf, f.body...)
}

// readFrame reads one frame. It checks the length against maxLen before
// allocating, so a garbage length cannot make the host allocate gigabytes.
// The body is freshly allocated: it may be handed to the caller.
func readFrame(r io.Reader, maxLen int) (frame, error) {
	var hdr [4 + headerLen]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return frame{}, err // io.EOF only when nothing was read: a clean end
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	switch {
	case n < headerLen:
		return frame{}, fmt.Errorf("%w: length %d", errShortFrame, n)
	case uint64(n) > uint64(maxLen):
		return frame{}, fmt.Errorf("%w: length %d > %d", errBigFrame, n, maxLen)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return frame{}, unexpected(err)
	}
	f := frame{typ: hdr[4], flags: hdr[5], id: binary.BigEndian.Uint64(hdr[6:])}
	if body := int(n) - headerLen; body > 0 {
		f.body = make([]byte, body)
		if _, err := io.ReadFull(r, f.body); err != nil {
			return frame{}, unexpected(err)
		}
	}
	return f, nil
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendCallBody encodes a call's body: a 4-byte big-endian length of the
// JSON metadata, the metadata, then the payload.
func appendCallBody(buf, meta, payload []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(meta)))
	buf = append(buf, meta...)
	return append(buf, payload...)
}

// splitCallBody is appendCallBody's inverse (used by tests and Go workers).
func splitCallBody(body []byte) (meta, payload []byte, err error) {
	if len(body) < 4 {
		return nil, nil, errShortFrame
	}
	n := binary.BigEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, nil, fmt.Errorf("call metadata length %d exceeds the body", n)
	}
	return body[4 : 4+n], body[4+n:], nil
}

var typeNames = [...]string{"", "ready", "call", "result", "error", "item", "end", "release", "ping", "pong", "cancel", "credit"}

func typeName(t byte) string {
	if int(t) < len(typeNames) && t != 0 {
		return typeNames[t]
	}
	return fmt.Sprintf("unknown(%d)", t)
}
