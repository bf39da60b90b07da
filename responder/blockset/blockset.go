// Package blockset is the set of blocked addresses as Redis holds it, in
// the runbook SEC-010 schema (ip_block:<ip> with a TTL), and the events
// that announce changes to it: the key names, reading the set and
// following it. It is what the gateway needs to enforce blocks; the
// daemon's writer (redisblock) builds on it. It links nothing of the
// detector or the responder.
package blockset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keys are the key names and prefixes; DefaultKeys are the runbook's.
type Keys struct {
	Block    string // prefix of ip_block:<ip>
	Fail     string // prefix of login_fail:<ip>
	Index    string // sorted set of blocked IPs by expiry
	Meta     string // prefix of the metadata hash
	Channel  string // pub/sub channel for block events
	Offenses string // prefix of the IP's offence number (expires after the escalation memory)
	Evidence string // stream of evidence records
	// Epoch is set once by the daemon and gone only when Redis lost its
	// data (a restart without persistence, a failover to an empty
	// replica): the daemon then writes its blocks again, and gateways keep
	// what they know until it has.
	Epoch string
	// Checkpoint heads the daemon's checkpoint of its detector windows,
	// written in parts under Checkpoint:<generation>:<n>.
	Checkpoint string
	// Changes is a stream of every block and unblock the daemon and the
	// CLI write, each entry's field e the event also published on Channel:
	// gateways follow it, and after a gap read on from where they were.
	Changes string
	// Protect is the prefix of account_protect:<username>: logins to the
	// account are refused except from its good addresses.
	Protect string
	// Good is the prefix of an account's good addresses: a sorted set of
	// the addresses that logged into it, scored by when.
	Good string
}

// DefaultKeys is the schema operators already use with redis-cli.
var DefaultKeys = Keys{
	Block:      "ip_block:",
	Fail:       "login_fail:",
	Index:      "authguard:blocks",
	Meta:       "authguard:block:",
	Channel:    "authguard:blocks",
	Offenses:   "authguard:offenses:",
	Evidence:   "authguard:evidence",
	Epoch:      "authguard:epoch",
	Checkpoint: "authguard:checkpoint",
	Changes:    "authguard:changes",
	Protect:    "account_protect:",
	Good:       "authguard:account_good:",
}

// WithPrefix puts prefix in front of every key and the channel, for sharing
// one Redis between environments.
func (k Keys) WithPrefix(prefix string) Keys {
	if prefix == "" {
		return k
	}
	return Keys{prefix + k.Block, prefix + k.Fail, prefix + k.Index, prefix + k.Meta, prefix + k.Channel, prefix + k.Offenses, prefix + k.Evidence, prefix + k.Epoch, prefix + k.Checkpoint, prefix + k.Changes,
		prefix + k.Protect, prefix + k.Good}
}

// Event is what the store publishes on the channel.
type Event struct {
	Op string `json:"op"` // "block" or "unblock"
	IP string `json:"ip"` // the target: an address or a network (Target)
	// ExpiresMS is the block's end in Unix milliseconds (blocks only).
	ExpiresMS int64 `json:"expires_ms,omitempty"`
	// AtMS is when the block was written, in Unix milliseconds (blocks the
	// daemon writes), for gateways to measure how soon they enforce it.
	AtMS int64 `json:"at_ms,omitempty"`
	// By names the operator of an unblock.
	By string `json:"by,omitempty"`
}

// Reader reads and follows the blocks.
type Reader struct {
	rdb  redis.UniversalClient
	keys Keys
}

// NewReader returns a reader over rdb.
func NewReader(rdb redis.UniversalClient, keys Keys) *Reader {
	return &Reader{rdb: rdb, keys: keys}
}

// BlockedNow looks one address up: whether ip_block:<ip> exists (networks
// are found by Scan) and when it
// expires (the zero time when it has no TTL). One round trip.
func (s *Reader) BlockedNow(ctx context.Context, ip netip.Addr) (bool, time.Time, error) {
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

// ScanNode is where SCAN finds the store's keys. Under Redis Cluster a
// keyless command goes to any node, but the keys' hash tag keeps them all
// in one slot, on the master that owns it.
func (s *Reader) ScanNode(ctx context.Context) (redis.Cmdable, error) {
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		return c.MasterForKey(ctx, s.keys.Block)
	}
	return s.rdb, nil
}

