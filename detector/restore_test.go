package detector

import (
	"testing"
	"time"
)

// Every standing block comes back with what is left of it, and nothing
// else: not an expired block, not a key below its threshold.
func TestActiveBlocksAreWhatStandsNow(t *testing.T) {
	e := mustEngine(t, Config{Rules: []Rule{sec010()}})
	burst(&Loop{Engine: e, Decide: (&decided{}).decide}, "203.0.113.7", 0, 5)               // blocked at t0, for 5m
	burst(&Loop{Engine: e, Decide: (&decided{}).decide}, "198.51.100.1", 0, 4)              // not blocked
	burst(&Loop{Engine: e, Decide: (&decided{}).decide}, "2001:db8::1", -10*time.Minute, 5) // blocked, ended
	ds := e.ActiveBlocks(t0.Add(2 * time.Minute))
	if len(ds) != 1 {
		t.Fatalf("active blocks %+v, want one", ds)
	}
	d := ds[0]
	if d.Key != "203.0.113.7" || d.Net.String() != "203.0.113.7/32" || d.TTL != 3*time.Minute+4 || d.Count != 5 || d.Offence != 1 || d.Renewal || d.Alert {
		t.Errorf("restored %+v", d)
	}
}
