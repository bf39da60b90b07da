package slack

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/slack-go/slack"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

// Operator carries out what the buttons ask, as an operator at a terminal
// would, recording who asked and why.
type Operator interface {
	// Unblock deletes both runbook keys of ip and gives it a clean slate
	// in the detector.
	Unblock(ctx context.Context, target netip.Prefix, operator, reason string) error
	// Extend blocks ip for ttl from now and returns when the block ends.
	Extend(ctx context.Context, target netip.Prefix, ttl time.Duration, operator, reason string) (time.Time, error)
}

// maxInteraction bounds an interaction request body.
const maxInteraction = 1 << 20

// Interactions serves Slack's interaction requests (the Unblock and Extend
// buttons). A request must carry a valid signature made with the app's
// signing secret and a timestamp within five minutes, or it is refused
// with 401 and changes nothing. A valid press is carried out through op,
// answered 200, and shown on the message: updated in place, with a thread
// reply naming who did it.
func (n *Notifier) Interactions(signingSecret string, op Operator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxInteraction+1))
		if err != nil || len(body) > maxInteraction {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		// The verifier also refuses timestamps more than five minutes
		// away, so a captured request cannot be replayed later.
		sv, err := slack.NewSecretsVerifier(r.Header, signingSecret)
		if err == nil {
			sv.Write(body)
			err = sv.Ensure()
		}
		if err != nil {
			n.metrics.interaction.WithLabelValues("", "refused").Inc()
			n.opts.Log.Warn("slack interaction refused", "err", err, "remote", r.RemoteAddr)
			http.Error(w, "invalid or stale signature", http.StatusUnauthorized)
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			http.Error(w, "malformed form", http.StatusBadRequest)
			return
		}
		var cb slack.InteractionCallback
		if err := json.Unmarshal([]byte(form.Get("payload")), &cb); err != nil {
			http.Error(w, "malformed payload", http.StatusBadRequest)
			return
		}
		if cb.Type != slack.InteractionTypeBlockActions {
			w.WriteHeader(http.StatusOK)
			return
		}
		who := cb.User.Name
		if who == "" {
			who = cb.User.ID
		}
		operator := "slack:" + who
		for _, act := range cb.ActionCallback.BlockActions {
			if act.ActionID != ActionUnblock && act.ActionID != ActionExtend {
				continue
			}
			target, err := blockset.ParseTarget(act.Value)
			ip := act.Value
			if err != nil {
				http.Error(w, "the button names no address or network", http.StatusBadRequest)
				return
			}
			out := &buttonOutcome{channel: cb.Channel.ID, ts: cb.Container.MessageTs}
			if out.ts == "" {
				out.ts = cb.Message.Timestamp
			}
			at := detector.FormatTime(n.opts.Now())
			switch act.ActionID {
			case ActionUnblock:
				err = op.Unblock(r.Context(), target, operator, "Unblock button in Slack")
				out.status, out.unblocked = "Unblocked by <@"+cb.User.ID+"> at "+at, true
			case ActionExtend:
				var until time.Time
				until, err = op.Extend(r.Context(), target, ExtendBy, operator, "Extend 24 h button in Slack")
				out.until = until
				out.status = "Extended by 24 h by <@" + cb.User.ID + "> at " + at + ": blocked until " + detector.FormatTime(until)
			}
			if err != nil {
				n.metrics.interaction.WithLabelValues(act.ActionID, "failed").Inc()
				n.opts.Log.Error("slack button failed", "action", act.ActionID, "ip", ip, "operator", operator, "err", err)
				http.Error(w, "the action failed; try again or use the authguard CLI", http.StatusInternalServerError)
				return
			}
			n.metrics.interaction.WithLabelValues(act.ActionID, "done").Inc()
			n.opts.Log.Info("slack button", "action", act.ActionID, "ip", ip, "operator", operator)
			n.enqueue(job{button: out}, "button outcome not shown", "ip", ip)
		}
		w.WriteHeader(http.StatusOK)
	})
}

// showButton updates the pressed message with what was done (and, after
// an unblock, without the buttons) and replies in its thread.
func (n *Notifier) showButton(ctx context.Context, b *buttonOutcome) {
	if !n.tr.Updates() {
		return
	}
	n.mu.Lock()
	inc := n.byTS[b.channel+"/"+b.ts]
	var m Message
	var a responder.Action
	if inc != nil {
		if b.unblocked {
			inc.status = b.status
		}
		if !b.until.IsZero() {
			inc.action.Expires = b.until // the page's expiry follows the extension
		}
		p := n.pageOf(inc)
		p.Status = b.status
		m, a = Render(inc.action, p), inc.action
	}
	n.mu.Unlock()
	if inc != nil {
		n.updated(ctx, b.channel, b.ts, m, a)
	}
	// The reply goes out even if the page could not be updated: it says
	// who did what.
	n.replied(ctx, b.channel, b.ts, b.status, a)
}
