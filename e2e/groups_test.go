package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// burstRule is runbook SEC-010 with the runbook's 300 s block.
const burstRule = `rules:
  - name: failed-login-burst
    match: {action: auth_failed}
    group_by: client_ip
    window: 24h
    threshold: 5
    block: {ttl: 300s}
    alert: true
`

// awaitPost waits for the next Slack post whose text holds want, passing
// over others (pages of other rules).
func awaitPost(t *testing.T, s *stack, want string) url.Values {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case page := <-s.slack.posts:
			if strings.Contains(page.Get("text"), want) {
				return page
			}
		case <-deadline:
			t.Fatalf("no Slack page saying %q within 20 s", want)
		}
	}
}

// A distributed attack on one account: 20 addresses, one wrong password
// each, none of them over SEC-010. It is one incident that names alice
// and all 20 addresses; the rule blocks its sources, so each of the 20 is
// refused, an address that never tried alice is not, and a 21st address
// that joins the attack is blocked as it does.
func TestATargetedAccountIsOneIncidentAndItsSourcesAreBlocked(t *testing.T) {
	s := newStack(t, stackOptions{dArgs: []string{"--slack-coalesce", "0s"}, rules: burstRule + `  - name: targeted-account
    match: {action: auth_failed}
    group_by: username
    distinct: client_ip
    window: 10m
    threshold: 20
    block: {ttl: 300s, scope: sources}
    alert: true
`})
	var attackers []string
	for i := range 20 {
		ip := fmt.Sprintf("198.51.100.%d", 10+i)
		if i%2 == 1 {
			ip = fmt.Sprintf("2001:db8:77::%x", 10+i)
		}
		attackers = append(attackers, ip)
		if a := s.login(ip, "guess"); a.status != http.StatusUnauthorized {
			t.Fatalf("login from %s: %d", ip, a.status)
		}
	}
	page := awaitPost(t, s, "Targeted account")
	if !strings.Contains(page.Get("text"), "username alice") {
		t.Errorf("the page does not name the account: %s", page.Get("text"))
	}
	for _, ip := range attackers {
		if !strings.Contains(page.Get("attachments"), ip) {
			t.Errorf("the page does not name %s: %s", ip, page.Get("attachments"))
		}
		s.awaitBlocked(ip)
	}
	if a := s.request("198.51.100.200", "GET", "/health", ""); a.status != http.StatusOK {
		t.Errorf("an address that never tried alice got %d", a.status)
	}
	s.login("198.51.100.201", "guess")
	s.awaitBlocked("198.51.100.201")
	// The 21st block is carried out after the decision that made it (a
	// renewal of the incident), so by then that decision was paged or not.
	eventually(t, 10*time.Second, "the 21st block to be carried out", func() bool {
		return s.metric("authguard_blocks_written_total") >= 21
	})
	if n := s.metric(`authguard_decisions_total{kind="alert",rule="targeted-account"}`); n != 2 {
		t.Errorf("%v targeted-account alert decisions, want the incident and its renewal", n)
	}
	if n := s.metric("authguard_notifications_total"); n != 1 {
		t.Errorf("%v pages, want one incident: the 21st address opened another", n)
	}
}

// One session used from three addresses (a stolen cookie) is an alert
// that names the session; the same session again and again from one
// address is not. The session_id field is read because a rule names it.
func TestASessionFromManyAddressesIsPaged(t *testing.T) {
	s := newStack(t, stackOptions{dArgs: []string{"--slack-coalesce", "0s"}, query: `%s |= "auth_" | json`, rules: `rules:
  - name: session-shared
    group_by: session_id
    distinct: client_ip
    window: 1h
    threshold: 3
    alert: true
`})
	labels := map[string]string{"service": "audit", "run": s.run}
	n := 0
	line := func(ip, session string) string {
		n++ // each request its own line: Loki keeps an exact repeat once
		return fmt.Sprintf(`{"action":"auth_succeeded","client_ip":%q,"username":"bob","session_id":%q,"request_id":"r%d"}`, ip, session, n)
	}
	s.loki.push(t, labels, line("203.0.113.50", "sess-9"), line("203.0.113.50", "sess-9"), line("203.0.113.50", "sess-9"),
		line("203.0.113.51", "sess-9"), line("203.0.113.52", "sess-other"))
	s.awaitEvents(5)
	s.loki.push(t, labels, line("2001:db8::52", "sess-9"))
	page := awaitPost(t, s, "Session used from many addresses")
	for _, want := range []string{"sess-9", "203.0.113.50", "203.0.113.51", "2001:db8::52"} {
		if !strings.Contains(page.Get("attachments"), want) {
			t.Errorf("the page lacks %s: %s", want, page.Get("attachments"))
		}
	}
	if strings.Contains(page.Get("attachments"), "203.0.113.52") {
		t.Errorf("the page names an address of another session")
	}
}

