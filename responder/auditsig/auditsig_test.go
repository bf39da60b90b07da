package auditsig

import "testing"

func TestSignaturesVerifyOnlyUnderTheirKeyAndFields(t *testing.T) {
	k1, _ := NewKey([]byte("0123456789abcdef-one"))
	k2, _ := NewKey([]byte("0123456789abcdef-two"))
	f := Fields{TS: "2026-11-22T10:00:00.000000001Z", Action: "auth_failed", ClientIP: "203.0.113.7", Username: "alice", RequestID: "r1"}
	sig := k1.Sign(f)
	for _, tt := range []struct {
		name string
		v    *Verifier
		f    Fields
		sig  string
		want string
	}{
		{"the signing key verifies", NewVerifier(k1), f, sig, ""},
		{"either key of a rotation verifies", NewVerifier(k2, k1), f, sig, ""},
		{"another key's verifier refuses", NewVerifier(k2), f, sig, UnknownKey},
		{"an unsigned line", NewVerifier(k1), f, "", Unsigned},
		{"another address under the same signature", NewVerifier(k1), Fields{f.TS, f.Action, "198.51.100.1", f.Username, f.RequestID}, sig, BadSig},
		{"another time", NewVerifier(k1), Fields{"2026-11-22T10:00:01Z", f.Action, f.ClientIP, f.Username, f.RequestID}, sig, BadSig},
		{"fields shifted across a boundary", NewVerifier(k1), Fields{f.TS, f.Action, f.ClientIP, f.Username + "r", "1"}, sig, BadSig},
		{"a garbled signature", NewVerifier(k1), f, "v1:" + k1.ID + ":zz", BadSig},
		{"a signature of another version", NewVerifier(k1), f, "v2:x:y", BadSig},
	} {
		if got := tt.v.Verify(tt.f, tt.sig); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := NewKey([]byte("short")); err == nil {
		t.Error("a 5-byte key was taken")
	}
}
