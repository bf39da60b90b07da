package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AccountGuard is account protection as the gateway needs it: whether a
// login to an account from an address is refused (the account is
// protected, and the address has not logged into it before), and
// learning the addresses whose logins work.
type AccountGuard interface {
	Refused(ctx context.Context, user string, ip netip.Addr, now time.Time) (bool, error)
	LoggedIn(ctx context.Context, user string, ip netip.Addr, now time.Time) error
}

// maxLearning bounds the good-address writes in flight; beyond it one is
// skipped and counted (the owner's next login records it).
const maxLearning = 64

type accountMetrics struct {
	refused, errors, skipped prometheus.Counter
}

func newAccountMetrics(reg prometheus.Registerer) accountMetrics {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authguard_gateway_account_checks_total",
		Help: "Account protection at login, by outcome: refused (AUTH_006), error (Redis did not answer in time: let through), learn_skipped (a good address not recorded: too many writes in flight)."}, []string{"outcome"})
	m := accountMetrics{c.WithLabelValues("refused"), c.WithLabelValues("error"), c.WithLabelValues("learn_skipped")}
	if reg != nil {
		reg.MustRegister(c)
	}
	return m
}

// refuseLogin says whether a login to username from ip is refused by
// account protection. One Redis round trip per login attempt, bounded by
// the miss timeout; when Redis does not answer the login goes through
// (the address blocks still hold).
func (g *Gateway) refuseLogin(ctx context.Context, ip netip.Addr, username string) bool {
	if g.opts.Accounts == nil || username == "" || !ip.IsValid() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.MissTimeout)
	defer cancel()
	refused, err := g.opts.Accounts.Refused(ctx, username, ip, g.opts.Now())
	if err != nil {
		g.accounts.errors.Inc()
		return false
	}
	if refused {
		g.accounts.refused.Inc()
	}
	return refused
}

// loggedIn records ip as a good address of username, in the background.
func (g *Gateway) loggedIn(ip netip.Addr, username string) {
	if g.opts.Accounts == nil || username == "" || !ip.IsValid() {
		return
	}
	select {
	case g.learning <- struct{}{}:
	default:
		g.accounts.skipped.Inc()
		return
	}
	at := g.opts.Now()
	go func() {
		defer func() { <-g.learning }()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := g.opts.Accounts.LoggedIn(ctx, username, ip, at); err != nil {
			g.accounts.errors.Inc()
		}
	}()
}
