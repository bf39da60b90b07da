// Package storetest holds the contract every responder.Store keeps, as a
// suite run against each Store (Run), and Memory, a Store that keeps it in
// memory for the tests of what sits on top.
package storetest

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

// Memory is a responder.Store in memory, with the SEC-010 semantics of
// the Redis one: a block and its failure tally end together, an operator
// clears both, and a renewal of a cleared address is not written.
type Memory struct {
	// Now is the clock blocks are counted on (time.Now when nil).
	Now func() time.Time

	mu       sync.Mutex
	blocks   map[netip.Prefix]time.Time // target -> end of its block and tally
	requests map[netip.Prefix]string    // target -> the request its block came from
	records  []responder.Request
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{blocks: map[netip.Prefix]time.Time{}, requests: map[netip.Prefix]string{}}
}

func (m *Memory) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Prepare implements responder.Store: the batch is written by Write.
func (m *Memory) Prepare(reqs []responder.Request) responder.Batch {
	return responder.WriteFunc(m.Write).Prepare(reqs)
}

// Write carries out reqs as a responder.Batch does.
func (m *Memory) Write(_ context.Context, reqs []responder.Request) ([]responder.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]responder.Result, len(reqs))
	for i, req := range reqs {
		ip, ends := req.Decision.Net, req.DecidedAt.Add(req.Decision.TTL)
		active := m.blocks[ip].After(now)
		switch {
		case !req.Act.Blocks() || !ip.IsValid():
		case m.requests[ip] == req.ID && active:
			out[i].Outcome = responder.AlreadyWritten
			continue
		case !ends.After(now):
			out[i].Outcome = responder.Expired
		case req.Act == responder.ActRenew && !active:
			out[i].Outcome = responder.Cleared
			continue
		default:
			m.blocks[ip], m.requests[ip] = ends, req.ID
		}
		m.records = append(m.records, req)
	}
	return out, nil
}

// Blocked says how long ip stays blocked (0 when it is not).
func (m *Memory) Blocked(ip netip.Addr) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.blocks[blockset.Host(ip)].Sub(m.now()), 0)
}

// Clear unblocks ip as an operator does, deleting the block and its tally.
func (m *Memory) Clear(ip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blocks, blockset.Host(ip))
	delete(m.requests, blockset.Host(ip))
}

// Records returns the requests recorded so far, in order.
func (m *Memory) Records() []responder.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]responder.Request(nil), m.records...)
}
