package redisblock

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/authguard/authguard/responder/blockset"
)

// SaveMessage records the Slack message of target's incident, so that a
// restarted daemon updates that message instead of posting another. It
// does nothing when target's block belongs to another incident or has
// ended.
func (s *Store) SaveMessage(ctx context.Context, target netip.Prefix, incident, channel, ts string) error {
	ip := blockset.Target(target)
	if err := saveMessageScript.Run(ctx, s.rdb, []string{s.keys.Meta + ip}, incident, channel, ts).Err(); err != nil {
		return fmt.Errorf("save the page of %s: %w", ip, err)
	}
	return nil
}

// LoadMessage returns the Slack message recorded for target's incident,
// or ""s when there is none.
func (s *Store) LoadMessage(ctx context.Context, target netip.Prefix, incident string) (channel, ts string, err error) {
	ip := blockset.Target(target)
	v, err := s.rdb.HMGet(ctx, s.keys.Meta+ip, "incident", "slack_channel", "slack_ts").Result()
	if err != nil {
		return "", "", fmt.Errorf("load the page of %s: %w", ip, err)
	}
	if inc, _ := v[0].(string); inc != incident {
		return "", "", nil
	}
	channel, _ = v[1].(string)
	ts, _ = v[2].(string)
	return channel, ts, nil
}
