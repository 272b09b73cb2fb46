package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var allAffinities = []Affinity{DefaultAffinity, Hint, StrictQueue, StrictFailFast}

func TestParseAffinity(t *testing.T) {
	valid := []struct {
		in   string
		want Affinity
	}{
		{"", DefaultAffinity},
		{"default", DefaultAffinity},
		{"hint", Hint},
		{"strict_queue", StrictQueue},
		{"strict_fail_fast", StrictFailFast},
	}
	for _, tt := range valid {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			got, err := ParseAffinity(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	invalid := []string{"bogus", "strict", "strict-queue", "strictqueue", " hint", "hint ", "hint\x00", "Affinity(4)", "0", "1"}
	for _, in := range invalid {
		t.Run(fmt.Sprintf("%q", in), func(t *testing.T) {
			got, err := ParseAffinity(in)
			require.ErrorIs(t, err, ErrInvalidAffinity)
			assert.Equal(t, DefaultAffinity, got)
			// The message quotes the input so a bad config line is easy to find.
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", in))
		})
	}
}

func TestAffinityString(t *testing.T) {
	want := map[Affinity]string{
		DefaultAffinity: "default",
		Hint:            "hint",
		StrictQueue:     "strict_queue",
		StrictFailFast:  "strict_fail_fast",
		4:               "Affinity(4)",
		255:             "Affinity(255)",
	}
	for a, s := range want {
		assert.Equal(t, s, a.String())
	}
	// Every defined mode prints as a name that parses back to itself.
	for _, a := range allAffinities {
		got, err := ParseAffinity(a.String())
		require.NoError(t, err, a.String())
		assert.Equal(t, a, got)
	}
}

func TestAffinityValid(t *testing.T) {
	for _, a := range allAffinities {
		assert.True(t, a.Valid(), a.String())
	}
	for _, a := range []Affinity{4, 5, 255} {
		assert.False(t, a.Valid(), a.String())
	}
}

func TestAffinityText(t *testing.T) {
	for _, a := range allAffinities {
		text, err := a.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, a.String(), string(text))

		var back Affinity = 42 // must be overwritten
		require.NoError(t, back.UnmarshalText(text))
		assert.Equal(t, a, back)
	}

	// Undefined values do not marshal, rather than writing a name no parser accepts.
	text, err := Affinity(7).MarshalText()
	require.ErrorIs(t, err, ErrInvalidAffinity)
	assert.Nil(t, text)

	var empty Affinity = StrictQueue
	require.NoError(t, empty.UnmarshalText(nil))
	assert.Equal(t, DefaultAffinity, empty, "empty text means the pool default")

	// A failed unmarshal leaves the value alone.
	kept := StrictFailFast
	require.ErrorIs(t, kept.UnmarshalText([]byte("sometimes")), ErrInvalidAffinity)
	assert.Equal(t, StrictFailFast, kept)
}

func TestAffinityJSON(t *testing.T) {
	type poolConfig struct {
		Name     string   `json:"name"`
		Affinity Affinity `json:"affinity"`
	}

	out, err := json.Marshal(poolConfig{Name: "models", Affinity: StrictQueue})
	require.NoError(t, err)
	assert.JSONEq(t, `{"name":"models","affinity":"strict_queue"}`, string(out))

	for _, tt := range []struct {
		in   string
		want Affinity
	}{
		{`{"affinity":"strict_fail_fast"}`, StrictFailFast},
		{`{"affinity":"hint"}`, Hint},
		{`{"affinity":""}`, DefaultAffinity},
		{`{"affinity":"default"}`, DefaultAffinity},
		{`{}`, DefaultAffinity},
	} {
		var got poolConfig
		require.NoError(t, json.Unmarshal([]byte(tt.in), &got), tt.in)
		assert.Equal(t, tt.want, got.Affinity, tt.in)
	}

	var bad poolConfig
	require.ErrorIs(t, json.Unmarshal([]byte(`{"affinity":"sticky"}`), &bad), ErrInvalidAffinity)
	// A number is not a mode name: modes are strings in config.
	assert.Error(t, json.Unmarshal([]byte(`{"affinity":2}`), &bad))

	_, err = json.Marshal(poolConfig{Affinity: 9})
	require.ErrorIs(t, err, ErrInvalidAffinity)

	// Text marshalling also makes modes usable as map keys.
	out, err = json.Marshal(map[Affinity]int{Hint: 1, StrictQueue: 2})
	require.NoError(t, err)
	assert.JSONEq(t, `{"hint":1,"strict_queue":2}`, string(out))
	var counts map[Affinity]int
	require.NoError(t, json.Unmarshal(out, &counts))
	assert.Equal(t, map[Affinity]int{Hint: 1, StrictQueue: 2}, counts)
}

func FuzzParseAffinity(f *testing.F) {
	for _, s := range []string{"", "default", "hint", "strict_queue", "strict_fail_fast", "HINT", "strict_", "Affinity(4)", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAffinity(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAffinity) {
				t.Fatalf("ParseAffinity(%q): error %v is not ErrInvalidAffinity", s, err)
			}
			return
		}
		if !a.Valid() {
			t.Fatalf("ParseAffinity(%q) = %d, not a valid mode", s, a)
		}
		back, err := ParseAffinity(a.String())
		if err != nil || back != a {
			t.Fatalf("ParseAffinity(%q) = %v, but %q parses to %v, %v", s, a, a.String(), back, err)
		}
	})
}

func ExampleParseAffinity() {
	for _, s := range []string{"strict_queue", "", "sticky"} {
		a, err := ParseAffinity(s)
		if errors.Is(err, ErrInvalidAffinity) {
			fmt.Printf("%q: invalid\n", s)
			continue
		}
		fmt.Printf("%q: %v\n", s, a)
	}
	// Output:
	// "strict_queue": strict_queue
	// "": default
	// "sticky": invalid
}

func TestCallNewRef(t *testing.T) {
	call := Call{Session: "s1", Pool: "models", Worker: 3, Incarnation: 7, Member: "m2", Payload: "req"}
	ref := call.NewRef("tensor-9")
	assert.Equal(t, Ref{Session: "s1", Pool: "models", Worker: 3, Incarnation: 7, Key: "tensor-9", Member: "m2"}, ref)
	assert.True(t, ref.Valid())

	// Every field of Ref must come from the call or the key; a field added to
	// Ref and forgotten in NewRef shows up here as a zero value.
	v := reflect.ValueOf(ref)
	for i := range v.NumField() {
		assert.False(t, v.Field(i).IsZero(), "NewRef left Ref.%s zero", v.Type().Field(i).Name)
	}
}

func TestRefValid(t *testing.T) {
	good := Ref{Session: "s", Pool: "p", Worker: 0, Incarnation: 1, Key: "k"}
	tests := []struct {
		name string
		ref  Ref
		want bool
	}{
		{"complete", good, true},
		{"worker zero", good, true},
		{"no key", func() Ref { r := good; r.Key = ""; return r }(), true},
		{"zero value", Ref{}, false},
		{"no session", func() Ref { r := good; r.Session = ""; return r }(), false},
		{"no pool", func() Ref { r := good; r.Pool = ""; return r }(), false},
		{"no incarnation", func() Ref { r := good; r.Incarnation = 0; return r }(), false},
		{"negative worker", func() Ref { r := good; r.Worker = -1; return r }(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.ref.Valid())
		})
	}
}
