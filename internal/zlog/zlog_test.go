package zlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newLogger returns a bridged slog.Logger writing JSON lines to the buffer
// through a zerolog logger at level.
func newLogger(level zerolog.Level) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return New(zerolog.New(&buf).Level(level)), &buf
}

// lines decodes every JSON line written to buf.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(buf)
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, m)
	}
}

// line decodes the single JSON line written to buf.
func line(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	all := lines(t, buf)
	require.Len(t, all, 1)
	return all[0]
}

func TestLevelMapping(t *testing.T) {
	tests := []struct {
		slog slog.Level
		want string
	}{
		{slog.LevelDebug - 4, "debug"}, // below debug still reaches zerolog
		{slog.LevelDebug, "debug"},
		{slog.LevelDebug + 1, "debug"},
		{slog.LevelInfo, "info"},
		{slog.LevelInfo + 2, "info"},
		{slog.LevelWarn, "warn"},
		{slog.LevelWarn + 1, "warn"},
		{slog.LevelError, "error"},
		{slog.LevelError + 4, "error"}, // never fatal or panic: a log line must not exit
	}
	for _, tt := range tests {
		t.Run(tt.slog.String(), func(t *testing.T) {
			log, buf := newLogger(zerolog.TraceLevel)
			log.Log(context.Background(), tt.slog, "hello")
			got := line(t, buf)
			assert.Equal(t, tt.want, got[zerolog.LevelFieldName])
			assert.Equal(t, "hello", got[zerolog.MessageFieldName])
		})
	}
}

type point struct{ X, Y int }

// lazy is resolved only when logged.
type lazy string

func (l lazy) LogValue() slog.Value { return slog.StringValue("resolved " + string(l)) }

func TestAttributeKinds(t *testing.T) {
	log, buf := newLogger(zerolog.DebugLevel)
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	log.Info("call",
		slog.String("pool", "models"),
		slog.Int("worker", 3),
		slog.Int64("big", -1<<40),
		slog.Uint64("incarnation", 1<<63),
		slog.Float64("ratio", 0.5),
		slog.Bool("strict", true),
		slog.Duration("took", 1500*time.Millisecond),
		slog.Time("at", at),
		slog.Any("err", errors.New("worker busy")),
		slog.Group("req", slog.String("id", "r1"), slog.Int("size", 2), slog.Group("inner", slog.Bool("ok", false))),
		slog.Any("lazy", lazy("value")),
		slog.Any("point", point{1, 2}),
	)
	got := line(t, buf)
	want := map[string]any{
		"level":        "info",
		"message":      "call",
		"pool":         "models",
		"worker":       3.0,
		"big":          float64(-1 << 40),
		"incarnation":  float64(1 << 63),
		"ratio":        0.5,
		"strict":       true,
		"took":         1500.0, // zerolog's duration unit: milliseconds
		"at":           at.Format(zerolog.TimeFieldFormat),
		"err":          "worker busy",
		"req.id":       "r1",
		"req.size":     2.0,
		"req.inner.ok": false,
		"lazy":         "resolved value",
		"point":        "{1 2}",
	}
	assert.Equal(t, want, got)
}

func TestSlogAttrRules(t *testing.T) {
	// The slog.Handler contract: an empty Attr is ignored, a group with an
	// empty key is inlined, and a group with no attributes is ignored.
	log, buf := newLogger(zerolog.DebugLevel)
	log.Info("m",
		slog.Attr{},
		slog.Group("", slog.String("a", "1"), slog.Int("b", 2)),
		slog.Group("empty"),
		slog.String("c", "3"),
	)
	assert.Equal(t, map[string]any{"level": "info", "message": "m", "a": "1", "b": 2.0, "c": "3"}, line(t, buf))

	log.WithGroup("g").Info("m", slog.Group("", slog.String("a", "1")), slog.Attr{})
	assert.Equal(t, map[string]any{"level": "info", "message": "m", "g.a": "1"}, line(t, buf))
}

func TestWithAttrs(t *testing.T) {
	log, buf := newLogger(zerolog.DebugLevel)
	child := log.With(
		slog.String("pool", "models"),
		slog.Int("worker", 2),
		slog.Bool("strict", true),
		slog.Duration("backoff", 250*time.Millisecond),
		slog.Any("cause", errors.New("disk full")),
		slog.Group("sess", slog.String("id", "s1")),
		slog.Any("lazy", lazy("v")),
		slog.Attr{},
	)
	child.Info("restarted", "incarnation", 4)
	log.Info("parent")

	got := lines(t, buf)
	require.Len(t, got, 2)
	// Attributes added with With are written like record attributes.
	assert.Equal(t, map[string]any{
		"level":       "info",
		"message":     "restarted",
		"pool":        "models",
		"worker":      2.0,
		"strict":      true,
		"backoff":     250.0,
		"cause":       "disk full",
		"sess.id":     "s1",
		"lazy":        "resolved v",
		"incarnation": 4.0,
	}, got[0])
	// With does not change the logger it was derived from.
	assert.Equal(t, map[string]any{"level": "info", "message": "parent"}, got[1])
}

