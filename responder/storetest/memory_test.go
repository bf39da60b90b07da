package storetest

import (
	"net/netip"
	"testing"
	"time"
)

func TestMemoryKeepsTheStoreContract(t *testing.T) {
	Run(t, func(t *testing.T, now func() time.Time) Subject {
		m := NewMemory()
		m.Now = now
		return Subject{Store: m,
			Blocked: func(_ *testing.T, ip netip.Addr) time.Duration { return m.Blocked(ip) },
			Clear:   func(_ *testing.T, ip netip.Addr) { m.Clear(ip) }}
	})
}
