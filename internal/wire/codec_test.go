package wire

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/affinity-go/affinity/messages"
)

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	w, err := EncodeValue(v)
	require.NoError(t, err)
	b, err := proto.Marshal(w) // as it travels
	require.NoError(t, err)
	var back Value
	require.NoError(t, proto.Unmarshal(b, &back))
	out, err := DecodeValue(&back)
	require.NoError(t, err)
	return out
}

func TestValuesCross(t *testing.T) {
	assert.Nil(t, roundTrip(t, nil))
	assert.Equal(t, []byte("raw\x00bytes"), roundTrip(t, []byte("raw\x00bytes")))
	assert.Equal(t, "text", roundTrip(t, "text"))
	assert.Equal(t, -42, roundTrip(t, -42))
	ref := messages.Ref{Session: "s", Pool: "p", Worker: 3, Incarnation: 7, Key: "k", Member: "m1"}
	assert.Equal(t, ref, roundTrip(t, ref))
	assert.Equal(t, ref, roundTrip(t, &ref), "a *Ref arrives as a Ref, as workers return them")
	msg := roundTrip(t, wrapperspb.String("proto"))
	assert.True(t, proto.Equal(wrapperspb.String("proto"), msg.(proto.Message)))
}

func TestValuesThatCannotCross(t *testing.T) {
	for _, v := range []any{struct{}{}, 3.5, int64(1), map[string]int{}, []string{"a"}} {
		_, err := EncodeValue(v)
		assert.ErrorIs(t, err, ErrNotPortable, "%T", v)
	}
}

func TestEmptyValueIsNil(t *testing.T) {
	v, err := DecodeValue(nil)
	assert.NoError(t, err)
	assert.Nil(t, v)
}

// FuzzDecodeValue: any bytes off the wire decode to a value or an error,
// never a panic.
func FuzzDecodeValue(f *testing.F) {
	for _, v := range []any{nil, []byte("b"), "s", 1, messages.Ref{Key: "k"}, wrapperspb.Int64(5)} {
		w, err := EncodeValue(v)
		require.NoError(f, err)
		b, err := proto.Marshal(w)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var w Value
		if proto.Unmarshal(b, &w) != nil {
			return
		}
		_, _ = DecodeValue(&w)
	})
}
