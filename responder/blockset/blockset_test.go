package blockset

import "testing"

// Stream IDs compare as numbers, millisecond then sequence, not as text.
func TestStreamIDsCompareAsNumbers(t *testing.T) {
	for _, c := range []struct {
		a, b       string
		less, next bool
	}{
		{"9-0", "10-0", true, false},
		{"10-2", "10-10", true, false},
		{"10-1", "10-2", true, true},
		{"10-0", "10-0", false, false},
		{"11-0", "10-5", false, false},
		{"0-0", "1700000000000-0", true, false},
	} {
		if got := streamIDLess(c.a, c.b); got != c.less {
			t.Errorf("%s < %s: %v", c.a, c.b, got)
		}
		if got := nextID(c.a, c.b); got != c.next {
			t.Errorf("%s right before %s: %v", c.a, c.b, got)
		}
	}
}

// A target has one spelling: the address alone, or the network from its
// first address; anything else is refused, never read as something else.
func TestTargetsHaveOneSpelling(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"203.0.113.0/24", "203.0.113.0/24"},
		{"203.0.113.7/32", "203.0.113.7"},
		{"2001:db8:1:2::/64", "2001:db8:1:2::/64"},
		{"2001:DB8:1:2::/64", "2001:db8:1:2::/64"},
		{"203.0.113.9/24", ""},
		{"::ffff:203.0.113.0/120", ""},
		{"fe80::1%eth0", ""},
		{"203.0.113.0/33", ""},
		{"example.com", ""},
		{"", ""},
	} {
		p, err := ParseTarget(c.in)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%q read as %s, want refused", c.in, p)
		case c.want != "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.want != "" && Target(p) != c.want:
			t.Errorf("%q written %q, want %q", c.in, Target(p), c.want)
		}
	}
}
