package procworker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []frame{
		{typ: frameReady, body: []byte(`{"protocol":1}`)},
		{typ: frameCall, flags: flagStream | flagRaw, id: 1<<64 - 1, body: appendCallBody(nil, []byte(`{"session":"s"}`), []byte{0, 1, 2})},
		{typ: framePing, id: 7},
		{typ: frameResult, flags: flagRef, id: 3, body: []byte("ref-1")},
	}
	var buf []byte
	for _, f := range frames {
		buf = appendFrame(buf, f)
	}
	r := bytes.NewReader(buf)
	for _, want := range frames {
		got, err := readFrame(r, DefaultMaxFrame)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := readFrame(r, DefaultMaxFrame)
	require.ErrorIs(t, err, io.EOF, "a clean end between frames")

	meta, payload, err := splitCallBody(frames[1].body)
	require.NoError(t, err)
	require.Equal(t, `{"session":"s"}`, string(meta))
	require.Equal(t, []byte{0, 1, 2}, payload)
}

func TestReadFrameRejects(t *testing.T) {
	full := appendFrame(nil, frame{typ: frameResult, id: 1, body: []byte("12345")})
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"shorter than a header": {[]byte{0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}, errShortFrame},
		"over the limit":        {[]byte{0, 0, 1, 0}, errBigFrame},
		"cut in the header":     {full[:8], io.ErrUnexpectedEOF},
		"cut in the body":       {full[:len(full)-1], io.ErrUnexpectedEOF},
		"cut in the length":     {full[:2], io.ErrUnexpectedEOF},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readFrame(bytes.NewReader(tc.in), 255)
			require.ErrorIs(t, err, tc.want)
		})
	}
	_, _, err := splitCallBody([]byte{0, 0, 0, 9, 'x'})
	require.Error(t, err)
}

// FuzzReadFrame: whatever a worker writes, the decoder returns an error or
// a frame that encodes back to exactly the bytes it read, and never
// allocates beyond the limit.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, frame{typ: frameReady, body: []byte(`{"protocol":1}`)}))
	f.Add(appendFrame(nil, frame{typ: frameResult, flags: flagRaw, id: 42, body: []byte{0xff, 0}}))
	f.Add(appendFrame(appendFrame(nil, frame{typ: framePong, id: 1}), frame{typ: frameEnd, id: 2}))
	f.Add([]byte{0, 0, 0, 3, 'x', 'y', 'z'})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 10, 42, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		read := 0
		for {
			fr, err := readFrame(r, limit)
			if err != nil {
				if errors.Is(err, io.EOF) {
					require.Equal(t, len(data), read, "EOF only at the end")
				}
				return
			}
			require.LessOrEqual(t, len(fr.body), limit)
			enc := appendFrame(nil, fr)
			require.Equal(t, data[read:read+len(enc)], enc)
			read += len(enc)
			if fr.typ == frameCall {
				if meta, payload, err := splitCallBody(fr.body); err == nil {
					require.Equal(t, fr.body, appendCallBody(nil, meta, payload))
				}
			}
			require.Equal(t, int(binary.BigEndian.Uint32(enc)), headerLen+len(fr.body))
		}
	})
}