// Blocked returns every target (address or network) with an ip_block key
// and its expiry, found with SCAN (never KEYS), so blocks set by hand with
// redis-cli are included.
func (s *Reader) Blocked(ctx context.Context) (map[netip.Prefix]time.Time, error) {
	out := map[netip.Prefix]time.Time{}
	err := s.Scan(ctx, nil, func(t netip.Prefix, exp time.Time, _ bool) { out[t] = exp })
	return out, err
}

// Scan calls fn for every target with an ip_block key, found with SCAN
// (never KEYS), with its expiry (zero: no TTL, blocked until deleted). A
// key that names no address or canonical network is skipped. The TTL is
// read for every key unless skip says the caller knows it already; fn is
// then told so (ttl false) and given a zero expiry.
func (s *Reader) Scan(ctx context.Context, skip func(netip.Prefix) bool, fn func(t netip.Prefix, exp time.Time, ttl bool)) error {
	node, err := s.ScanNode(ctx)
	if err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	iter := node.Scan(ctx, 0, s.keys.Block+"*", 1000).Iterator()
	type found struct {
		key    string
		target netip.Prefix
	}
	var batch []found
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		now := time.Now()
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, f := range batch {
				p.PTTL(ctx, f.key)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i, c := range cmds {
			ttl := c.(*redis.DurationCmd).Val()
			if ttl == -2 {
				continue // expired between SCAN and PTTL
			}
			exp := time.Time{} // no TTL: blocked until deleted
			if ttl > 0 {
				exp = now.Add(ttl)
			}
			fn(batch[i].target, exp, true)
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		t, err := ParseTarget(strings.TrimPrefix(iter.Val(), s.keys.Block))
		if err != nil {
			continue // not a target
		}
		if skip != nil && skip(t) {
			fn(t, time.Time{}, false)
			continue
		}
		batch = append(batch, found{iter.Val(), t})
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return fmt.Errorf("list blocks: %w", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	return nil
}

// Change is one entry of the changes stream.
type Change struct {
	ID string
	Event
}

// LastChange is the ID of the newest entry of the changes stream ("0-0"
// when it is empty): where to follow it from after a full read.
func (s *Reader) LastChange(ctx context.Context) (string, error) {
	xs, err := s.rdb.XRevRangeN(ctx, s.keys.Changes, "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("read changes: %w", err)
	}
	if len(xs) == 0 {
		return "0-0", nil
	}
	return xs[0].ID, nil
}

// Missed reports whether entries after the one with ID after were trimmed
// from the changes stream (it holds a bounded number): the follower that
// was there has missed some and must read the blocks in full.
func (s *Reader) Missed(ctx context.Context, after string) (bool, error) {
	xs, err := s.rdb.XRangeN(ctx, s.keys.Changes, "-", "+", 1).Result()
	if err != nil {
		return false, fmt.Errorf("read changes: %w", err)
	}
	return len(xs) == 1 && streamIDLess(after, xs[0].ID) && !nextID(after, xs[0].ID), nil
}

// Changes returns up to count entries after the one with ID after, waiting
// up to wait for the first; none when the wait ends.
func (s *Reader) Changes(ctx context.Context, after string, count int64, wait time.Duration) ([]Change, error) {
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{s.keys.Changes, after}, Count: count, Block: wait}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	var out []Change
	for _, st := range res {
		for _, m := range st.Messages {
			c := Change{ID: m.ID}
			if v, ok := m.Values["e"].(string); ok {
				json.Unmarshal([]byte(v), &c.Event) // a malformed entry is an empty event, skipped by its reader
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// streamIDLess compares two stream IDs (ms-seq).
func streamIDLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

// nextID reports whether b is the entry right after a in its millisecond
// (nothing can lie between them).
func nextID(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am == bm && bs == as+1
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	n, _ := strconv.ParseUint(seq, 10, 64)
	return m, n
}

// HasEpoch says the daemon's epoch key is there: false after Redis lost
// its data, until the daemon has written its blocks again.
func (s *Reader) HasEpoch(ctx context.Context) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.keys.Epoch).Result()
	return n == 1, err
}

// Subscribe calls fn for every block event until ctx ends. onSubscribed is
// called each time the subscription is (re)established, so that callers can
// reconcile what they may have missed.
func (s *Reader) Subscribe(ctx context.Context, fn func(Event), onSubscribed func()) error {
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
