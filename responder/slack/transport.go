package slack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/slack-go/slack"

	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/backoff"
)

// Transport carries messages to one kind of destination: a bot (Bot), an
// incoming webhook (Webhook) or a terminal (Terminal). The notifier's
// pipeline (queue, coalescing, incident memory, retries) is the same for
// all of them.
type Transport interface {
	// Post sends m, as a reply in thread when thread is set and the
	// transport Updates; it returns where the message is (ts "" when it
	// cannot be addressed again).
	Post(ctx context.Context, channel string, m Message, thread string) (ch, ts string, err error)
	// Update replaces a posted message; only a transport that Updates can.
	Update(ctx context.Context, channel, ts string, m Message) error
	// Updates says messages can be updated in place and replied to in
	// thread (a bot); otherwise every page is a new post.
	Updates() bool
}

// post sends a message whose text is text (a thread reply when thread is
// set), with retries; it returns the channel ID and ts.
func (n *Notifier) post(ctx context.Context, channel, text string, m Message, thread string) (ch, ts string, err error) {
	m.Text = text
	err = n.retry(ctx, func() error {
		var err error
		ch, ts, err = n.tr.Post(ctx, channel, m, thread)
		return err
	})
	return ch, ts, err
}

// update replaces a posted message with m, with retries.
func (n *Notifier) update(ctx context.Context, channel, ts string, m Message) error {
	return n.retry(ctx, func() error { return n.tr.Update(ctx, channel, ts, m) })
}

// retry calls op until it succeeds, Slack refuses it for good, or ctx ends.
// A 429 waits its Retry-After; server and network errors back off.
func (n *Notifier) retry(ctx context.Context, op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		wait := backoff.Jitter(attempt, n.opts.RetryBase, n.opts.RetryMax)
		var rl *slack.RateLimitedError
		switch {
		case errors.As(err, &rl):
			n.metrics.rateLimited.Inc()
			wait = max(rl.RetryAfter, time.Millisecond)
		case !transient(err):
			return err
		}
		n.metrics.retries.Inc()
		n.opts.Log.Warn("slack call failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// transient says whether a failed call may work if tried again: server
// errors and network trouble, not Slack's refusals (bad token, unknown
// channel), which repeat forever.
func transient(err error) bool {
	var sc slack.StatusCodeError
	if errors.As(err, &sc) {
		return sc.Code >= 500 || sc.Code == 408
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err == "internal_error" || se.Err == "service_unavailable" || se.Err == "request_timeout" || se.Err == "fatal_error"
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (n *Notifier) giveUp(err error, a responder.Action) {
	n.metrics.failed.Inc()
	n.opts.Log.Error("slack page not delivered", "err", err, "rule", a.Decision.Rule, "key", a.Decision.Key, "severity", a.Decision.Severity)
}
