// Package logflag holds the logging flags both binaries take, spelled and
// meaning the same in each: --log-level and --log-format, for log/slog.
package logflag

import (
	"fmt"
	"io"
	"log/slog"
)

// Log is embedded in a command's flags.
type Log struct {
	LogLevel  string `help:"debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string `help:"json or text." default:"json" enum:"json,text"`
}

// Logger returns the logger the flags ask for, writing to w.
func (f Log) Logger(w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: l}
	if f.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}
