package redisblock

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// Evidence reads back whole for awkward values, and a sample reads as it
// was logged (no HTML escapes).
func TestRecordJSONReadsBack(t *testing.T) {
	for _, r := range []record{
		{Time: "2026-11-22T10:00:04Z", Action: "block", IP: "203.0.113.7", Rule: "failed-login-burst", Trigger: "5 or more", Severity: "P3",
			Count: 5, Rate: "5.0", FirstSeen: "a", LastSeen: "b", TTLSeconds: 300, Offence: 2, ExpiresAt: "c",
			Sample: `{"action":"auth_failed","username":"<tab>\there \"quoted\" back\\slash \u0001 é 😀"}`},
		{Time: "t", Action: "unblock", IP: "2001:db8::1", Operator: "alice", Reason: "line\nbreak"},
	} {
		var back record
		if err := json.Unmarshal([]byte(r.json()), &back); err != nil {
			t.Fatalf("%s: %v", r.json(), err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("\n got %+v\nwant %+v", back, r)
		}
		if strings.Contains(r.json(), `\u003c`) {
			t.Errorf("HTML escaped: %s", r.json())
		}
	}
	bad := record{Time: "t", Action: "block", IP: "192.0.2.1", Sample: "bad utf-8: \xff\xfe"}
	var back record
	if err := json.Unmarshal([]byte(bad.json()), &back); err != nil || back.Sample != "bad utf-8: \ufffd\ufffd" {
		t.Errorf("invalid UTF-8 read back as %q, %v", back.Sample, err)
	}
}

// BenchmarkRecordJSON encodes a typical block record.
func BenchmarkRecordJSON(b *testing.B) {
	r := record{Time: "2026-11-22T10:00:04.123456789Z", Action: "block", IP: "203.0.113.7", Rule: "failed-login-burst", Trigger: "5 or more auth_failed in 24h", Severity: "P3",
		Count: 5, Rate: "5.0", FirstSeen: "2026-11-22T10:00:00Z", LastSeen: "2026-11-22T10:00:04Z", TTLSeconds: 300, Offence: 1, ExpiresAt: "2026-11-22T10:05:04Z",
		Sample: `{"ts":"2026-11-22T10:00:04.123Z","service":"audit","action":"auth_failed","client_ip":"203.0.113.7","username":"alice","request_id":"r-123"}`}
	for range b.N {
		_ = r.json()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
}
