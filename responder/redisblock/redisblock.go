// Package redisblock writes IP blocks to Redis in the runbook SEC-010
// schema: ip_block:<ip> = 1 with a TTL, login_fail:<ip> holding the failure
// tally and expiring with the block, plus an index, a metadata hash, the
// evidence stream and a pub/sub event for gateways (see blockset, which
// reads them). The daemon and the operator CLI use it.
package redisblock

import (
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authguard/authguard/responder/blockset"
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
	// Now is the clock TTLs are counted on (time.Now when nil).
	Now func() time.Time
}

// New returns a store over rdb.
func New(rdb redis.UniversalClient, keys blockset.Keys, opts Options) *Store {
	if opts.EvidenceMaxLen <= 0 {
		opts.EvidenceMaxLen = 100_000
	}
	if opts.RememberOffences <= 0 {
		opts.RememberOffences = 30 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{Reader: blockset.NewReader(rdb, keys), rdb: rdb, keys: keys, opts: opts}
}
