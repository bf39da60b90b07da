package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/authguard/authguard/cmd/internal/exitcode"
	"github.com/authguard/authguard/cmd/internal/redisflag"
	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/responder"
	"github.com/authguard/authguard/responder/blockset"
	"github.com/authguard/authguard/responder/cidr"
	"github.com/authguard/authguard/responder/clip"
	"github.com/authguard/authguard/responder/redisblock"
)

// operatorFlags name who acts, for the evidence record.
type operatorFlags struct {
	Operator string `help:"Who is acting, for the evidence record (default: $SUDO_USER, $USER, $LOGNAME, else in a pod its service account, else the account and host)." placeholder:"NAME"`
	Reason   string `help:"Why, for the evidence record." default:"(no reason given)" placeholder:"TEXT"`
}

// who names the operator: the flag, else the person behind sudo, else the
// login, else (a kubectl exec into a pod sets none of these) the pod's
// Kubernetes service account, else the account and host the command runs
// as.
func (o operatorFlags) who() string {
	if o.Operator != "" {
		return o.Operator
	}
	for _, k := range []string{"SUDO_USER", "USER", "LOGNAME"} {
		if u := os.Getenv(k); u != "" {
			return u
		}
	}
	host, _ := os.Hostname()
	if sa := serviceAccount(serviceAccountToken); sa != "" {
		return sa + " on " + host
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username + "@" + host
	}
	return fmt.Sprintf("uid %d@%s", os.Getuid(), host)
}

