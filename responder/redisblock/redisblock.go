// Package redisblock keeps IP blocks in Redis in the runbook SEC-010 schema:
// ip_block:<ip> = 1 with a TTL, login_fail:<ip> holding the failure tally
// and expiring with the block, plus an index, a metadata hash and a pub/sub
// event for gateways. The daemon, the CLI and the gateway share it.
package redisblock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/detector"
)

// Keys are the key names and prefixes; DefaultKeys are the runbook's.
type Keys struct {
	Block    string // prefix of ip_block:<ip>
	Fail     string // prefix of login_fail:<ip>
	Index    string // sorted set of blocked IPs by expiry
	Meta     string // prefix of the metadata hash
	Channel  string // pub/sub channel for block events
	Offenses string // prefix of the offence counter
}

// DefaultKeys is the schema operators already use with redis-cli.
var DefaultKeys = Keys{
	Block:    "ip_block:",
	Fail:     "login_fail:",
	Index:    "authguard:blocks",
	Meta:     "authguard:block:",
	Channel:  "authguard:blocks",
	Offenses: "authguard:offenses:",
}

// WithPrefix puts prefix in front of every key and the channel, for sharing
// one Redis between environments.
func (k Keys) WithPrefix(prefix string) Keys {
	if prefix == "" {
		return k
	}
	return Keys{prefix + k.Block, prefix + k.Fail, prefix + k.Index, prefix + k.Meta, prefix + k.Channel, prefix + k.Offenses}
}

// Store reads and writes blocks.
type Store struct {
	rdb  redis.UniversalClient
	keys Keys
}

// New returns a store over rdb.
func New(rdb redis.UniversalClient, keys Keys) *Store {
	return &Store{rdb: rdb, keys: keys}
}

// Keys returns the store's key names.
func (s *Store) Keys() Keys { return s.keys }

// blockScript writes a block in one round trip, so that ip_block, the tally,
// the index, the metadata and the event never disagree. A renewal (a block
// re-fired by a failure during a standing block) is written only while
// login_fail:<ip> exists: if an operator deleted both keys the IP has a clean
// slate and the script returns 0.
var blockScript = redis.NewScript(`
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[8])
return 1
`)

// Event is what the store publishes on the channel.
type Event struct {
	Op string `json:"op"` // "block" or "unblock"
	IP string `json:"ip"`
	// ExpiresMS is the block's end in Unix milliseconds (blocks only).
	ExpiresMS int64 `json:"expires_ms,omitempty"`
}

// Block writes the block a decision asks for. The TTL runs from now, as it
// did when the runbook's gateway set the key itself. It returns false, and
// writes nothing, for a renewal whose login_fail:<ip> is gone: an operator
// unblocked the IP, and the detector must give it a clean slate.
func (s *Store) Block(ctx context.Context, d detector.Decision, now time.Time) (bool, error) {
	if d.Kind != detector.KindBlock || !d.IP.IsValid() || d.TTL <= 0 {
		return false, fmt.Errorf("block %s: decision %q is not a block", d.Key, d.Kind)
	}
	ip := d.IP.String()
	expires := now.Add(d.TTL)
	ttlMS := max(d.TTL.Milliseconds(), 1)
	ev, _ := json.Marshal(Event{Op: "block", IP: ip, ExpiresMS: expires.UnixMilli()})
	renewal := "0"
	if d.Renewal {
		renewal = "1"
	}
	args := []any{ttlMS, d.Count, renewal, expires.UnixMilli(), ip, s.keys.Channel, now.UnixMilli(), string(ev),
		"rule", d.Rule, "key", d.Key, "severity", d.Severity, "count", d.Count,
		"first_seen", d.FirstSeen.UTC().Format(time.RFC3339Nano), "last_seen", d.LastSeen.UTC().Format(time.RFC3339Nano),
		"blocked_at", now.UTC().Format(time.RFC3339Nano), "expires_at", expires.UTC().Format(time.RFC3339Nano),
		"reason", fmt.Sprintf("%d failed logins in the rule's window", d.Count)}
	keys := []string{s.keys.Block + ip, s.keys.Fail + ip, s.keys.Index, s.keys.Meta + ip}
	n, err := blockScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("block %s: %w", ip, err)
	}
	return n == 1, nil
}

// Unblock deletes both runbook keys and the metadata, and tells gateways.
func (s *Store) Unblock(ctx context.Context, ip netip.Addr) error {
	ev, _ := json.Marshal(Event{Op: "unblock", IP: ip.String()})
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.keys.Block+ip.String(), s.keys.Fail+ip.String(), s.keys.Meta+ip.String())
		p.ZRem(ctx, s.keys.Index, ip.String())
		p.Publish(ctx, s.keys.Channel, string(ev))
		return nil
	})
	if err != nil {
		return fmt.Errorf("unblock %s: %w", ip, err)
	}
	return nil
}

// BlockedNow looks one IP up: whether ip_block:<ip> exists and when it
// expires (the zero time when it has no TTL). One round trip.
func (s *Store) BlockedNow(ctx context.Context, ip netip.Addr) (bool, time.Time, error) {
	ttl, err := s.rdb.PTTL(ctx, s.keys.Block+ip.String()).Result()
	if err != nil {
		return false, time.Time{}, fmt.Errorf("look up %s: %w", ip, err)
	}
	switch {
	case ttl == -2: // no such key
		return false, time.Time{}, nil
	case ttl < 0: // no expiry
		return true, time.Time{}, nil
	}
	return true, time.Now().Add(ttl), nil
}

// Blocked returns every IP with an ip_block key and its expiry, found with
// SCAN (never KEYS), so blocks set by hand with redis-cli are included.
func (s *Store) Blocked(ctx context.Context) (map[netip.Addr]time.Time, error) {
	out := map[netip.Addr]time.Time{}
	now := time.Now()
	iter := s.rdb.Scan(ctx, 0, s.keys.Block+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.PTTL(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, c := range cmds {
			ttl := c.(*redis.DurationCmd).Val()
			ip, err := netip.ParseAddr(strings.TrimPrefix(batch[i], s.keys.Block))
			if err != nil || ttl == -2 {
				continue // not an address, or expired between SCAN and PTTL
			}
			exp := time.Time{} // no TTL: blocked until deleted
			if ttl > 0 {
				exp = now.Add(ttl)
			}
			out[ip.Unmap()] = exp
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("list blocks: %w", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	return out, nil
}

// Subscribe calls fn for every block event until ctx ends. onSubscribed is
// called each time the subscription is (re)established, so that callers can
// reconcile what they may have missed.
func (s *Store) Subscribe(ctx context.Context, fn func(Event), onSubscribed func()) error {
	sub := s.rdb.Subscribe(ctx, s.keys.Channel)
	defer sub.Close()
	for {
		msg, err := sub.Receive(ctx)
		if err != nil {
			// go-redis reconnects on the next Receive; wait a little so an
			// outage does not spin.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && onSubscribed != nil {
				onSubscribed()
			}
		case *redis.Message:
			var ev Event
			if json.Unmarshal([]byte(m.Payload), &ev) == nil {
				fn(ev)
			}
		}
	}
}

// ParseURL builds a client from a redis:// or rediss:// URL.
func ParseURL(raw string) (redis.UniversalClient, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	return redis.NewClient(opt), nil
}
