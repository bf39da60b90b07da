// Package exitcode gives the binaries' failures the exit status scripts
// tell apart: 1 a finding or a failed check (a rule file with errors, a
// failed rule test), 2 a usage error (an unknown flag, a bad argument), 3
// a backend that could not be reached (Redis, Loki, Slack).
package exitcode

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// Exit statuses.
const (
	OK          = 0
	Findings    = 1
	Usage       = 2
	Unreachable = 3
)

// Error carries an exit status with its error.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// UsageError marks err as a usage error (status 2).
func UsageError(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Usage, err}
}

// Of is the exit status for err: 0 for nil, the status it carries, 3 for a
// network failure (refused, unreachable, timed out, a name that does not
// resolve), else 1.
func Of(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.As(err, &op), errors.As(err, &dns),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return Unreachable
	}
	return Findings
}