// Credential stuffing that works: one address tries 50 accounts and 5 of
// the logins succeed. Once it is guessing (blocked by SEC-010 after its
// fifth failure), each success is a P1 possible account takeover, and the
// incident's page comes to name all five accounts.
func TestCredentialStuffingThatWorksIsAPossibleTakeover(t *testing.T) {
	s := newStack(t, stackOptions{dArgs: []string{"--slack-coalesce", "0s"}, query: `%s |= "auth_" | json`, rules: burstRule + `takeover: {memory: 24h}
`})
	labels := map[string]string{"service": "audit", "run": s.run}
	var lines, accounts []string
	for i := range 50 {
		action := "auth_failed"
		if i%10 == 9 {
			action = "auth_succeeded"
			accounts = append(accounts, fmt.Sprintf("user%02d", i))
		}
		lines = append(lines, fmt.Sprintf(`{"action":%q,"client_ip":"203.0.113.77","username":"user%02d","request_id":"r%d"}`, action, i, i))
	}
	s.loki.push(t, labels, lines...)
	deadline := time.After(20 * time.Second)
	for named := false; !named; {
		var page url.Values
		select {
		case page = <-s.slack.posts:
		case page = <-s.slack.updates:
		case <-deadline:
			t.Fatalf("no page naming all of %v within 20 s", accounts)
		}
		if !strings.Contains(page.Get("text"), "Possible account takeover") {
			continue
		}
		if !strings.Contains(page.Get("text"), "P1") {
			t.Errorf("a possible takeover paged below P1: %s", page.Get("text"))
		}
		named = true
		for _, a := range accounts {
			named = named && strings.Contains(page.Get("attachments"), a)
		}
	}
	if !strings.Contains(s.daemon.output(), `"accounts":["user09","user19","user29","user39","user49"]`) {
		t.Errorf("no evidence record names the five accounts:\n%s", s.daemon.output())
	}
	// The incident report of the address's block lists the accounts.
	out, err := s.cli("blocks", "list", "--output", "json")
	var listed []struct{ IP, Incident string }
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].Incident == "" {
		t.Fatalf("blocks list: %s %v", out, err)
	}
	eventually(t, 10*time.Second, "the report to name the five accounts", func() bool {
		report, err := s.cli("incidents", "show", listed[0].Incident)
		return err == nil && strings.Contains(report, "Accounts possibly taken over (logged into from this address): user09, user19, user29, user39, user49")
	})
}

// With protect, the targeted account is protected: a 21st address is
// refused for alice with AUTH_006 even with her password, while an
// address that logged in as alice before still gets in, and other
// accounts are not touched. An operator lists and lifts the protection.
func TestAProtectedAccountLetsOnlyItsOwnAddressesIn(t *testing.T) {
	s := newStack(t, stackOptions{dArgs: []string{"--slack-coalesce", "0s"}, rules: `rules:
  - name: targeted-account
    match: {action: auth_failed}
    group_by: username
    distinct: client_ip
    window: 10m
    threshold: 20
    protect: {ttl: 15m}
    alert: true
`})
	good := "192.0.2.44"
	alice := func(ip, password string) answer {
		return s.request(ip, "POST", "/auth/login", fmt.Sprintf(`{"username":"alice","password":%q}`, password))
	}
	if a := alice(good, "correct horse"); a.status != http.StatusOK {
		t.Fatalf("alice's own login: %d", a.status)
	}
	eventually(t, 10*time.Second, "the gateway to remember alice's address", func() bool {
		return s.rdb.ZScore(context.Background(), s.keyPrefix+"authguard:account_good:alice", good).Err() == nil
	})
	for i := range 20 {
		alice(fmt.Sprintf("198.51.100.%d", 100+i), "guess")
	}
	eventually(t, 15*time.Second, "alice to be protected", func() bool { return s.exists("account_protect:alice") })
	stranger := "203.0.113.99"
	a := alice(stranger, "correct horse")
	if a.status != http.StatusForbidden || !strings.Contains(a.body, `"code":"AUTH_006"`) {
		t.Fatalf("a new address logging in as the protected alice got %d %s", a.status, a.body)
	}
	// The same account spelled another way is the same account.
	if a := s.request(stranger, "POST", "/auth/login", `{"username":"ALICE","password":"correct horse"}`); a.status != http.StatusForbidden {
		t.Errorf("ALICE from a new address got %d, want 403 AUTH_006", a.status)
	}
	if a := alice(good, "correct horse"); a.status != http.StatusOK {
		t.Errorf("alice's own address was refused: %d %s", a.status, a.body)
	}
	if a := s.request(stranger, "POST", "/auth/login", `{"username":"bob","password":"guess"}`); a.status != http.StatusUnauthorized {
		t.Errorf("another account from the same address got %d, want the app's 401", a.status)
	}
	out, err := s.cli("accounts", "list", "--output", "json")
	var protected []struct{ Account string }
	if err != nil || json.Unmarshal([]byte(out), &protected) != nil || len(protected) != 1 || protected[0].Account != "alice" {
		t.Fatalf("accounts list: %s %v", out, err)
	}
	if out, err := s.cli("accounts", "unprotect", "alice", "--operator", "oncall"); err != nil || !strings.Contains(out, "alice unprotected") {
		t.Fatalf("accounts unprotect: %s %v", out, err)
	}
	if a := alice(stranger, "correct horse"); a.status != http.StatusOK {
		t.Errorf("after unprotect the new address got %d", a.status)
	}
}
