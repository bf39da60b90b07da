package storetest

import (
	"net/netip"
	"testing"
	"time"
)

func TestMemoryKeepsTheStoreContract(t *testing.T) {
	Run(t, func(t *testing.T) Subject {
		m := NewMemory()
		return Subject{Store: m,
			Blocked: func(_ *testing.T, ip netip.Addr) time.Duration { return m.Blocked(ip) },
			Clear:   func(_ *testing.T, ip netip.Addr) { m.Clear(ip) }}
	})
}