func TestWithAttrsNothingToAdd(t *testing.T) {
	var buf bytes.Buffer
	h := &Handler{log: zerolog.New(&buf)}
	// Attributes that write nothing must not leave a trace in the context,
	// not even a separator that breaks the JSON of every later line.
	for _, attrs := range [][]slog.Attr{nil, {{}}, {slog.Group("g")}, {slog.Group("g", slog.Group("h"))}} {
		assert.Same(t, h, h.WithAttrs(attrs), "%v", attrs)
	}
	withA := h.WithAttrs([]slog.Attr{slog.String("a", "b")}).WithAttrs([]slog.Attr{{}, slog.Group("g")})
	slog.New(withA).Info("m", "c", 1)
	assert.Equal(t, map[string]any{"level": "info", "message": "m", "a": "b", "c": 1.0}, line(t, &buf))
}

// counted counts how often it is resolved.
type counted struct{ n *int }

func (c counted) LogValue() slog.Value { *c.n++; return slog.IntValue(*c.n) }

func TestWithAttrsResolvesOnce(t *testing.T) {
	log, buf := newLogger(zerolog.DebugLevel)
	var n int
	child := log.With(slog.Any("v", counted{&n}))
	child.Info("one")
	child.Info("two")
	assert.Equal(t, 1, n)
	for _, m := range lines(t, buf) {
		assert.Equal(t, 1.0, m["v"])
	}
}

func TestWithGroup(t *testing.T) {
	log, buf := newLogger(zerolog.DebugLevel)
	log.With("system", "a1").
		WithGroup("pool").With("name", "models").
		WithGroup("worker").Info("m", "id", 3, slog.Group("call", "n", 1))

	assert.Equal(t, map[string]any{
		"level":              "info",
		"message":            "m",
		"system":             "a1", // added before the first group: no prefix
		"pool.name":          "models",
		"pool.worker.id":     3.0,
		"pool.worker.call.n": 1.0,
	}, line(t, buf))

	// An empty group name is no group.
	h := &Handler{log: zerolog.New(io.Discard)}
	assert.Same(t, h, h.WithGroup(""))
}

func TestKeepsZerologContext(t *testing.T) {
	var buf bytes.Buffer
	log := New(zerolog.New(&buf).With().Str("component", "protoactor").Logger())
	log.Warn("dead letter", "pid", "p1")
	assert.Equal(t, map[string]any{"level": "warn", "message": "dead letter", "component": "protoactor", "pid": "p1"}, line(t, &buf))
}

func TestEnabledFollowsZerologLevel(t *testing.T) {
	ctx := context.Background()
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}
	tests := []struct {
		zl      zerolog.Level
		enabled []bool // for levels
	}{
		{zerolog.TraceLevel, []bool{true, true, true, true}},
		{zerolog.DebugLevel, []bool{true, true, true, true}},
		{zerolog.InfoLevel, []bool{false, true, true, true}},
		{zerolog.WarnLevel, []bool{false, false, true, true}},
		{zerolog.ErrorLevel, []bool{false, false, false, true}},
		{zerolog.Disabled, []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.zl.String(), func(t *testing.T) {
			log, buf := newLogger(tt.zl)
			var want []string
			for i, l := range levels {
				assert.Equal(t, tt.enabled[i], log.Enabled(ctx, l), "Enabled(%v)", l)
				log.Log(ctx, l, l.String())
				if tt.enabled[i] {
					want = append(want, l.String())
				}
			}
			// What Enabled promises is exactly what gets written.
			var wrote []string
			for _, m := range lines(t, buf) {
				wrote = append(wrote, m["message"].(string))
			}
			assert.Equal(t, want, wrote)
		})
	}
}

func TestEnabledFollowsGlobalLevel(t *testing.T) {
	prev := zerolog.GlobalLevel()
	zerolog.SetGlobalLevel(zerolog.ErrorLevel)
	t.Cleanup(func() { zerolog.SetGlobalLevel(prev) })

	log, buf := newLogger(zerolog.DebugLevel)
	assert.False(t, log.Enabled(context.Background(), slog.LevelWarn))
	assert.True(t, log.Enabled(context.Background(), slog.LevelError))
	log.Warn("dropped")
	log.Error("kept")
	assert.Equal(t, "kept", line(t, buf)["message"])
}