// serviceAccountToken is where the kubelet mounts a pod's token.
var serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// serviceAccount is the subject of the pod's service-account token
// ("system:serviceaccount:authguard:authguard"), read from the token's
// claims without checking them (it names, it does not authorise); "" when
// there is none.
func serviceAccount(tokenFile string) string {
	b, err := os.ReadFile(tokenFile)
	if err != nil || len(b) > 64<<10 {
		return ""
	}
	parts := strings.Split(strings.TrimSpace(string(b)), ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct{ Sub string }
	if json.Unmarshal(payload, &claims) != nil || !strings.HasPrefix(claims.Sub, "system:serviceaccount:") {
		return ""
	}
	return clip.String(claims.Sub, 256)
}

type blocksCmd struct {
	List   blocksListCmd   `cmd:"" help:"List the blocks in Redis, including blocks set by hand."`
	Add    blocksAddCmd    `cmd:"" help:"Block addresses or networks (CIDR) by hand (recorded as evidence)."`
	Remove blocksRemoveCmd `cmd:"" help:"Unblock addresses or networks: deletes ip_block and login_fail, resets the detector's window (recorded as evidence)."`
	Clear  blocksClearCmd  `cmd:"" help:"Unblock every IP and clear every tally (recorded as evidence)."`
}

func openStore(f *redisflag.Flags) (*redisblock.Store, func(), error) {
	rdb, err := f.Client()
	if err != nil {
		return nil, nil, err
	}
	return redisblock.New(rdb, f.Keys(), redisblock.Options{}), func() { rdb.Close() }, nil
}

// parseTargets reads addresses and networks, all or none.
func parseTargets(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		t, err := blockset.ParseTarget(s)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

type blocksListCmd struct {
	redisflag.Flags `embed:""`
	outputFlag
}

type listedBlock struct {
	IP        string `json:"ip"`
	Rule      string `json:"rule"`
	Severity  string `json:"severity,omitempty"`
	Count     int    `json:"count"`
	ExpiresAt string `json:"expires_at,omitempty"`
	ExpiresIn int64  `json:"expires_in_seconds"`
	Incident  string `json:"incident,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

func (c *blocksListCmd) Run(ctx context.Context, e *env) error {
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	entries, err := store.List(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := make([]listedBlock, 0, len(entries))
	for _, en := range entries {
		b := listedBlock{IP: blockset.Target(en.Target), Rule: en.Meta["rule"], Severity: en.Meta["severity"], Incident: en.Meta["incident"],
			Reason: en.Meta["reason"], ExpiresIn: -1}
		b.Count, _ = strconv.Atoi(en.Meta["count"])
		if b.Rule == "" {
			b.Rule = "(set by hand)"
		}
		if !en.Expires.IsZero() {
			b.ExpiresAt = en.Expires.UTC().Format(time.RFC3339)
			b.ExpiresIn = int64(en.Expires.Sub(now).Round(time.Second) / time.Second)
		}
		rows = append(rows, b)
	}
	return list(c.outputFlag, e.stdout, rows, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "IP\tRULE\tSEVERITY\tCOUNT\tEXPIRES IN\tINCIDENT")
		for _, b := range rows {
			in := "never"
			if b.ExpiresIn >= 0 {
				in = detector.FormatDuration(time.Duration(b.ExpiresIn) * time.Second)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", b.IP, b.Rule, dash(b.Severity), b.Count, in, dash(b.Incident))
		}
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type blocksAddCmd struct {
	redisflag.Flags `embed:""`
	operatorFlags
	Targets    []string      `arg:"" name:"target" help:"Addresses or networks (CIDR, e.g. 203.0.113.0/24) to block."`
	TTL        time.Duration `help:"How long." default:"24h"`
	NeverBlock []string      `help:"CIDRs refused as the daemon's --never-block refuses them (give the same list, e.g. the gateways' trusted proxies)." placeholder:"CIDR,..."`
}

func (c *blocksAddCmd) Run(ctx context.Context, e *env) error {
	targets, err := parseTargets(c.Targets)
	if err != nil {
		return err
	}
	if c.TTL < time.Second {
		return errors.New("--ttl must be at least 1s")
	}
	never, err := cidr.ParseList(c.NeverBlock)
	if err != nil {
		return fmt.Errorf("--never-block: %w", err)
	}
	for _, t := range targets {
		if why := responder.NeverBlocked(t, never); why != "" {
			return fmt.Errorf("%s is %s: authguard never blocks such an address (it would lock out the machine itself, every client at once or a proxy of all of them); nothing blocked", blockset.Target(t), why)
		}
	}
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	for _, t := range targets {
		now := time.Now()
		incident, err := store.Manual(ctx, t, c.TTL, c.who(), c.Reason, now)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s blocked for %s, until %s (incident %s)\n", blockset.Target(t), detector.FormatDuration(c.TTL), detector.FormatTime(now.Add(c.TTL)), incident)
	}
	return nil
}

type blocksRemoveCmd struct {
	redisflag.Flags `embed:""`
	operatorFlags
	Targets []string `arg:"" name:"target" help:"Addresses or networks (CIDR) to unblock."`
}

func (c *blocksRemoveCmd) Run(ctx context.Context, e *env) error {
	targets, err := parseTargets(c.Targets)
	if err != nil {
		return err
	}
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	for _, t := range targets {
		existed, err := store.Unblock(ctx, t, c.who(), c.Reason, time.Now())
		if err != nil {
			return err
		}
		if !existed {
			fmt.Fprintf(e.stdout, "%s had no block and no tally; recorded anyway\n", blockset.Target(t))
		} else {
			fmt.Fprintf(e.stdout, "%s unblocked: ip_block and login_fail deleted, detector window reset\n", blockset.Target(t))
		}
	}
	return stillCovered(ctx, store, targets, e.stdout)
}

// stillCovered tells the operator of each unblocked target that a wider
// network's block still covers.
func stillCovered(ctx context.Context, store *redisblock.Store, targets []netip.Prefix, w io.Writer) error {
	blocked, err := store.Blocked(ctx)
	if err != nil {
		return err
	}
	for _, t := range targets {
		for n := range blocked {
			if n.Bits() < t.Bits() && n.Contains(t.Addr()) {
				fmt.Fprintf(w, "%s is still blocked by the network %s: remove that too to let it through\n", blockset.Target(t), blockset.Target(n))
			}
		}
	}
	return nil
}

type blocksClearCmd struct {
	redisflag.Flags `embed:""`
	operatorFlags
	All bool `help:"Required: yes, every block and every tally."`
}

func (c *blocksClearCmd) Run(ctx context.Context, e *env) error {
	if !c.All {
		return errors.New("blocks clear removes every block; say --all to confirm")
	}
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	blocked, err := store.Blocked(ctx)
	if err != nil {
		return err
	}
	tallies, err := store.Tallies(ctx)
	if err != nil {
		return err
	}
	ips := map[netip.Prefix]bool{}
	for ip := range blocked {
		ips[ip] = true
	}
	for _, ip := range tallies {
		ips[ip] = true
	}
	for ip := range ips {
		if _, err := store.Unblock(ctx, ip, c.who(), c.Reason, time.Now()); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "cleared %d IPs\n", len(ips))
	return nil
}

type incidentsCmd struct {
	List incidentsListCmd `cmd:"" help:"List recent incidents from the evidence records, newest first."`
	Show incidentsShowCmd `cmd:"" help:"Render an incident's report as Markdown, from the evidence records."`
}

type incidentsShowCmd struct {
	redisflag.Flags `embed:""`
	ID              string `arg:"" help:"Incident ID, as pages, logs and 'blocks list' show it."`
}

func (c *incidentsShowCmd) Run(ctx context.Context, e *env) error {
	if !incidentID.MatchString(c.ID) {
		return exitcode.UsageError(fmt.Errorf("%q is not an incident ID: they look like 1795398025343-0 (see authguard incidents list)", c.ID))
	}
	store, done, err := openStore(&c.Flags)
	if err != nil {
		return err
	}
	defer done()
	recs, err := store.Incident(ctx, c.ID)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("no evidence for incident %q (records older than the evidence stream's bound are gone)", c.ID)
	}
	return writeReport(e.stdout, c.ID, recs, time.Now())
}

// writeReport renders an incident as the authentication-abuse playbook's
// report template: summary, timeline, impact, actions taken, evidence.
func writeReport(w io.Writer, id string, recs []redisblock.Record, now time.Time) error {
	first := recs[0].Fields
	var (
		severity, rule, ip, status string
		accounts                   string // possibly taken over: the latest record names them all
		count                      int
		start, end                 time.Time
		actions, timeline, samples []string
	)
	status = "Resolved"
	parse := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t }
	clock := detector.FormatTime
	for _, r := range recs {
		f := r.Fields
		at := parse(f["time"])
		if start.IsZero() {
			start = at
			if fs := parse(f["first_seen"]); !fs.IsZero() && fs.Before(start) {
				start = fs
				timeline = append(timeline, fmt.Sprintf("- %s: first failed login seen from %s", clock(fs), f["ip"]))
			}
		}
		end = at
		if f["severity"] != "" {
			severity = f["severity"]
		}
		if f["rule"] != "" && rule == "" {
			rule = f["rule"]
		}
		if ip == "" {
			ip = f["ip"]
		}
		if n, err := strconv.Atoi(f["count"]); err == nil && n > count {
			count = n
		}
		what := f["action"]
		switch {
		case f["operator"] != "":
			what = fmt.Sprintf("%s by %s (%s)", what, f["operator"], f["reason"])
		case f["trigger"] != "":
			what = fmt.Sprintf("%s by rule %s: %s", what, f["rule"], f["trigger"])
		}
		if exp := parse(f["expires_at"]); !exp.IsZero() {
			what += ", until " + clock(exp)
			if exp.After(now) {
				status = "Active (blocked until " + clock(exp) + ")"
			} else {
				status = "Resolved (block expired " + clock(exp) + ")"
			}
		}
		if f["action"] == "unblock" {
			status = fmt.Sprintf("Resolved (unblocked by %s)", f["operator"])
		}
		timeline = append(timeline, fmt.Sprintf("- %s: %s", clock(at), what))
		actions = append(actions, what)
		if a := f["accounts"]; a != "" {
			accounts = a
		}
		if s := f["sample"]; s != "" && len(samples) < 3 {
			samples = append(samples, s)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Authentication Abuse Incident Report\n\n")
	fmt.Fprintf(&b, "**Incident ID**: %s\n**Date**: %s\n**Severity**: %s\n**Status**: %s\n\n", id, start.UTC().Format("2006-01-02"), dash(severity), status)
	fmt.Fprintf(&b, "## Summary\n%s from %s: %d failed logins (%s). authguard acted under rule %s.\n\n", humanRule(rule), ip, count, dash(first["trigger"]), dash(rule))
	fmt.Fprintf(&b, "## Timeline\n%s\n\n", strings.Join(timeline, "\n"))
	writeImpact(&b, ip, count, start, end, accounts)
	fmt.Fprintf(&b, "## Actions Taken\n")
	for i, a := range actions {
		fmt.Fprintf(&b, "%d. %s\n", i+1, a)
	}
	if len(samples) > 0 {
		fmt.Fprintf(&b, "\n## Evidence\n```\n%s\n```\n", strings.Join(samples, "\n"))
	}
	fmt.Fprintf(&b, "\n## Root Cause\n_To be written by the responder._\n\n## Lessons Learned\n_To be written._\n\n## Follow-up Actions\n- [ ] Review whether the rule's threshold or block duration should change\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeImpact writes the report's Impact section.
func writeImpact(b *strings.Builder, ip string, count int, start, end time.Time, accounts string) {
	clock := detector.FormatTime
	fmt.Fprintf(b, "## Impact\n- Source IPs: %s\n- Failed attempts: %d\n- Duration: %s (%s to %s)\n", ip, count, detector.FormatDuration(end.Sub(start).Round(time.Second)), clock(start), clock(end))
	if accounts != "" {
		fmt.Fprintf(b, "- Accounts possibly taken over (logged into from this address): %s\n", accounts)
	}
	b.WriteString("\n")
}

func humanRule(rule string) string {
	if rule == "" || rule == "manual" {
		return "Manual block"
	}
	s := strings.ReplaceAll(rule, "-", " ")
	return strings.ToUpper(s[:1]) + s[1:]
}
