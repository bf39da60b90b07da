package redisblock

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestRecordJSONMatchesEncodingJSON: the hand-written encoder reads back as
// encoding/json would have written it, for awkward values.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	for _, r := range []record{
		{Time: "2026-11-22T10:00:04Z", Action: "block", IP: "203.0.113.7", Rule: "failed-login-burst", Trigger: "5 or more", Severity: "P3",
			Count: 5, Rate: "5.0", FirstSeen: "a", LastSeen: "b", TTLSeconds: 300, Offence: 2, ExpiresAt: "c",
			Sample: `{"action":"auth_failed","username":"tab\there \"quoted\" back\\slash \u0001 é 😀"}`},
		{Time: "t", Action: "unblock", IP: "2001:db8::1", Operator: "alice", Reason: "line\nbreak"},
		{Time: "t", Action: "block", IP: "192.0.2.1", Sample: "bad utf-8: \xff\xfe"},
	} {
		want, _ := json.Marshal(&r)
		var a, b map[string]any
		if err := json.Unmarshal([]byte(r.json()), &a); err != nil {
			t.Fatalf("%s: %v", r.json(), err)
		}
		json.Unmarshal(want, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("\n got %s\nwant %s", r.json(), want)
		}
	}
}
