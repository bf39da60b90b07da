package slack

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
)

// Pages of rules grouped by a field name the value and its addresses and
// say what was done; a possible takeover names the accounts and is P1.
func TestPagesNameAccountsSessionsAndTheirAddresses(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	srcs := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::2")}
	for _, tt := range []struct {
		name string
		d    detector.Decision
		want []string
	}{
		{"a targeted account, protected",
			detector.Decision{Rule: "targeted-account", Key: "alice", GroupBy: "username", Sources: srcs, Distinct: 2, DistinctOf: "client_ip",
				Match: detector.ActionAuthFailed, Threshold: 2, Window: 10 * time.Minute, Protects: 15 * time.Minute, Severity: "P3", SeverityRank: 2},
			[]string{"Targeted account", "username alice", "198.51.100.1, 2001:db8::2", "Distinct client addresses", "the account protected for 15m"}},
		{"a shared session",
			detector.Decision{Rule: "session-shared", Key: "s-9", GroupBy: "session_id", Sources: srcs, Distinct: 2, DistinctOf: "client_ip", Threshold: 2, Window: time.Hour, Severity: "P3", SeverityRank: 2},
			[]string{"Session used from many addresses", "session_id s-9", "*Attempts*", "alert only"}},
		{"a possible takeover",
			detector.Decision{Rule: "possible-account-takeover", Key: "203.0.113.9", Accounts: []string{"user09", "user19"}, Suspect: "blocked by failed-login-burst", Severity: "P1"},
			[]string{"P1 — Possible account takeover", "user09, user19", "blocked by failed-login-burst", "a login to user19 from 203.0.113.9"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.Time, tt.d.FirstSeen, tt.d.LastSeen = at, at, at
			m := Render(responder.Action{Decision: tt.d, At: at, Act: responder.ActAlert}, Page{})
			b, _ := json.Marshal(m.Attachment)
			page := m.Text + string(b)
			for _, w := range tt.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q:\n%s", w, page)
				}
			}
		})
	}
}
