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
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
)

// Keys are the key names and prefixes; DefaultKeys are the runbook's.
type Keys struct {
	Block    string // prefix of ip_block:<ip>
	Fail     string // prefix of login_fail:<ip>
	Index    string // sorted set of blocked IPs by expiry
	Meta     string // prefix of the metadata hash
	Channel  string // pub/sub channel for block events
	Offenses string // prefix of the offence record (sorted set of block IDs)
	Evidence string // stream of evidence records
}

// DefaultKeys is the schema operators already use with redis-cli.
var DefaultKeys = Keys{
	Block:    "ip_block:",
	Fail:     "login_fail:",
	Index:    "authguard:blocks",
	Meta:     "authguard:block:",
	Channel:  "authguard:blocks",
	Offenses: "authguard:offenses:",
	Evidence: "authguard:evidence",
}

// WithPrefix puts prefix in front of every key and the channel, for sharing
// one Redis between environments.
func (k Keys) WithPrefix(prefix string) Keys {
	if prefix == "" {
		return k
	}
	return Keys{prefix + k.Block, prefix + k.Fail, prefix + k.Index, prefix + k.Meta, prefix + k.Channel, prefix + k.Offenses, prefix + k.Evidence}
}

// Store reads and writes blocks.
type Store struct {
	rdb    redis.UniversalClient
	keys   Keys
	opts   Options
	loaded atomic.Bool // blockScript is in the server's script cache
}

// Options tune a Store; the zero value is usable.
type Options struct {
	// EvidenceMaxLen bounds the evidence stream (approximately, default
	// 100,000 records).
	EvidenceMaxLen int64
	// RememberOffences is how long past blocks count for escalation and are
	// kept in authguard:offenses:<ip> (default 30 days).
	RememberOffences time.Duration
}

// New returns a store over rdb.
func New(rdb redis.UniversalClient, keys Keys, opts Options) *Store {
	if opts.EvidenceMaxLen <= 0 {
		opts.EvidenceMaxLen = 100_000
	}
	if opts.RememberOffences <= 0 {
		opts.RememberOffences = 30 * 24 * time.Hour
	}
	return &Store{rdb: rdb, keys: keys, opts: opts}
}

// Keys returns the store's key names.
func (s *Store) Keys() Keys { return s.keys }

// blockScript writes a block in one round trip, so that ip_block, the tally,
// the index, the metadata, the offence record, the evidence record and the
// event never disagree. It is idempotent per request ID. A renewal (a block
// re-fired by a failure during a standing block) is written only while
// login_fail:<ip> exists: if an operator deleted both keys the IP has a clean
// slate and the script returns 2. An incident is the span of one IP's
// standing block: its ID is the ID of the evidence record that opened it.
//
// KEYS: ip_block, login_fail, index, meta, offences, evidence.
// ARGV: request ID, ttl ms, count, renewal, expires ms, ip, channel, event,
// now ms, evidence max length, offence memory ms, manual, then the record's
// field/value pairs.
var blockScript = redis.NewScript(`
local meta = KEYS[4]
if redis.call('HGET', meta, 'request') == ARGV[1] then
  return {1, redis.call('HGET', meta, 'incident') or ''}
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return {2, ''}
end
local incident = redis.call('HGET', meta, 'incident')
local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'incident', incident or '', unpack(ARGV, 13))
if not incident then incident = id end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
if ARGV[12] ~= '1' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[9])
redis.call('DEL', meta)
redis.call('HSET', meta, 'request', ARGV[1], 'incident', incident, unpack(ARGV, 13))
redis.call('PEXPIRE', meta, ARGV[2])
if ARGV[4] ~= '1' and ARGV[12] ~= '1' then
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[9]) - tonumber(ARGV[11]))
  redis.call('PEXPIRE', KEYS[5], ARGV[11])
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {0, incident}
`)

// unblockScript deletes both runbook keys, the metadata and the index entry,
// records who did it and tells gateways, in one round trip.
//
// KEYS: ip_block, login_fail, index, meta, evidence.
// ARGV: ip, channel, event, evidence max length, then the record's pairs.
var unblockScript = redis.NewScript(`
local incident = redis.call('HGET', KEYS[4], 'incident') or ''
local existed = redis.call('EXISTS', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'incident', incident, unpack(ARGV, 5))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return existed
`)

