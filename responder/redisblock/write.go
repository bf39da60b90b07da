package redisblock

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder"
)

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
	restore         bool // written again after Redis lost it: not over a block that is there
	record          record
}

// batch is a batch of requests encoded for one pipelined round trip:
// evidence records and runs of up to maxRun blocks (one script call
// each), in request order. Redis starts on the first run while the rest
// is still being sent.
type batch struct {
	pipe    redis.Pipeliner
	runs    []run
	results []responder.Result
}

type run struct {
	cmd   redis.Cmder
	index []int // request index of each block in the run
}

// Write carries out reqs in one pipelined round trip and says what became
// of each. A block runs from its DecidedAt: its TTL is what is left of it
// now, and one that would already have ended is only recorded.
func (s *Store) Write(ctx context.Context, reqs []responder.Request) ([]responder.Result, error) {
	// In a pipeline EVALSHA cannot fall back to EVAL, so the script is
	// loaded first: once, and again after a Redis restart emptied the cache.
	if !s.loaded.Load() {
		if err := blockScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("load block script: %w", err)
		}
		s.loaded.Store(true)
	}
	b := s.encode(ctx, reqs, s.opts.Now())
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

// encode queues reqs in a pipeline, their TTLs counted at now.
func (s *Store) encode(ctx context.Context, reqs []responder.Request, now time.Time) *batch {
	b := &batch{pipe: s.rdb.Pipeline(), results: make([]responder.Result, len(reqs))}
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
		case !req.Act.Blocks() || !d.IP.IsValid():
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
			blocks = append(blocks, pendingBlock{req.ID, d.IP, left, expires, d.Count, d.Renewal, false, req.Act == responder.ActRestore, decisionRecord(req, now, expires)})
			index = append(index, i)
			if len(blocks) == maxRun {
				flush()
			}
		}
	}
	flush()
	return b
}

func (s *Store) xadd(ctx context.Context, p redis.Pipeliner, r *record) redis.Cmder {
	return p.XAdd(ctx, &redis.XAddArgs{Stream: s.keys.Evidence, MaxLen: s.opts.EvidenceMaxLen, Approx: true, Values: []any{"incident", "", "record", r.json()}})
}

// runBlocks runs (or, in a pipeline, queues) blockScript for a run of blocks.
func (s *Store) runBlocks(ctx context.Context, p redis.Scripter, bs []pendingBlock, now time.Time) redis.Cmder {
	keys := make([]string, 0, 3+4*len(bs))
	keys = append(keys, s.keys.Index, s.keys.Evidence, s.keys.Changes)
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
	case b.restore:
		return "s"
	case b.renewal:
		return "r"
	}
	return "b"
}
