package storetest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
)

// Subject is a Store under test and the means to see what it did.
type Subject struct {
	Store responder.Store
	// Blocked says how long ip stays blocked (0 when it is not).
	Blocked func(t *testing.T, ip netip.Addr) time.Duration
	// Clear unblocks ip as an operator does.
	Clear func(t *testing.T, ip netip.Addr)

	clock *clock
}

// slack is how far a TTL read back may be from the one meant: the
// suite's own time between writing and reading.
const slack = 3 * time.Second

// Run runs the contract against the stores open returns, a fresh one for
// each case, on the clock now (the wall clock, which a case may set ahead).
func Run(t *testing.T, open func(t *testing.T, now func() time.Time) Subject) {
	cases := []struct {
		name string
		run  func(t *testing.T, s Subject)
	}{
		{"ABatchIsCountedWhenItIsWritten", batchIsCountedWhenWritten},
		{"ABlockRunsFromItsDecision", blockRunsFromItsDecision},
		{"ARetriedRequestIsWrittenOnce", retriedRequestIsWrittenOnce},
		{"ABlockThatWouldHaveEndedIsOnlyRecorded", endedBlockIsOnlyRecorded},
		{"RecordsBlockNothing", recordsBlockNothing},
		{"ARenewalOfAClearedAddressIsNotWritten", clearedRenewalIsNotWritten},
		{"ResultsFollowTheRequestsInALargeBatch", resultsFollowRequests},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := &clock{}
			s := open(t, clock.now)
			s.clock = clock
			c.run(t, s)
		})
	}
}

// clock is the wall clock, set ahead by a case.
type clock struct {
	mu    sync.Mutex
	ahead time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.ahead)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ahead += d
}

// Request returns a request for a decision about ip made at decided, with
// its TTL.
func Request(ip string, act responder.Act, id string, decided time.Time, ttl time.Duration) responder.Request {
	addr := netip.MustParseAddr(ip)
	kind := detector.KindBlock
	if act == responder.ActAlert {
		kind = detector.KindAlert
	}
	d := detector.Decision{Time: decided, Rule: "failed-login-burst", Key: ip, Net: blockset.Host(addr), Kind: kind, TTL: ttl,
		Severity: "P3", Count: 5, Offence: 1, Threshold: 5, Window: 24 * time.Hour, Match: "auth_failed",
		FirstSeen: decided, LastSeen: decided, Renewal: act == responder.ActRenew}
	return responder.Request{Decision: d, Act: act, ID: id, DecidedAt: decided}
}

func write(t *testing.T, s Subject, reqs ...responder.Request) []responder.Result {
	t.Helper()
	return writeBatch(t, s.Store.Prepare(reqs), len(reqs))
}

func writeBatch(t *testing.T, b responder.Batch, n int) []responder.Result {
	t.Helper()
	res, err := b.Write(context.Background())
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(res) != n {
		t.Fatalf("%d results for %d requests", len(res), n)
	}
	return res
}

func wantBlocked(t *testing.T, s Subject, ip string, want time.Duration) {
	t.Helper()
	got := s.Blocked(t, netip.MustParseAddr(ip))
	if got < want-slack || got > want+slack {
		t.Errorf("%s blocked for %v more, want %v", ip, got.Round(time.Second), want)
	}
}

// A block written late (after an outage) ends when its decision said,
// not a full TTL after the write.
func blockRunsFromItsDecision(t *testing.T, s Subject) {
	res := write(t, s, Request("203.0.113.7", responder.ActBlock, "a", time.Now().Add(-40*time.Second), time.Minute))
	if res[0].Outcome != responder.Written {
		t.Fatalf("outcome %v, want written", res[0].Outcome)
	}
	wantBlocked(t, s, "203.0.113.7", 20*time.Second)
}

// A batch readied ahead is counted when it is written: a block's TTL is
// what is left of it then, one that ended meanwhile is only recorded, and
// writing the batch again (a retry) writes nothing more.
func batchIsCountedWhenWritten(t *testing.T, s Subject) {
	now := s.clock.now()
	b := s.Store.Prepare([]responder.Request{
		Request("203.0.113.20", responder.ActBlock, "k1", now, time.Minute),
		Request("203.0.113.21", responder.ActBlock, "k2", now.Add(-50*time.Second), time.Minute),
	})
	s.clock.advance(20 * time.Second)
	res := writeBatch(t, b, 2)
	if res[0].Outcome != responder.Written || res[1].Outcome != responder.Expired {
		t.Fatalf("outcomes %v, %v; want written, expired", res[0].Outcome, res[1].Outcome)
	}
	wantBlocked(t, s, "203.0.113.20", 40*time.Second)
	wantBlocked(t, s, "203.0.113.21", 0)
	again := writeBatch(t, b, 2)
	if again[0].Outcome != responder.AlreadyWritten || again[0].Incident != res[0].Incident {
		t.Errorf("written again: %v in incident %q, want already written in %q", again[0].Outcome, again[0].Incident, res[0].Incident)
	}
	wantBlocked(t, s, "203.0.113.20", 40*time.Second)
}

