package slack

import (
	"context"

	"github.com/slack-go/slack"
)

// bot posts with a bot token through Slack's Web API: messages it can
// update in place and reply to in thread.
type bot struct{ api *slack.Client }

// Bot returns the transport of a bot token; apiURL overrides Slack's API
// base URL (for slacktest) when not empty.
func Bot(token, apiURL string) Transport { return bot{client(token, apiURL)} }

func client(token, apiURL string) *slack.Client {
	var o []slack.Option
	if apiURL != "" {
		o = append(o, slack.OptionAPIURL(apiURL))
	}
	return slack.New(token, o...)
}

func (bot) Updates() bool { return true }

func (b bot) Post(ctx context.Context, channel string, m Message, thread string) (string, string, error) {
	opts := []slack.MsgOption{slack.MsgOptionText(m.Text, false)}
	if m.Attachment.Color != "" {
		opts = append(opts, slack.MsgOptionAttachments(m.Attachment))
	}
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	return b.api.PostMessageContext(ctx, channel, opts...)
}

func (b bot) Update(ctx context.Context, channel, ts string, m Message) error {
	_, _, _, err := b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(m.Text, false), slack.MsgOptionAttachments(m.Attachment))
	return err
}

// Whoami asks Slack whose the token is (auth.test), as a check that it is
// valid: it returns the bot's user and workspace.
func Whoami(ctx context.Context, token, apiURL string) (string, error) {
	r, err := client(token, apiURL).AuthTestContext(ctx)
	if err != nil {
		return "", err
	}
	return r.User + " in " + r.Team, nil
}
