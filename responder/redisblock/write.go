package redisblock

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

// maxRun bounds the blocks one script call writes: long enough that a
// call's fixed cost is small against its work, short enough that other
// clients wait little (about 2 ms of Redis time), and a batch is several
// calls, so that Redis runs the first while the rest is being sent.
const maxRun = 128

// fresh bounds how long ago a batch Write sends was encoded: its evidence
// records carry the time they were made. An older one (it waited out an
// outage, say) is encoded again.
const fresh = 100 * time.Millisecond

// pendingBlock is one block for blockScript.
type pendingBlock struct {
	id              string
	target          netip.Prefix
	expires         time.Time
	count           int
	renewal, manual bool
	restore         bool // written again after Redis lost it: not over a block that is there
	record          record
}

// batch is requests encoded for one pipelined round trip: evidence
// records on their own and runs of up to maxRun blocks (one script call
// each), in request order. Redis starts on the first run while the rest
// is still being sent.
type batch struct {
	s       *Store
	reqs    []responder.Request
	at      time.Time // when it was encoded
	ends    time.Time // the soonest end of its blocks (zero: none); from then on, encode again
	steps   []step
	expired []int // the requests whose block had ended when it was encoded
}

// step is one command of a batch: an evidence record, or a run of blocks
// whose now and TTLs are set when it is sent.
type step struct {
	record string
	// protect, when set, is an account_protect key to set until expires
	// beside the record.
	protect string
	expires time.Time
	// link, when set, is the metadata hash of the address the record is
	// about: the record joins its block's incident (linkScript).
	link  string
	owner int // the request a linked record answers for
	keys  []string
	args  []any
	index []int // request index of each block in the run
}

// Prepare implements responder.Store: it encodes reqs, the costly part
// of a write, so that the responder can do it while Redis runs the last
// batch.
func (s *Store) Prepare(reqs []responder.Request) responder.Batch {
	b := &batch{s: s, reqs: reqs}
	b.encode(s.opts.Now())
	return b
}

// Write sends the batch in one pipelined round trip and says what became
// of each request. Each block's TTL is what is left of it at the time of
// sending; a batch in which a block ended since it was encoded is encoded
// again, so that the block is only recorded.
func (b *batch) Write(ctx context.Context) ([]responder.Result, error) {
	s := b.s
	now := s.opts.Now()
	if now.Sub(b.at) > fresh || !b.ends.IsZero() && !now.Before(b.ends) {
		b.encode(now)
	}
	// In a pipeline EVALSHA cannot fall back to EVAL, so the script is
	// loaded first: once, and again after a Redis restart emptied the cache.
	if !s.loaded.Load() {
		if err := blockScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load block script: %w", err)
		}
		if err := linkScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load evidence script: %w", err)
		}
		s.loaded.Store(true)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]redis.Cmder, len(b.steps))
	for i := range b.steps {
		st := &b.steps[i]
		if st.protect != "" {
			pipe.Set(ctx, st.protect, "1", max(st.expires.Sub(now), time.Millisecond))
		}
		if st.link != "" {
			cmds[i] = linkScript.Run(ctx, pipe, []string{st.link, s.keys.Evidence}, s.opts.EvidenceMaxLen, st.record)
			continue
		}
		if st.keys == nil {
			s.xadd(ctx, pipe, st.record)
			continue
		}
		st.args[1] = now.UnixMilli()
		for k, r := range st.index {
			req := &b.reqs[r]
			st.args[runArgs+perBlock*k+1] = max(req.DecidedAt.Add(req.Decision.TTL).Sub(now).Milliseconds(), 1)
		}
		cmds[i] = blockScript.Run(ctx, pipe, st.keys, st.args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			s.loaded.Store(false)
		}
		return nil, fmt.Errorf("write %d decisions: %w", len(b.reqs), err)
	}
	return b.results(cmds)
}

// results reads the script replies back into one result per request.
func (b *batch) results(cmds []redis.Cmder) ([]responder.Result, error) {
	out := make([]responder.Result, len(b.reqs))
	for _, i := range b.expired {
		out[i].Outcome = responder.Expired
	}
	for k, st := range b.steps {
		if st.link != "" {
			out[st.owner].Incident, _ = cmds[k].(*redis.Cmd).Text()
			continue
		}
		if st.keys == nil {
			continue
		}
		codes, err := scriptResults(cmds[k], len(st.index))
		if err != nil {
			return nil, fmt.Errorf("write blocks: %w", err)
		}
		for n, i := range st.index {
			out[i].Incident = codes[n].incident
			switch codes[n].code {
			case 1:
				out[i].Outcome = responder.AlreadyWritten
			case 2:
				out[i].Outcome = responder.Cleared
			}
		}
	}
	return out, nil
}

