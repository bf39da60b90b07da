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