// Event is what the store publishes on the channel.
type Event struct {
	Op string `json:"op"` // "block" or "unblock"
	IP string `json:"ip"`
	// ExpiresMS is the block's end in Unix milliseconds (blocks only).
	ExpiresMS int64 `json:"expires_ms,omitempty"`
}

// record is an evidence record's fields, in a stable order.
type record [][2]string

func (r record) args() []any {
	out := make([]any, 0, 2*len(r))
	for _, f := range r {
		out = append(out, f[0], f[1])
	}
	return out
}

func decisionRecord(req responder.Request, now, expires time.Time) record {
	d := req.Decision
	r := record{
		{"time", now.UTC().Format(time.RFC3339Nano)},
		{"action", req.Action},
		{"ip", d.Key},
		{"rule", d.Rule},
		{"trigger", d.Trigger()},
		{"severity", d.Severity},
		{"count", strconv.Itoa(d.Count)},
		{"rate_per_minute", strconv.FormatFloat(d.RatePerMinute, 'f', 1, 64)},
		{"first_seen", d.FirstSeen.UTC().Format(time.RFC3339Nano)},
		{"last_seen", d.LastSeen.UTC().Format(time.RFC3339Nano)},
		{"sample", truncate(d.Sample, 1024)},
	}
	if d.Kind == detector.KindBlock {
		r = append(r, [2]string{"ttl_seconds", strconv.FormatInt(int64(d.TTL/time.Second), 10)}, [2]string{"offence", strconv.Itoa(d.Offence)})
		if !expires.IsZero() {
			r = append(r, [2]string{"expires_at", expires.UTC().Format(time.RFC3339Nano)})
		}
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// Write carries out a batch of requests in one pipelined round trip: blocks
// through blockScript, everything else as evidence records. A block runs
// from its DecidedAt; one that would already have ended is only recorded.
func (s *Store) Write(ctx context.Context, reqs []responder.Request, now time.Time) ([]responder.Result, error) {
	// In a pipeline EVALSHA cannot fall back to EVAL, so the script is
	// loaded first: once, and again after a Redis restart emptied the cache.
	if !s.loaded.Load() {
		if err := blockScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load block script: %w", err)
		}
		s.loaded.Store(true)
	}
	results := make([]responder.Result, len(reqs))
	cmds := make([]redis.Cmder, len(reqs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, req := range reqs {
			d := req.Decision
			expires := req.DecidedAt.Add(d.TTL)
			if req.Do != responder.DoBlock || !d.IP.IsValid() {
				cmds[i] = s.xadd(ctx, p, decisionRecord(req, now, time.Time{}))
				continue
			}
			left := expires.Sub(now)
			if left <= 0 {
				results[i].Outcome = responder.Expired
				rec := decisionRecord(req, now, expires)
				rec[1][1] = "block expired before it could be written"
				cmds[i] = s.xadd(ctx, p, rec)
				continue
			}
			cmds[i] = s.runBlock(ctx, p, req.ID, d.IP, left, expires, d.Count, d.Renewal, false, now, decisionRecord(req, now, expires))
		}
		return nil
	})
	if err != nil {
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			s.loaded.Store(false)
		}
		return nil, fmt.Errorf("write %d decisions: %w", len(reqs), err)
	}
	for i, c := range cmds {
		if reqs[i].Do != responder.DoBlock || results[i].Outcome == responder.Expired {
			continue
		}
		code, incident, err := scriptResult(c)
		if err != nil {
			return nil, fmt.Errorf("write block %s: %w", reqs[i].Decision.Key, err)
		}
		results[i].Incident = incident
		if code == 2 {
			results[i].Outcome = responder.Cleared
		}
	}
	return results, nil
}

func (s *Store) xadd(ctx context.Context, p redis.Pipeliner, r record) redis.Cmder {
	return p.XAdd(ctx, &redis.XAddArgs{Stream: s.keys.Evidence, MaxLen: s.opts.EvidenceMaxLen, Approx: true, Values: append([]any{"incident", ""}, r.args()...)})
}

