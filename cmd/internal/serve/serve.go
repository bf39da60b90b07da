// Package serve holds the limits every listener of both authguard binaries
// runs with, so that no client can hold a connection, a goroutine or a
// buffer for ever: a time to send the request header, a time to send the
// whole request (or, for proxied uploads, a time between bytes of the
// body), a time a keep-alive connection may sit idle, and a cap on open
// connections.
package serve

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits are the listener limits, as flags. Zero values take the
// defaults.
type Limits struct {
	HTTPReadHeaderTimeout time.Duration `help:"Time a client has to send a request's header; a connection that sends nothing is closed after it." default:"10s"`
	HTTPReadTimeout       time.Duration `help:"Time a client has to send a whole request, body included (not on the gateway's proxy port, which streams; see --http-body-progress-timeout there)." default:"30s"`
	HTTPIdleTimeout       time.Duration `help:"Time a keep-alive connection may sit idle between requests." default:"2m"`
	HTTPMaxConns          int           `help:"Open connections a listener accepts at once; more wait to be accepted." default:"4096"`
}

// Defaults of the limits, for a Limits built without flags.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConns          = 4096
)

func (f Limits) withDefaults() Limits {
	if f.HTTPReadHeaderTimeout <= 0 {
		f.HTTPReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if f.HTTPReadTimeout <= 0 {
		f.HTTPReadTimeout = DefaultReadTimeout
	}
	if f.HTTPIdleTimeout <= 0 {
		f.HTTPIdleTimeout = DefaultIdleTimeout
	}
	if f.HTTPMaxConns <= 0 {
		f.HTTPMaxConns = DefaultMaxConns
	}
	return f
}

// Server returns a server for h with the limits; streaming leaves out the
// whole-request read timeout (a proxied upload may last as long as it
// makes progress). The server's own complaints (a failed TLS handshake, a
// client speaking HTTP to HTTPS) go to log, as every other line.
func (f Limits) Server(h http.Handler, streaming bool, log *slog.Logger) *http.Server {
	f = f.withDefaults()
	s := &http.Server{Handler: h, ReadHeaderTimeout: f.HTTPReadHeaderTimeout, IdleTimeout: f.HTTPIdleTimeout,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelInfo)}
	if !streaming {
		s.ReadTimeout = f.HTTPReadTimeout
	}
	return s
}

// Listen listens on addr with the connection cap.
func (f Limits) Listen(addr string) (net.Listener, error) {
	f = f.withDefaults()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return netutil.LimitListener(ln, f.HTTPMaxConns), nil
}

// ProgressBody makes every read of r's body wait at most timeout for
// bytes, through the connection's read deadline: a body that stops coming
// ends the request, one that keeps coming may take as long as it needs.
func ProgressBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	if timeout <= 0 || r.Body == nil || r.Body == http.NoBody {
		return
	}
	rc := http.NewResponseController(w)
	r.Body = &progressBody{ReadCloser: r.Body, rc: rc, timeout: timeout}
}

type progressBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
