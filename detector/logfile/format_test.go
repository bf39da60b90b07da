package logfile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/authguard/authguard/detector"
	"github.com/authguard/authguard/detector/loki"
)

const sshd = `^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) \S+ sshd\[\d+\]: (?:(?P<success>Accepted)|Failed) password for (?:invalid user )?(?P<username>\S+) from <HOST>`

// A plain-text log read with a fail2ban-style expression: failures and
// successes, IPv4 and IPv6 through <HOST>, syslog times in the year given,
// and lines it does not match skipped by reason.
func TestAFormatReadsPlainTextLogs(t *testing.T) {
	f, err := NewFormat(sshd, "Jan _2 15:04:05", 2026)
	if err != nil {
		t.Fatal(err)
	}
	log := strings.Join([]string{
		"Nov 22 10:00:01 host sshd[7]: Failed password for invalid user admin from 203.0.113.7 port 40000 ssh2",
		"Nov 22 10:00:02 host sshd[7]: Accepted password for alice from 2001:db8::5 port 40001 ssh2",
		"Nov 22 10:00:03 host sshd[7]: Connection closed by 203.0.113.7 port 40000",
		"Nov 22 10:00:04 host sshd[7]: Failed password for bob from 203.0.113.999 port 1 ssh2",
	}, "\n")
	var evs []detector.Event
	st, err := Stream(context.Background(), []Input{text("auth.log", log)}, Options{Parse: f.Parse, MaxLine: 1 << 16, Window: time.Minute},
		func(ev *detector.Event) error { evs = append(evs, *ev); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || st.Skipped[SkipNoMatch] != 1 || st.Skipped[loki.SkipBadClientIP] != 1 || st.FirstSkip.Line != 3 {
		t.Fatalf("events %+v, stats %+v", evs, st)
	}
	if evs[0].Action != detector.ActionAuthFailed || evs[0].Username != "admin" || evs[0].IP.String() != "203.0.113.7" ||
		!evs[0].Time.Equal(time.Date(2026, 11, 22, 10, 0, 1, 0, time.UTC)) {
		t.Errorf("first event %+v", evs[0])
	}
	if evs[1].Action != detector.ActionAuthSucceeded || evs[1].IP.String() != "2001:db8::5" {
		t.Errorf("second event %+v", evs[1])
	}
	for _, bad := range []string{`from (?P<ip>\S+)`, `(?P<ts>\S+) from (`, `from <HOST>`} {
		if _, err := NewFormat(bad, "", 2026); err == nil {
			t.Errorf("--format %q was accepted", bad)
		}
	}
}
