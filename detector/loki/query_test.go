package loki_test

import (
	"strings"
	"testing"

	"github.com/authguard/authguard/detector/loki"
)

func TestQueriesAreSplitIntoWhatLokiTailsWholeAndWhatIsCheckedHere(t *testing.T) {
	for _, tt := range []struct {
		name, query, remote, selector string
		local                         bool
	}{
		{"the default sends the selector and its line filter", loki.DefaultQuery, `{service="audit"} |= "auth_"`, `{service="audit"}`, true},
		{"a parser stage and label filter stay here", `{service="audit"} | json | action="auth_failed"`, `{service="audit"}`, `{service="audit"}`, true},
		{"a bare selector goes whole", `{service="audit", env=~"prod|stage"}`, `{service="audit", env=~"prod|stage"}`, `{service="audit", env=~"prod|stage"}`, false},
		{"line filters before a stage go to Loki, after it stay here", "{app=\"x\"} != `health` |~ \"fail(ed)?\" | json |= \"y\"", "{app=\"x\"} != `health` |~ \"fail(ed)?\"", `{app="x"}`, true},
		{"braces inside strings do not end the selector", `{service="a}b"} |= "}"`, `{service="a}b"} |= "}"`, `{service="a}b"}`, false},
		{"a label filter without a parser stays here", `{service="audit"} | run="r1"`, `{service="audit"}`, `{service="audit"}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, err := loki.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if q.Remote != tt.remote || q.Selector != tt.selector || q.Local() != tt.local || q.Full != tt.query {
				t.Errorf("got remote %q selector %q local %v", q.Remote, q.Selector, q.Local())
			}
		})
	}
}

func TestQueriesAuthguardCannotCheckAreRefusedSayingWhy(t *testing.T) {
	for _, tt := range []struct{ query, want string }{
		{`{service="audit"} | logfmt`, `col 21: stage "logfmt"`},
		{`{service="audit"} | json | status >= 400`, `numeric comparisons`},
		{`{service="audit"} | json | line_format "{{.x}}"`, `stage "line_format \"{{.x}}\""`},
		{`{service="audit"} | json a="b"`, `| json with parameters is not supported`},
		{`{service="audit"} |= "a" or "b"`, `joined with "or"`},
		{`{service="audit"`, `col 17: the stream selector is not closed`},
		{`service="audit"`, `col 1: a query starts with a stream selector`},
		{`{service="audit"} |~ "("`, `col 19: line filter |~ "("`},
		{`{service="audit"} | json | user=~"("`, `col 28: label filter user=~"(": error parsing regexp: missing closing )`},
	} {
		_, err := loki.ParseQuery(tt.query)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "--loki-query col ") {
			t.Errorf("%s: err %v, want it to name the column and say %q", tt.query, err, tt.want)
		}
	}
	if _, err := loki.ParseQuery(`{service="audit"} | logfmt`); !strings.Contains(err.Error(), "Loki's tail silently loses entries") {
		t.Errorf("the refusal does not say why: %v", err)
	}
}

func TestLocalStagesDecideAsLokiWould(t *testing.T) {
	audit := map[string]string{"service": "audit"}
	for _, tt := range []struct {
		name, query, line string
		labels            map[string]string
		keep              bool
	}{
		{"a failure passes the default", loki.DefaultQuery, `{"action":"auth_failed","client_ip":"192.0.2.1"}`, audit, true},
		{"a success passes the default (takeovers)", loki.DefaultQuery, `{"action":"auth_succeeded","client_ip":"192.0.2.1"}`, audit, true},
		{"another action is left out", loki.DefaultQuery, `{"action":"auth_reset","client_ip":"192.0.2.1","note":"auth_failed before"}`, audit, false},
		{"escaped field values are compared decoded", `{service="audit"} | json | action="auth_failed"`, `{"action":"auth\u005ffailed","client_ip":"192.0.2.1"}`, audit, true},
		{"nested fields join with underscores", `{service="audit"} | json | req_path="/auth/login"`, `{"req":{"path":"/auth/login"}}`, audit, true},
		{"numbers compare as their text", `{service="audit"} | json | status="401"`, `{"status":401}`, audit, true},
		{"a field named like a stream label is NAME_extracted", `{service="audit"} | json | service_extracted="x" | service="audit"`, `{"service":"x"}`, audit, true},
		{"a stream label is not overridden by a field", `{service="audit"} | json | service="x"`, `{"service":"x"}`, audit, false},
		{"an absent field is empty", `{service="audit"} | json | username=""`, `{"action":"auth_failed"}`, audit, true},
		{"a line that is not JSON has no fields", `{service="audit"} | json | action!="auth_failed"`, `action=auth_failed`, audit, true},
		{"regex label filters are anchored", `{service="audit"} | json | action=~"auth"`, `{"action":"auth_failed"}`, audit, false},
		{"regex line filters are not", `{service="audit"} | json |~ "auth"`, `{"action":"auth_failed"}`, audit, true},
		{"label filters before json read stream labels", `{service="audit"} | run="r1" | json`, `{"run":"r1"}`, audit, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, err := loki.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Keep(tt.labels, tt.line); got != tt.keep {
				t.Errorf("Keep = %v, want %v", got, tt.keep)
			}
		})
	}
}
