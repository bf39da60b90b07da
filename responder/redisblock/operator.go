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

// Manual blocks target (an address or a network) for ttl on an operator's
// word, as runbook SEC-010 §2.2's SET ip_block:<ip> 1 EX ttl does, and
// records who and why.
func (s *Store) Manual(ctx context.Context, target netip.Prefix, ttl time.Duration, operator, reason string, now time.Time) (incident string, err error) {
	expires := now.Add(ttl)
	ip := blockset.Target(target)
	r := record{Time: stamp(now), Action: "manual block", IP: ip, Rule: "manual", Operator: operator, Reason: reason,
		TTLSeconds: int64(ttl / time.Second), ExpiresAt: stamp(expires)}
	id := fmt.Sprintf("manual-%s-%d", ip, now.UnixNano())
	keys, args := s.blockArgs([]pendingBlock{{id, target, expires, 0, false, true, false, r}}, now)
	c := blockScript.Run(ctx, s.rdb, keys, args...)
	codes, err := scriptResults(c, 1)
	if err != nil {
		return "", fmt.Errorf("block %s: %w", ip, err)
	}
	return codes[0].incident, nil
}

// Unblock deletes target's runbook keys and metadata, records who did it
// and why, and tells gateways and the daemon. It reports whether there was
// a block or a tally to delete.
func (s *Store) Unblock(ctx context.Context, target netip.Prefix, operator, reason string, now time.Time) (bool, error) {
	ip := blockset.Target(target)
	ev, _ := json.Marshal(blockset.Event{Op: "unblock", IP: ip, By: operator})
	r := record{Time: stamp(now), Action: "unblock", IP: ip, Operator: operator, Reason: reason}
	args := []any{ip, s.keys.Channel, string(ev), s.opts.EvidenceMaxLen, r.json()}
	keys := []string{s.keys.Block + ip, s.keys.Fail + ip, s.keys.Index, s.keys.Meta + ip, s.keys.Evidence, s.keys.Changes}
	n, err := unblockScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("unblock %s: %w", ip, err)
	}
	return n > 0, nil
}

// Entry is one block as listed for operators.
type Entry struct {
	Target netip.Prefix // an address or a network
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
	for t, exp := range blocked {
		out = append(out, Entry{Target: t, Expires: exp})
	}
	sort.Slice(out, func(i, j int) bool { return TargetLess(out[i].Target, out[j].Target) })
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range out {
			p.HGetAll(ctx, s.keys.Meta+blockset.Target(e.Target))
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

// Tallies returns the targets that have a login_fail:<ip> key, found with SCAN.
func (s *Store) Tallies(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	node, err := s.ScanNode(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan tallies: %w", err)
	}
	iter := node.Scan(ctx, 0, s.keys.Fail+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if t, err := blockset.ParseTarget(strings.TrimPrefix(iter.Val(), s.keys.Fail)); err == nil {
			out = append(out, t)
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan tallies: %w", err)
	}
	return out, nil
}

// TargetLess orders targets by address, then a network before the
// narrower ones it holds.
func TargetLess(a, b netip.Prefix) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}

// SetEpoch writes the epoch key: Redis holds the daemon's state.
func (s *Store) SetEpoch(ctx context.Context, now time.Time) error {
	return s.rdb.Set(ctx, s.keys.Epoch, strconv.FormatInt(now.UnixNano(), 10), 0).Err()
}

// Unprotect lifts the protection of an account (deletes
// account_protect:<user>) and records who did it and why. It reports
// whether the account was protected.
func (s *Store) Unprotect(ctx context.Context, user, operator, reason string, now time.Time) (bool, error) {
	user = blockset.AccountKey(user)
	r := record{Time: stamp(now), Action: "unprotect", Group: "username " + user, Operator: operator, Reason: reason}
	pipe := s.rdb.TxPipeline()
	del := pipe.Del(ctx, s.keys.Protect+user)
	s.xadd(ctx, pipe, r.json())
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("unprotect %s: %w", user, err)
	}
	return del.Val() > 0, nil
}

// Protected lists the protected accounts.
func (s *Store) Protected(ctx context.Context) ([]blockset.Protection, error) {
	return blockset.NewAccounts(s.rdb, s.keys, 0).List(ctx)
}
