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
	attrs = resolve(attrs)
	if len(attrs) == 0 {
		return h // embedding nothing would leave a stray comma in the context
	}
	// Embedded through the same mapping as record attributes, so an error
	// keeps its message, a group is flattened and a duration keeps its unit.
	ctx := h.log.With().EmbedObject(attrObject{prefix: h.prefix, attrs: attrs})
	return &Handler{log: ctx.Logger(), prefix: h.prefix}
}

// resolve resolves attrs once and drops those slog says to ignore (empty
// attrs, groups with nothing in them).
func resolve(attrs []slog.Attr) []slog.Attr {
	var out []slog.Attr
	for _, a := range attrs {
		if a.Key == "" && a.Equal(slog.Attr{}) {
			continue
		}
		a.Value = a.Value.Resolve()
		if a.Value.Kind() == slog.KindGroup {
			g := resolve(a.Value.Group())
			if len(g) == 0 {
				continue
			}
			a.Value = slog.GroupValue(g...)
		}
		out = append(out, a)
	}
	return out
}

// attrObject writes attributes added with WithAttrs into the logger context.
type attrObject struct {
	prefix string
	attrs  []slog.Attr
}

func (o attrObject) MarshalZerologObject(ev *zerolog.Event) {
	for _, a := range o.attrs {
		addAttr(ev, o.prefix, a)
	}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{log: h.log, prefix: h.prefix + name + "."}
}

func addAttr(ev *zerolog.Event, prefix string, a slog.Attr) {
	if a.Key == "" && a.Equal(slog.Attr{}) {
		return // slog: an empty Attr is ignored
	}
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
		if a.Key != "" {
			prefix = key + "." // slog: a group with an empty key is inlined
		}
		for _, g := range v.Group() {
			addAttr(ev, prefix, g)
		}
	default:
		if err, ok := v.Any().(error); ok {
			ev.AnErr(key, err)
			return
		}
		ev.Str(key, v.String())
	}
}
