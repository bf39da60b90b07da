package detector

import (
	"math/rand/v2"
	"testing"
)

// TestKeyIndexAgreesWithAMap runs random puts and deletes, with many keys
// crowding a small index, against a Go map.
func TestKeyIndexAgreesWithAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const max = 64
	x := newKeyIndex(max)
	keys := make([][16]byte, max)
	want := map[[16]byte]int32{}
	keyOf := func(i int32) *[16]byte { return &keys[i] }
	var free []int32
	for i := range int32(max) {
		free = append(free, i)
	}
	for step := range 200000 {
		var k [16]byte
		k[0], k[15] = byte(r.IntN(256)), byte(r.IntN(3))
		if i, ok := want[k]; ok {
			if got, ok := x.get(k, keyOf); !ok || got != i {
				t.Fatalf("step %d: get = %d, %v; want %d", step, got, ok, i)
			}
			if r.IntN(2) == 0 {
				x.del(k, keyOf)
				delete(want, k)
				free = append(free, i)
			}
			continue
		}
		if _, ok := x.get(k, keyOf); ok {
			t.Fatalf("step %d: found a deleted key", step)
		}
		if len(free) > 0 {
			i := free[len(free)-1]
			free = free[:len(free)-1]
			keys[i] = k
			x.put(k, i)
			want[k] = i
		}
		if x.n != len(want) {
			t.Fatalf("step %d: %d keys, want %d", step, x.n, len(want))
		}
	}
}
