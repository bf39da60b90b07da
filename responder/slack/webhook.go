package slack

import (
	"context"
	"errors"

	"github.com/slack-go/slack"
)

// webhook posts to an incoming webhook: every page a new post, in the
// webhook's own channel, never updated.
type webhook struct{ url string }

// Webhook returns the transport of an incoming webhook URL.
func Webhook(url string) Transport { return webhook{url} }

func (webhook) Updates() bool { return false }

func (w webhook) Post(ctx context.Context, _ string, m Message, _ string) (string, string, error) {
	msg := &slack.WebhookMessage{Text: m.Text}
	if m.Attachment.Color != "" {
		msg.Attachments = []slack.Attachment{m.Attachment}
	}
	return "", "", slack.PostWebhookContext(ctx, w.url, msg)
}

func (webhook) Update(context.Context, string, string, Message) error {
	return errors.New("an incoming webhook cannot update a message")
}
