package blockset

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Accounts reads and writes account protection: account_protect:<user>
// (set by the daemon, deleted by operators) and each account's good
// addresses (written by gateways when a login works).
type Accounts struct {
	rdb  redis.UniversalClient
	keys Keys
	// Remember is how long a good address stays good (default 30 days).
	Remember time.Duration
}

// MaxGoodAddresses bounds the good addresses kept per account: the most
// recent ones.
const MaxGoodAddresses = 16

// NewAccounts returns account protection over rdb.
func NewAccounts(rdb redis.UniversalClient, keys Keys, remember time.Duration) *Accounts {
	if remember <= 0 {
		remember = 30 * 24 * time.Hour
	}
	return &Accounts{rdb: rdb, keys: keys, Remember: remember}
}

// AccountKey is how an account is named in keys: without case, as the
// detector compares usernames.
func AccountKey(user string) string { return strings.ToLower(user) }

// Refused says whether a login to user from ip must be refused: the
// account is protected and ip has not logged into it within Remember. One
// round trip.
func (a *Accounts) Refused(ctx context.Context, user string, ip netip.Addr, now time.Time) (bool, error) {
	u := AccountKey(user)
	pipe := a.rdb.Pipeline()
	protected := pipe.Exists(ctx, a.keys.Protect+u)
	seen := pipe.ZScore(ctx, a.keys.Good+u, ip.String())
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return false, fmt.Errorf("account protection of %q: %w", u, err)
	}
	if protected.Val() == 0 {
		return false, nil
	}
	at, err := seen.Result()
	if err == redis.Nil {
		return true, nil
	}
	return now.Sub(time.UnixMilli(int64(at))) > a.Remember, nil
}

// LoggedIn records that ip logged into user at now: a good address,
// kept for Remember, the newest MaxGoodAddresses.
func (a *Accounts) LoggedIn(ctx context.Context, user string, ip netip.Addr, now time.Time) error {
	key := a.keys.Good + AccountKey(user)
	pipe := a.rdb.Pipeline()
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(now.UnixMilli()), Member: ip.String()})
	pipe.ZRemRangeByRank(ctx, key, 0, -MaxGoodAddresses-1)
	pipe.PExpire(ctx, key, a.Remember)
	_, err := pipe.Exec(ctx)
	return err
}

// Protection is one protected account.
type Protection struct {
	Account string
	Expires time.Time // zero: no expiry
}

// List returns the protected accounts (SCAN, never KEYS). Few accounts
// are protected at once: each TTL is read in its own round trip.
func (a *Accounts) List(ctx context.Context) ([]Protection, error) {
	var out []Protection
	node, err := NewReader(a.rdb, a.keys).ScanNode(ctx) // under Cluster, the node of the keys' hash tag
	if err != nil {
		return nil, fmt.Errorf("list protected accounts: %w", err)
	}
	iter := node.Scan(ctx, 0, a.keys.Protect+"*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		p := Protection{Account: strings.TrimPrefix(key, a.keys.Protect)}
		if ttl, err := a.rdb.PTTL(ctx, key).Result(); err == nil && ttl > 0 {
			p.Expires = time.Now().Add(ttl)
		} else if err == nil && ttl == -2 {
			continue // gone meanwhile
		}
		out = append(out, p)
	}
	return out, iter.Err()
}
