package redisblock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder/blockset"
)

// Manual blocks ip for ttl on an operator's word, as runbook SEC-010 §2.2's
// SET ip_block:<ip> 1 EX ttl does, and records who and why.
func (s *Store) Manual(ctx context.Context, ip netip.Addr, ttl time.Duration, operator, reason string, now time.Time) (incident string, err error) {
	expires := now.Add(ttl)
	r := record{Time: stamp(now), Action: "manual block", IP: ip.String(), Rule: "manual", Operator: operator, Reason: reason,
		TTLSeconds: int64(ttl / time.Second), ExpiresAt: stamp(expires)}
	id := fmt.Sprintf("manual-%s-%d", ip, now.UnixNano())
	keys, args := s.blockArgs([]pendingBlock{{id, ip, expires, 0, false, true, false, r}}, now)
	c := blockScript.Run(ctx, s.rdb, keys, args...)
	codes, err := scriptResults(c, 1)
	if err != nil {
		return "", fmt.Errorf("block %s: %w", ip, err)
	}
	return codes[0].incident, nil
}

// Unblock deletes both runbook keys and the metadata, records who did it and
// why, and tells gateways and the daemon. It reports whether there was a
// block or a tally to delete.
func (s *Store) Unblock(ctx context.Context, ip netip.Addr, operator, reason string, now time.Time) (bool, error) {
	ev, _ := json.Marshal(blockset.Event{Op: "unblock", IP: ip.String(), By: operator})
	r := record{Time: stamp(now), Action: "unblock", IP: ip.String(), Operator: operator, Reason: reason}
	args := []any{ip.String(), s.keys.Channel, string(ev), s.opts.EvidenceMaxLen, r.json()}
	keys := []string{s.keys.Block + ip.String(), s.keys.Fail + ip.String(), s.keys.Index, s.keys.Meta + ip.String(), s.keys.Evidence, s.keys.Changes}
	n, err := unblockScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("unblock %s: %w", ip, err)
	}
	return n > 0, nil
}

// Entry is one block as listed for operators.
type Entry struct {
	IP netip.Addr
	// Expires is zero for a block without a TTL (set by hand).
	Expires time.Time
	// Meta is the metadata hash; empty for blocks set by hand.
	Meta map[string]string
}

// List returns every block, including blocks set by hand with redis-cli,
// found with SCAN (never KEYS), with their metadata.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	blocked, err := s.Blocked(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(blocked))
	for ip, exp := range blocked {
		out = append(out, Entry{IP: ip, Expires: exp})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range out {
			p.HGetAll(ctx, s.keys.Meta+e.IP.String())
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	for i, c := range cmds {
		out[i].Meta = c.(*redis.MapStringStringCmd).Val()
	}
	return out, nil
}

// Tallies returns the IPs that have a login_fail:<ip> key, found with SCAN.
func (s *Store) Tallies(ctx context.Context) ([]netip.Addr, error) {
	var out []netip.Addr
	node, err := s.ScanNode(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan tallies: %w", err)
	}
	iter := node.Scan(ctx, 0, s.keys.Fail+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if ip, err := netip.ParseAddr(strings.TrimPrefix(iter.Val(), s.keys.Fail)); err == nil {
			out = append(out, ip)
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan tallies: %w", err)
	}
	return out, nil
}

// SetEpoch writes the epoch key: Redis holds the daemon's state.
func (s *Store) SetEpoch(ctx context.Context, now time.Time) error {
	return s.rdb.Set(ctx, s.keys.Epoch, strconv.FormatInt(now.UnixNano(), 10), 0).Err()
}
