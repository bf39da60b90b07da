package redisblock

import (
	"context"
	"fmt"
	"net/netip"
)

// SaveMessage records the Slack message of ip's incident, so that a
// restarted daemon updates that message instead of posting another. It
// does nothing when ip's block belongs to another incident or has ended.
func (s *Store) SaveMessage(ctx context.Context, ip netip.Addr, incident, channel, ts string) error {
	if err := saveMessageScript.Run(ctx, s.rdb, []string{s.keys.Meta + ip.String()}, incident, channel, ts).Err(); err != nil {
		return fmt.Errorf("save the page of %s: %w", ip, err)
	}
	return nil
}

// LoadMessage returns the Slack message recorded for ip's incident, or ""s
// when there is none.
func (s *Store) LoadMessage(ctx context.Context, ip netip.Addr, incident string) (channel, ts string, err error) {
	v, err := s.rdb.HMGet(ctx, s.keys.Meta+ip.String(), "incident", "slack_channel", "slack_ts").Result()
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
