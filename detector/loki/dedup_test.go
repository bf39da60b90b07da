package loki

import "testing"

func TestDedupForgetsByItsOwnersFloorNotByTheNewestTimestamp(t *testing.T) {
	d := newDedup(100)
	now := int64(1_000_000_000_000)
	d.first(now+int64(365*24*3600)*1e9, "a line from next year", now+int64(365*24*3600)*1e9)
	for i := range 10 {
		d.first(now+int64(i), "real", now+int64(i))
	}
	for i := range 10 {
		if d.first(now+int64(i), "real", now+int64(i)) {
			t.Fatalf("entry %d delivered twice after a line from the future", i)
		}
	}
	d.forget(now + 5)
	if !d.first(now+4, "real", now+4) || d.first(now+5, "real", now+5) {
		t.Error("forget must drop exactly what is before its floor")
	}
	if d.start(now) != now {
		t.Errorf("start moved with nothing evicted for room: %d", d.start(now)-now)
	}
}

func TestDedupUnderItsBoundEvictsTheOldestAndMovesReadsPastThem(t *testing.T) {
	d := newDedup(3)
	for i := range 5 {
		d.first(int64(10+i), "x", int64(10+i))
	}
	if len(d.seen) != 3 || d.evicted != 2 {
		t.Fatalf("%d remembered, %d evicted", len(d.seen), d.evicted)
	}
	if got := d.start(0); got != 12 {
		t.Errorf("a read from 0 must start after the newest evicted entry (11): %d", got)
	}
	if got := d.start(20); got != 20 {
		t.Errorf("a read after the evicted ones starts where it wants: %d", got)
	}
}