func retriedRequestIsWrittenOnce(t *testing.T, s Subject) {
	req := Request("203.0.113.8", responder.ActBlock, "b", time.Now(), time.Minute)
	first := write(t, s, req)
	again := write(t, s, req)
	if first[0].Outcome != responder.Written || again[0].Outcome != responder.AlreadyWritten {
		t.Fatalf("outcomes %v then %v, want written then already written", first[0].Outcome, again[0].Outcome)
	}
	if first[0].Incident != again[0].Incident {
		t.Errorf("incident %q, then %q for the same request", first[0].Incident, again[0].Incident)
	}
	wantBlocked(t, s, "203.0.113.8", time.Minute)
}

func endedBlockIsOnlyRecorded(t *testing.T, s Subject) {
	res := write(t, s, Request("203.0.113.9", responder.ActBlock, "c", time.Now().Add(-2*time.Minute), time.Minute))
	if res[0].Outcome != responder.Expired {
		t.Fatalf("outcome %v, want expired", res[0].Outcome)
	}
	wantBlocked(t, s, "203.0.113.9", 0)
}

func recordsBlockNothing(t *testing.T, s Subject) {
	now := time.Now()
	res := write(t, s, Request("198.51.100.1", responder.ActAlert, "d1", now, 0),
		Request("198.51.100.2", responder.ActDryRun, "d2", now, time.Minute),
		Request("198.51.100.3", responder.ActRefuse, "d3", now, time.Minute))
	for i, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		if res[i].Outcome != responder.Written {
			t.Errorf("%s: outcome %v, want written (recorded)", ip, res[i].Outcome)
		}
		wantBlocked(t, s, ip, 0)
	}
}

// Deleting a block as the runbook says stops the renewals of the burst
// that caused it: the address gets a clean slate.
func clearedRenewalIsNotWritten(t *testing.T, s Subject) {
	now := time.Now()
	write(t, s, Request("192.0.2.1", responder.ActBlock, "e1", now, time.Minute),
		Request("192.0.2.2", responder.ActBlock, "f1", now, time.Minute))
	s.Clear(t, netip.MustParseAddr("192.0.2.2"))
	res := write(t, s, Request("192.0.2.1", responder.ActRenew, "e2", now, 2*time.Minute),
		Request("192.0.2.2", responder.ActRenew, "f2", now, 2*time.Minute))
	if res[0].Outcome != responder.Written || res[1].Outcome != responder.Cleared {
		t.Fatalf("renewal outcomes %v, %v; want written, cleared", res[0].Outcome, res[1].Outcome)
	}
	wantBlocked(t, s, "192.0.2.1", 2*time.Minute)
	wantBlocked(t, s, "192.0.2.2", 0)
}

// A batch longer than any store's internal run, with records and repeats
// between the blocks, gets its results in request order.
func resultsFollowRequests(t *testing.T, s Subject) {
	now := time.Now()
	var reqs []responder.Request
	var want []responder.Outcome
	for i := range 300 {
		ip := fmt.Sprintf("10.1.%d.%d", i/250, i%250)
		reqs = append(reqs, Request(ip, responder.ActBlock, "g"+ip, now, time.Minute))
		want = append(want, responder.Written)
		switch i % 7 {
		case 3:
			reqs = append(reqs, Request(ip, responder.ActAlert, "h"+ip, now, 0))
			want = append(want, responder.Written)
		case 5:
			reqs = append(reqs, reqs[len(reqs)-1])
			want = append(want, responder.AlreadyWritten)
		}
	}
	res := write(t, s, reqs...)
	for i := range reqs {
		if res[i].Outcome != want[i] {
			t.Fatalf("request %d (%s %s): outcome %v, want %v", i, reqs[i].Act, reqs[i].Decision.Key, res[i].Outcome, want[i])
		}
	}
	wantBlocked(t, s, "10.1.1.49", time.Minute)
}
