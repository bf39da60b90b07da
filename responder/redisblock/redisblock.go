// Package redisblock writes IP blocks to Redis in the runbook SEC-010
// schema: ip_block:<ip> = 1 with a TTL, login_fail:<ip> holding the failure
// tally and expiring with the block, plus an index, a metadata hash, the
// evidence stream and a pub/sub event for gateways (see blockset, which
// reads them). The daemon and the operator CLI use it.
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
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/clip"
)

// Store reads and writes blocks; reading the set of blocked addresses and
// following it is blockset's, which Store embeds.
type Store struct {
	*blockset.Reader
	rdb    redis.UniversalClient
	keys   blockset.Keys
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
func New(rdb redis.UniversalClient, keys blockset.Keys, opts Options) *Store {
	if opts.EvidenceMaxLen <= 0 {
		opts.EvidenceMaxLen = 100_000
	}
	if opts.RememberOffences <= 0 {
		opts.RememberOffences = 30 * 24 * time.Hour
	}
	return &Store{Reader: blockset.NewReader(rdb, keys), rdb: rdb, keys: keys, opts: opts}
}

// blockScript writes blocks, each whole, so that ip_block, the tally, the
// index, the metadata, the offence record, the evidence record and the
// event never disagree. One call writes a run of blocks: a script call has a
// fixed cost that dominates a single block's. It is idempotent per request
// ID. A renewal (a block re-fired by a failure during a standing block) is
// written only while login_fail:<ip> exists: if an operator deleted both
// keys the IP has a clean slate and its code is 2. An incident is the span
// of one IP's standing block: its ID is the ID of the evidence record that
// opened it. The evidence record travels as one JSON field.
//
// KEYS: index, evidence, then per block: ip_block, login_fail, meta, offences.
// ARGV: channel, now ms, evidence max length, offence memory ms, then per
// block: request ID, ttl ms, count, mode (b block, r renewal, m manual),
// expires ms, ip, record, rule, severity, first seen, last seen, expires at,
// reason, offence number. The event is made here from the IP (which has
// no zone, so nothing to escape) and the expiry: every argument costs Redis
// a copy in and out of Lua.
// Returns code and incident per block: 0 written, 1 already written, 2 cleared.
var blockScript = redis.NewScript(`
local out = {}
local index = {}
local n = (#KEYS - 2) / 4
for j = 0, n - 1 do
  local kb, kf, meta, ko = KEYS[3 + 4*j], KEYS[4 + 4*j], KEYS[5 + 4*j], KEYS[6 + 4*j]
  local a = 4 + 14*j
  local id, ttl, count, mode, expires, ip = ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], ARGV[a+5], ARGV[a+6]
  local cur = redis.call('HMGET', meta, 'request', 'incident')
  if cur[1] == id then
    out[#out+1] = 1; out[#out+1] = cur[2] or ''
  elseif mode == 'r' and redis.call('EXISTS', kf) == 0 then
    out[#out+1] = 2; out[#out+1] = ''
  else
    local incident = cur[2]
    local eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'incident', incident or '', 'record', ARGV[a+7])
    if not incident then incident = eid end
    redis.call('SET', kb, '1', 'PX', ttl)
    if mode ~= 'm' then
      redis.call('SET', kf, count, 'PX', ttl)
    end
    index[#index+1] = expires; index[#index+1] = ip
    redis.call('HSET', meta, 'request', id, 'incident', incident, 'rule', ARGV[a+8], 'severity', ARGV[a+9], 'count', count,
      'first_seen', ARGV[a+10], 'last_seen', ARGV[a+11], 'expires_at', ARGV[a+12], 'reason', ARGV[a+13])
    redis.call('PEXPIRE', meta, ttl)
    if mode == 'b' then
      redis.call('SET', ko, ARGV[a+14], 'PX', ARGV[4])
    end
    redis.call('PUBLISH', ARGV[1], '{"op":"block","ip":"' .. ip .. '","expires_ms":' .. expires .. '}')
    out[#out+1] = 0; out[#out+1] = incident
  end
end
if #index > 0 then
  redis.call('ZADD', KEYS[1], unpack(index))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return out
`)

// unblockScript deletes both runbook keys, the metadata and the index entry,
// records who did it and tells gateways, in one round trip.
//
// KEYS: ip_block, login_fail, index, meta, evidence.
// ARGV: ip, channel, event, evidence max length, record (JSON).
var unblockScript = redis.NewScript(`
local incident = redis.call('HGET', KEYS[4], 'incident') or ''
local existed = redis.call('EXISTS', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'incident', incident, 'record', ARGV[5])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return existed
`)

// record is one evidence record: what was done, to whom, why, by whom.
// Stored as one JSON field; the names are the report's vocabulary.
type record struct {
	Time       string `json:"time"`
	Action     string `json:"action"`
	IP         string `json:"ip"`
	Rule       string `json:"rule,omitempty"`
	Trigger    string `json:"trigger,omitempty"`
	Severity   string `json:"severity,omitempty"`
	Count      int    `json:"count,omitempty"`
	Rate       string `json:"rate_per_minute,omitempty"`
	FirstSeen  string `json:"first_seen,omitempty"`
	LastSeen   string `json:"last_seen,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	Offence    int    `json:"offence,omitempty"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	Operator   string `json:"operator,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Sample     string `json:"sample,omitempty"`
}

// json renders the record as a JSON object; by hand, as it is written for
// every block on the hot path. Field names and omissions follow the struct
// tags, which readers use.
func (r *record) json() string {
	b := make([]byte, 0, 384+len(r.Sample))
	b = append(b, '{')
	str := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = appendJSONString(b, v)
	}
	num := func(name string, v int64) {
		if v == 0 {
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, v, 10)
	}
	str("time", r.Time, true)
	str("action", r.Action, true)
	str("ip", r.IP, true)
	str("rule", r.Rule, false)
	str("trigger", r.Trigger, false)
	str("severity", r.Severity, false)
	num("count", int64(r.Count))
	str("rate_per_minute", r.Rate, false)
	str("first_seen", r.FirstSeen, false)
	str("last_seen", r.LastSeen, false)
	num("ttl_seconds", r.TTLSeconds)
	num("offence", int64(r.Offence))
	str("expires_at", r.ExpiresAt, false)
	str("operator", r.Operator, false)
	str("reason", r.Reason, false)
	str("sample", r.Sample, false)
	b = append(b, '}')
	return string(b)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, each invalid UTF-8 byte replaced by U+FFFD (as
// encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		i++
	}
	return append(b, '"')
}

// why is the metadata's one-line reason: the operator's or the rule's trigger.
func (r *record) why() string {
	if r.Reason != "" {
		return r.Reason
	}
	return r.Trigger
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func decisionRecord(req responder.Request, now, expires time.Time) record {
	d := req.Decision
	r := record{Time: stamp(now), Action: req.Action, IP: d.Key, Rule: d.Rule, Trigger: d.Trigger(), Severity: d.Severity,
		Count: d.Count, Rate: strconv.FormatFloat(d.RatePerMinute, 'f', 1, 64), FirstSeen: stamp(d.FirstSeen), LastSeen: stamp(d.LastSeen),
		Sample: clip.String(d.Sample, 1024)}
	if d.Kind == detector.KindBlock {
		r.TTLSeconds, r.Offence = int64(d.TTL/time.Second), d.Offence
		if !expires.IsZero() {
			r.ExpiresAt = stamp(expires)
		}
	}
	return r
}

// maxRun bounds the blocks one script call writes: long enough that a
// call's fixed cost is small against its work, short enough that other
// clients wait little (about 2 ms of Redis time), and a batch is several
// calls, so that Redis runs the first while the rest is being sent.
const maxRun = 128

// pendingBlock is one block for blockScript.
type pendingBlock struct {
	id              string
	ip              netip.Addr
	left            time.Duration
	expires         time.Time
	count           int
	renewal, manual bool
	record          record
}

// Batch is a batch of requests encoded for Send: one pipeline of evidence
// records and runs of up to maxRun blocks (one script call each), in
// request order. Redis starts on the first run while the rest is still
// being sent.
type Batch struct {
	pipe    redis.Pipeliner
	runs    []run
	results []responder.Result
}

type run struct {
	cmd   redis.Cmder
	index []int // request index of each block in the run
}

// Prepare encodes reqs for Send without any I/O, so the responder prepares
// the next batch while Redis runs the current one. A block runs from its
// DecidedAt: its TTL is what is left of it at now, and one that would
// already have ended is only recorded.
func (s *Store) Prepare(reqs []responder.Request, now time.Time) responder.Batch {
	ctx := context.Background() // queued commands carry none; Send's is used
	b := &Batch{pipe: s.rdb.Pipeline(), results: make([]responder.Result, len(reqs))}
	var blocks []pendingBlock
	var index []int
	flush := func() {
		if len(blocks) > 0 {
			b.runs = append(b.runs, run{s.runBlocks(ctx, b.pipe, blocks, now), index})
			blocks, index = nil, nil
		}
	}
	for i, req := range reqs {
		d := req.Decision
		expires := req.DecidedAt.Add(d.TTL)
		left := expires.Sub(now)
		switch {
		case req.Do != responder.DoBlock || !d.IP.IsValid():
			flush()
			rec := decisionRecord(req, now, time.Time{})
			s.xadd(ctx, b.pipe, &rec)
		case left <= 0:
			flush()
			b.results[i].Outcome = responder.Expired
			rec := decisionRecord(req, now, expires)
			rec.Action = "block expired before it could be written"
			s.xadd(ctx, b.pipe, &rec)
		default:
			blocks = append(blocks, pendingBlock{req.ID, d.IP, left, expires, d.Count, d.Renewal, false, decisionRecord(req, now, expires)})
			index = append(index, i)
			if len(blocks) == maxRun {
				flush()
			}
		}
	}
	flush()
	return b
}

// Send writes a prepared batch in one pipelined round trip and says what
// became of each request. A batch is sent once: after an error, prepare
// it again.
func (s *Store) Send(ctx context.Context, batch responder.Batch) ([]responder.Result, error) {
	b := batch.(*Batch)
	// In a pipeline EVALSHA cannot fall back to EVAL, so the script is
	// loaded first: once, and again after a Redis restart emptied the cache.
	if !s.loaded.Load() {
		if err := blockScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load block script: %w", err)
		}
		s.loaded.Store(true)
	}
	if _, err := b.pipe.Exec(ctx); err != nil {
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			s.loaded.Store(false)
		}
		return nil, fmt.Errorf("write %d decisions: %w", len(b.results), err)
	}
	for _, r := range b.runs {
		codes, err := scriptResults(r.cmd, len(r.index))
		if err != nil {
			return nil, fmt.Errorf("write blocks: %w", err)
		}
		for k, i := range r.index {
			b.results[i].Incident = codes[k].incident
			switch codes[k].code {
			case 1:
				b.results[i].Outcome = responder.AlreadyWritten
			case 2:
				b.results[i].Outcome = responder.Cleared
			}
		}
	}
	return b.results, nil
}

// Write prepares and sends a batch of requests.
func (s *Store) Write(ctx context.Context, reqs []responder.Request, now time.Time) ([]responder.Result, error) {
	return s.Send(ctx, s.Prepare(reqs, now))
}

func (s *Store) xadd(ctx context.Context, p redis.Pipeliner, r *record) redis.Cmder {
	return p.XAdd(ctx, &redis.XAddArgs{Stream: s.keys.Evidence, MaxLen: s.opts.EvidenceMaxLen, Approx: true, Values: []any{"incident", "", "record", r.json()}})
}

// runBlocks runs (or, in a pipeline, queues) blockScript for a run of blocks.
func (s *Store) runBlocks(ctx context.Context, p redis.Scripter, bs []pendingBlock, now time.Time) redis.Cmder {
	keys := make([]string, 0, 2+4*len(bs))
	keys = append(keys, s.keys.Index, s.keys.Evidence)
	args := make([]any, 0, 4+14*len(bs))
	args = append(args, s.keys.Channel, now.UnixMilli(), s.opts.EvidenceMaxLen, s.opts.RememberOffences.Milliseconds())
	for _, b := range bs {
		ip := b.ip.String()
		keys = append(keys, s.keys.Block+ip, s.keys.Fail+ip, s.keys.Meta+ip, s.keys.Offenses+ip)
		args = append(args, b.id, max(b.left.Milliseconds(), 1), b.count, b.mode(), b.expires.UnixMilli(), ip,
			b.record.json(), b.record.Rule, b.record.Severity, b.record.FirstSeen, b.record.LastSeen, b.record.ExpiresAt, b.record.why(), b.record.Offence)
	}
	return blockScript.Run(ctx, p, keys, args...)
}

type scriptCode struct {
	code     int64
	incident string
}

func scriptResults(c redis.Cmder, n int) ([]scriptCode, error) {
	v, err := c.(*redis.Cmd).Slice()
	if err != nil {
		return nil, err
	}
	if len(v) != 2*n {
		return nil, fmt.Errorf("unexpected script reply %v", v)
	}
	out := make([]scriptCode, n)
	for k := range out {
		out[k].code, _ = v[2*k].(int64)
		out[k].incident, _ = v[2*k+1].(string)
	}
	return out, nil
}

// mode is the block's kind for blockScript.
func (b *pendingBlock) mode() string {
	switch {
	case b.manual:
		return "m"
	case b.renewal:
		return "r"
	}
	return "b"
}

// Manual blocks ip for ttl on an operator's word, as runbook SEC-010 §2.2's
// SET ip_block:<ip> 1 EX ttl does, and records who and why.
func (s *Store) Manual(ctx context.Context, ip netip.Addr, ttl time.Duration, operator, reason string, now time.Time) (incident string, err error) {
	expires := now.Add(ttl)
	r := record{Time: stamp(now), Action: "manual block", IP: ip.String(), Rule: "manual", Operator: operator, Reason: reason,
		TTLSeconds: int64(ttl / time.Second), ExpiresAt: stamp(expires)}
	id := fmt.Sprintf("manual-%s-%d", ip, now.UnixNano())
	c := s.runBlocks(ctx, s.rdb, []pendingBlock{{id, ip, ttl, expires, 0, false, true, r}}, now)
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
		if raw, ok := m.Values["record"].(string); ok {
			var rec map[string]any
			json.Unmarshal([]byte(raw), &rec)
			for k, v := range rec {
				fields[k] = fmt.Sprint(v)
			}
		}
		fields["incident"] = fmt.Sprint(m.Values["incident"])
		if m.ID == id || fields["incident"] == id {
			out = append(out, Record{ID: m.ID, Fields: fields})
		}
	}
	return out, nil
}

// saveMessageScript records where an incident's page is, in the block's
// metadata hash (so it expires with the block), only while that hash still
// belongs to the incident.
//
// KEYS: meta. ARGV: incident, channel, ts.
var saveMessageScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'incident') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'slack_channel', ARGV[2], 'slack_ts', ARGV[3])
return 1
`)

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
