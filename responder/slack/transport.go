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

// post sends a message (a thread reply when thread is set) through the
// API or the webhook, with retries; it returns the channel ID and ts.
func (n *Notifier) post(ctx context.Context, channel, text string, m Message, thread string) (ch, ts string, err error) {
	err = n.retry(ctx, func() error {
		if n.api == nil {
			msg := &slack.WebhookMessage{Text: text}
			if m.Attachment.Color != "" {
				msg.Attachments = []slack.Attachment{m.Attachment}
			}
			return slack.PostWebhookContext(ctx, n.opts.WebhookURL, msg)
		}
		opts := []slack.MsgOption{slack.MsgOptionText(text, false)}
		if m.Attachment.Color != "" {
			opts = append(opts, slack.MsgOptionAttachments(m.Attachment))
		}
		if thread != "" {
			opts = append(opts, slack.MsgOptionTS(thread))
		}
		var err error
		ch, ts, err = n.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ch, ts, err
}

// update replaces a posted message with m (chat.update), with retries.
func (n *Notifier) update(ctx context.Context, channel, ts string, m Message) error {
	return n.retry(ctx, func() error {
		_, _, _, err := n.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(m.Text, false), slack.MsgOptionAttachments(m.Attachment))
		return err
	})
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
