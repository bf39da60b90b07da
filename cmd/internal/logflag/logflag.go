// Package logflag holds the logging flags both binaries take, spelled and
// meaning the same in each: --log-level and --log-format, for log/slog; the
// logger it makes also carries go-redis's own lines, and writes durations
// as text.
package logflag

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"
	"github.com/redis/go-redis/v9"
	"golang.org/x/term"
)

// Log is embedded in a command's flags.
type Log struct {
	LogLevel  string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string `help:"auto (coloured text on a terminal, NO_COLOR honoured; JSON otherwise), json or text." default:"auto" enum:"auto,json,text"`
}

// Logger returns the logger the flags ask for, writing to w.
func (f Log) Logger(w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.LogLevel)
	}
	// Durations as people write them ("1.5s"), not as nanoseconds.
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	var log *slog.Logger
	switch {
	case f.LogFormat == "auto" && terminal(w):
		// A person reading: short times, levels in colour unless NO_COLOR.
		log = slog.New(tint.NewTextHandler(w, &tint.Options{Level: l, ReplaceAttr: opts.ReplaceAttr,
			TimeFormat: "15:04:05.000", NoColor: os.Getenv("NO_COLOR") != ""}))
	case f.LogFormat == "text":
		log = slog.New(slog.NewTextHandler(w, opts))
	default:
		log = slog.New(slog.NewJSONHandler(w, opts))
	}
	// go-redis logs on its own (a pool that cannot dial, a failover):
	// through this logger, so that every line of the log is one format.
	redis.SetLogger(redisLog{log})
	return log, nil
}

// terminal says w is a terminal (a person is reading).
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// redisLog is go-redis's logger interface over slog.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// Stopped logs a binary's last line: that it stopped, and why (the
// error, else the signal that ended ctx, else "done").
func Stopped(ctx context.Context, log *slog.Logger, name string, err error) {
	reason := "done"
	switch {
	case err != nil:
		reason = err.Error()
	case context.Cause(ctx) != nil:
		reason = context.Cause(ctx).Error()
	}
	log.Info(name+" stopped", "reason", reason)
}
