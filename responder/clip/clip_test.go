package clip

import "testing"

func TestCutsNeverSplitACharacter(t *testing.T) {
	for _, tt := range []struct {
		in     string
		n      int
		cut    string
		marked string
	}{
		{"alice", 10, "alice", "alice"},
		{"alice", 3, "ali", "ali…"},
		{"zoë", 3, "zo", "zo…"}, // ë is two bytes; half of it is dropped
		{"\xff\xfeab", 3, "a", "a…"},
	} {
		if got := String(tt.in, tt.n); got != tt.cut {
			t.Errorf("String(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.cut)
		}
		if got := Marked(tt.in, tt.n); got != tt.marked {
			t.Errorf("Marked(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.marked)
		}
	}
}