// encode readies the batch's requests at now.
func (b *batch) encode(now time.Time) {
	s := b.s
	b.at, b.ends, b.steps, b.expired = now, time.Time{}, nil, nil
	var blocks []pendingBlock
	var index []int
	flush := func() {
		if len(blocks) > 0 {
			keys, args := s.blockArgs(blocks, now)
			b.steps = append(b.steps, step{keys: keys, args: args, index: index})
			blocks, index = nil, nil
		}
	}
	for i, req := range b.reqs {
		d := req.Decision
		expires := req.DecidedAt.Add(d.TTL)
		switch {
		case req.Act == responder.ActProtect && expires.After(now):
			flush()
			if b.ends.IsZero() || expires.Before(b.ends) {
				b.ends = expires
			}
			rec := decisionRecord(req, now, expires)
			b.steps = append(b.steps, step{record: rec.json(), protect: s.keys.Protect + blockset.AccountKey(d.Key), expires: expires})
		case req.Act == responder.ActProtect:
			b.expired = append(b.expired, i)
			rec := decisionRecord(req, now, expires)
			rec.Action = "protection expired before it could be written"
			b.steps = append(b.steps, step{record: rec.json()})
		case d.Accounts != nil && d.Net.IsValid():
			// A possible takeover joins the incident of its address's block.
			flush()
			rec := decisionRecord(req, now, time.Time{})
			b.steps = append(b.steps, step{record: rec.json(), link: s.keys.Meta + blockset.Target(d.Net), owner: i})
		case !req.Act.Blocks() || !d.Net.IsValid():
			flush()
			rec := decisionRecord(req, now, time.Time{})
			b.steps = append(b.steps, step{record: rec.json()})
		case !expires.After(now):
			flush()
			b.expired = append(b.expired, i)
			rec := decisionRecord(req, now, expires)
			rec.Action = "block expired before it could be written"
			b.steps = append(b.steps, step{record: rec.json()})
		default:
			if b.ends.IsZero() || expires.Before(b.ends) {
				b.ends = expires
			}
			blocks = append(blocks, pendingBlock{req.ID, d.Net, expires, d.Count, d.Renewal, false, req.Act == responder.ActRestore, decisionRecord(req, now, expires)})
			index = append(index, i)
			if len(blocks) == maxRun {
				flush()
			}
		}
	}
	flush()
}

func (s *Store) xadd(ctx context.Context, p redis.Pipeliner, record string) redis.Cmder {
	return p.XAdd(ctx, &redis.XAddArgs{Stream: s.keys.Evidence, MaxLen: s.opts.EvidenceMaxLen, Approx: true, Values: []any{"incident", "", "record", record}})
}

// The arguments of blockScript: runArgs for the run, then perBlock for each
// block, the second of which is its TTL.
const runArgs, perBlock = 4, 14

// blockArgs encodes a run of blocks for blockScript at now.
func (s *Store) blockArgs(bs []pendingBlock, now time.Time) (keys []string, args []any) {
	keys = make([]string, 0, 3+4*len(bs))
	keys = append(keys, s.keys.Index, s.keys.Evidence, s.keys.Changes)
	args = make([]any, 0, runArgs+perBlock*len(bs))
	args = append(args, s.keys.Channel, now.UnixMilli(), s.opts.EvidenceMaxLen, s.opts.RememberOffences.Milliseconds())
	for _, b := range bs {
		ip := blockset.Target(b.target)
		keys = append(keys, s.keys.Block+ip, s.keys.Fail+ip, s.keys.Meta+ip, s.keys.Offenses+ip)
		args = append(args, b.id, max(b.expires.Sub(now).Milliseconds(), 1), b.count, b.mode(), b.expires.UnixMilli(), ip,
			b.record.json(), b.record.Rule, b.record.Severity, b.record.FirstSeen, b.record.LastSeen, b.record.ExpiresAt, b.record.why(), b.record.Offence)
	}
	return keys, args
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
	case b.restore:
		return "s"
	case b.renewal:
		return "r"
	}
	return "b"
}