// runBlock runs (or, in a pipeline, queues) blockScript.
func (s *Store) runBlock(ctx context.Context, p redis.Scripter, id string, ip netip.Addr, left time.Duration, expires time.Time, count int, renewal, manual bool, now time.Time, r record) redis.Cmder {
	ev, _ := json.Marshal(Event{Op: "block", IP: ip.String(), ExpiresMS: expires.UnixMilli()})
	args := append([]any{id, max(left.Milliseconds(), 1), count, flag(renewal), expires.UnixMilli(), ip.String(), s.keys.Channel, string(ev),
		now.UnixMilli(), s.opts.EvidenceMaxLen, s.opts.RememberOffences.Milliseconds(), flag(manual)}, r.args()...)
	keys := []string{s.keys.Block + ip.String(), s.keys.Fail + ip.String(), s.keys.Index, s.keys.Meta + ip.String(), s.keys.Offenses + ip.String(), s.keys.Evidence}
	return blockScript.Run(ctx, p, keys, args...)
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func scriptResult(c redis.Cmder) (int64, string, error) {
	v, err := c.(*redis.Cmd).Slice()
	if err != nil {
		return 0, "", err
	}
	if len(v) != 2 {
		return 0, "", fmt.Errorf("unexpected script reply %v", v)
	}
	code, _ := v[0].(int64)
	incident, _ := v[1].(string)
	return code, incident, nil
}

// Manual blocks ip for ttl on an operator's word, as runbook SEC-010 §2.2's
// SET ip_block:<ip> 1 EX ttl does, and records who and why.
func (s *Store) Manual(ctx context.Context, ip netip.Addr, ttl time.Duration, operator, reason string, now time.Time) (incident string, err error) {
	expires := now.Add(ttl)
	r := record{
		{"time", now.UTC().Format(time.RFC3339Nano)}, {"action", "manual block"}, {"ip", ip.String()}, {"rule", "manual"},
		{"operator", operator}, {"reason", reason}, {"ttl_seconds", strconv.FormatInt(int64(ttl/time.Second), 10)},
		{"expires_at", expires.UTC().Format(time.RFC3339Nano)},
	}
	id := fmt.Sprintf("manual-%s-%d", ip, now.UnixNano())
	c := s.runBlock(ctx, s.rdb, id, ip, ttl, expires, 0, false, true, now, r)
	_, incident, err = scriptResult(c)
	if err != nil {
		return "", fmt.Errorf("block %s: %w", ip, err)
	}
	return incident, nil
}

// Unblock deletes both runbook keys and the metadata, records who did it and
// why, and tells gateways and the daemon. It reports whether there was a
// block or a tally to delete.
func (s *Store) Unblock(ctx context.Context, ip netip.Addr, operator, reason string, now time.Time) (bool, error) {
	ev, _ := json.Marshal(Event{Op: "unblock", IP: ip.String()})
	r := record{{"time", now.UTC().Format(time.RFC3339Nano)}, {"action", "unblock"}, {"ip", ip.String()}, {"operator", operator}, {"reason", reason}}
	args := append([]any{ip.String(), s.keys.Channel, string(ev), s.opts.EvidenceMaxLen}, r.args()...)
	keys := []string{s.keys.Block + ip.String(), s.keys.Fail + ip.String(), s.keys.Index, s.keys.Meta + ip.String(), s.keys.Evidence}
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
	iter := s.rdb.Scan(ctx, 0, s.keys.Fail+"*", 1000).Iterator()
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

// Record is one evidence record.
type Record struct {
	ID     string
	Fields map[string]string
}

// Incident returns the evidence records of one incident, oldest first.
func (s *Store) Incident(ctx context.Context, id string) ([]Record, error) {
	msgs, err := s.rdb.XRange(ctx, s.keys.Evidence, id, "+").Result()
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	var out []Record
	for _, m := range msgs {
		fields := map[string]string{}
		for k, v := range m.Values {
			fields[k] = fmt.Sprint(v)
		}
		if m.ID == id || fields["incident"] == id {
			out = append(out, Record{ID: m.ID, Fields: fields})
		}
	}
	return out, nil
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
