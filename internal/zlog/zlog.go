// Package zlog bridges log/slog records into a zerolog.Logger, so the actor
// system's own logs land in the same structured stream as Affinity's.
package zlog

import (
	"context"
	"log/slog"

	"github.com/rs/zerolog"
)

// Handler is a slog.Handler writing to a zerolog.Logger.
type Handler struct {
	log    zerolog.Logger
	prefix string // group prefix for attribute keys
}

// New returns a slog.Logger whose records go to log.
func New(log zerolog.Logger) *slog.Logger { return slog.New(&Handler{log: log}) }

func level(l slog.Level) zerolog.Level {
	switch {
	case l >= slog.LevelError:
		return zerolog.ErrorLevel
	case l >= slog.LevelWarn:
		return zerolog.WarnLevel
	case l >= slog.LevelInfo:
		return zerolog.InfoLevel
	default:
		return zerolog.DebugLevel
	}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	lvl := level(l)
	return lvl >= h.log.GetLevel() && lvl >= zerolog.GlobalLevel()
}

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.WithLevel(level(r.Level))
	if ev == nil {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(ev, h.prefix, a)
		return true
	})
	ev.Msg(r.Message)
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	ctx := h.log.With()
	for _, a := range attrs {
		ctx = ctx.Interface(h.prefix+a.Key, a.Value.Resolve().Any())
	}
	return &Handler{log: ctx.Logger(), prefix: h.prefix}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{log: h.log, prefix: h.prefix + name + "."}
}

func addAttr(ev *zerolog.Event, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindString:
		ev.Str(key, v.String())
	case slog.KindInt64:
		ev.Int64(key, v.Int64())
	case slog.KindUint64:
		ev.Uint64(key, v.Uint64())
	case slog.KindFloat64:
		ev.Float64(key, v.Float64())
	case slog.KindBool:
		ev.Bool(key, v.Bool())
	case slog.KindDuration:
		ev.Dur(key, v.Duration())
	case slog.KindTime:
		ev.Time(key, v.Time())
	case slog.KindGroup:
		for _, g := range v.Group() {
			addAttr(ev, key+".", g)
		}
	default:
		if err, ok := v.Any().(error); ok {
			ev.AnErr(key, err)
			return
		}
		ev.Str(key, v.String())
	}
}
