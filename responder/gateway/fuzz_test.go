package gateway

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientIP feeds arbitrary header values to every resolver mode: it must
// never panic, and a client named by a header must be a valid address or
// the trusted peer itself.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "1.2.3.4, 10.0.0.1", "for=203.0.113.7;proto=https", `for="[2001:db8::1]:80"`,
		`for="[2001:db8::1`, "for=_x, for=unknown", ",,,", "::ffff:1.2.3.4", "fe80::1%eth0", `for=""`, "for=[::1]:x"} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, v string) {
		for _, h := range []string{HeaderXForwardedFor, HeaderForwarded, HeaderXRealIP} {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "10.0.0.2:80"
			r.Header["X-Forwarded-For"] = []string{v}
			r.Header["Forwarded"] = []string{v}
			r.Header["X-Real-Ip"] = []string{v}
			got := ClientIPResolver{Trusted: trusted, Header: h}.Resolve(r)
			if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
				t.Fatalf("%s %q resolved to %v", h, v, got)
			}
		}
	})
}

// FuzzUsernameFromBody: arbitrary login bodies never panic, and the result
// is never longer than the body.
func FuzzUsernameFromBody(f *testing.F) {
	for _, s := range []string{`{"username":"alice","password":"x"}`, `username=bob&password=y`, `{"username":`, `%zz=1`, `{"username":"\ud800"}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, ct := range []string{"application/json", "application/x-www-form-urlencoded", ""} {
			if u := UsernameFromBody(ct, []byte(body), "username"); len(u) > len(body)*3 {
				t.Fatalf("username %q from body %q", u, body)
			}
		}
	})
}

// FuzzRoutePath: any path normalises to a clean absolute path, and
// normalising again changes nothing, so one spelling cannot match where
// another does not.
func FuzzRoutePath(f *testing.F) {
	for _, s := range []string{"/auth/login", "/AUTH/LOGIN/", "//auth/./login", "/x/../auth/login", "/auth/login;jsessionid=1", "", ";", "/..;/auth/login", "/a;b/c;d/", "\x00/%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, cs := range []bool{false, true} {
			got := RoutePath(p, cs)
			if !strings.HasPrefix(got, "/") || strings.Contains(got, "//") || strings.Contains(got, ";") || (len(got) > 1 && strings.HasSuffix(got, "/")) {
				t.Fatalf("RoutePath(%q, %v) = %q", p, cs, got)
			}
			if again := RoutePath(got, cs); again != got {
				t.Fatalf("RoutePath is not idempotent on %q: %q then %q", p, got, again)
			}
		}
	})
}
