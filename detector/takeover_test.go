package detector

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func loggedIn(ip, user string, at time.Duration) Event {
	return Event{Time: t0.Add(at), Action: ActionAuthSucceeded, IP: netip.MustParseAddr(ip), Username: user}
}

func takeoverConfig() Config {
	return Config{Rules: []Rule{sec010()}, Takeover: Takeover{Name: "possible-account-takeover", Memory: 24 * time.Hour}}
}

// Credential stuffing that works: one address tries 50 accounts and 5 of
// the logins succeed. Each success is a P1 possible takeover, whatever the
// rate, naming every account logged into so far; a second login to one
// account names nothing new.
func TestLoginsFromAGuessingAddressArePossibleTakeovers(t *testing.T) {
	e := mustEngine(t, takeoverConfig())
	var got []Decision
	for i := range 50 {
		ev := tried("203.0.113.9", fmt.Sprintf("user%d", i), time.Duration(i)*time.Minute)
		if i%10 == 9 {
			ev.Action = ActionAuthSucceeded
		}
		for _, d := range observe(e, ev, nil) {
			if d.Rule == "possible-account-takeover" {
				got = append(got, d)
			}
		}
	}
	observe(e, loggedIn("203.0.113.9", "USER9", 51*time.Minute), nil)
	if len(got) != 5 {
		t.Fatalf("%d takeover decisions, want 5", len(got))
	}
	last := got[4]
	if want := []string{"user9", "user19", "user29", "user39", "user49"}; !slices.Equal(last.Accounts, want) || last.Key != "203.0.113.9" {
		t.Errorf("last decision names %v from %s, want %v", last.Accounts, last.Key, want)
	}
	if last.Severity != "P1" || last.SeverityRank != 0 || last.Kind != KindAlert || !last.Alert {
		t.Errorf("decision %+v: want a P1 alert", last)
	}
	if got[0].Renewal || !got[1].Renewal {
		t.Errorf("the first account opens the incident, the next ones grow it: %v %v", got[0].Renewal, got[1].Renewal)
	}
}

// What makes a login suspect: the address is blocked, was blocked within
// the memory, or is at least half-way to the threshold; an address with
// one failure, or whose failures left the window, is not.
func TestWhatMakesALoginSuspect(t *testing.T) {
	for _, tt := range []struct {
		name     string
		failures []time.Duration
		login    time.Duration
		suspect  string
	}{
		{"no failures", nil, time.Minute, ""},
		{"two failures of five", []time.Duration{0, 1}, time.Minute, ""},
		{"three failures of five: half-way", []time.Duration{0, 1, 2}, time.Minute, "half-way to failed-login-burst (3 of 5)"},
		{"half-way, but a day ago", []time.Duration{0, 1, 2}, 25 * time.Hour, ""},
		{"blocked", []time.Duration{0, 1, 2, 3, 4}, time.Minute, "blocked by failed-login-burst"},
		{"blocked two hours ago", []time.Duration{0, 1, 2, 3, 4}, 2 * time.Hour, "blocked by failed-login-burst within 24h"},
		{"blocked two days ago", []time.Duration{0, 1, 2, 3, 4}, 48 * time.Hour, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(t, takeoverConfig())
			for _, at := range tt.failures {
				observe(e, failed("192.0.2.7", at), nil)
			}
			ds := observe(e, loggedIn("192.0.2.7", "alice", tt.login), nil)
			why := ""
			if len(ds) == 1 {
				why = ds[0].Suspect
			}
			if why != tt.suspect || len(ds) > 1 {
				t.Errorf("decisions %+v: suspect %q, want %q", ds, why, tt.suspect)
			}
		})
	}
}

// An attacker cannot grow the followed incidents without bound: past the
// cap the oldest is forgotten.
func TestTakeoverIncidentsAreBounded(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{{Name: "r", Match: ActionAuthFailed, PerIP: true, Window: time.Hour, Threshold: 1, BlockTTL: time.Hour}},
		Takeover: Takeover{Name: "t", Memory: time.Hour}})
	for i := range maxTakeovers + 500 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		at := time.Duration(i) * time.Millisecond
		observe(e, failed(ip, at), nil)
		observe(e, loggedIn(ip, "alice", at), nil)
	}
	if len(e.takeovers) > maxTakeovers {
		t.Errorf("%d incidents followed, at most %d", len(e.takeovers), maxTakeovers)
	}
}
