package leader

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// ledger records who leads when, and fails the test if two lead at once.
type ledger struct {
	t       *testing.T
	mu      sync.Mutex
	leading string // "" when nobody
	starts  chan string
	posts   map[string]int // pages sent, by who sent them
}

func (l *ledger) lead(id string) func(context.Context) {
	return func(ctx context.Context) {
		l.mu.Lock()
		if l.leading != "" {
			l.t.Errorf("%s leads while %s still does", id, l.leading)
		}
		l.leading = id
		l.posts[id]++ // a leader pages; a standby never does
		l.mu.Unlock()
		l.starts <- id
		<-ctx.Done()
		l.mu.Lock()
		l.leading = ""
		l.mu.Unlock()
	}
}

func TestOneLeaderAndHandoverWithinTheLeaseDuration(t *testing.T) {
	client := fake.NewClientset()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Namespace: "security", Name: "authguard", LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}
	l := &ledger{t: t, starts: make(chan string, 10), posts: map[string]int{}}
	type replica struct {
		cancel context.CancelFunc
		done   chan error
	}
	replicas := map[string]*replica{}
	for _, id := range []string{"authguard-a", "authguard-b"} {
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{cancel, make(chan error, 1)}
		replicas[id] = r
		c := cfg
		c.Identity = id
		go func() { r.done <- Run(ctx, client, c, log, l.lead(id)) }()
	}
	defer func() {
		for _, r := range replicas {
			r.cancel()
		}
	}()
	first := <-l.starts
	// The other stays a standby while the leader renews.
	select {
	case id := <-l.starts:
		t.Fatalf("%s leads too", id)
	case <-time.After(2 * cfg.LeaseDuration):
	}
	lease, err := client.CoordinationV1().Leases("security").Get(context.Background(), "authguard", metav1.GetOptions{})
	if err != nil || *lease.Spec.HolderIdentity != first {
		t.Fatalf("lease holder %v (%v), want %s", lease.Spec.HolderIdentity, err, first)
	}

	// SIGTERM: the leader stops and releases the Lease; the standby takes
	// over well within the lease duration.
	stopped := time.Now()
	replicas[first].cancel()
	if err := <-replicas[first].done; err != nil {
		t.Fatalf("a leader stopped by its context returned %v", err)
	}
	var second string
	select {
	case second = <-l.starts:
	case <-time.After(cfg.LeaseDuration):
		t.Fatal("no handover within the lease duration")
	}
	if second == first {
		t.Fatalf("%s led twice", first)
	}
	t.Logf("handover in %v", time.Since(stopped).Round(time.Millisecond))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.posts[first] != 1 || l.posts[second] != 1 {
		t.Errorf("leadership terms %v, want one each", l.posts)
	}
}

func TestRenewDeadlineMustBeShorterThanTheLease(t *testing.T) {
	err := Run(context.Background(), fake.NewClientset(), Config{Namespace: "n", Name: "l", Identity: "a", LeaseDuration: time.Second, RenewDeadline: time.Second, RetryPeriod: time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) { t.Error("led with a bad configuration") })
	if err == nil {
		t.Fatal("accepted a renew deadline as long as the lease")
	}
}

// A leader told to stop still writes what it has queued: the Lease stays
// its own until lead has returned, so that a standby never acts beside it.
func TestTheLeaseIsReleasedOnlyAfterLeadReturns(t *testing.T) {
	client := fake.NewClientset()
	var mu sync.Mutex
	leadReturned := false
	released := make(chan bool, 1) // whether lead had returned when the Lease was released
	client.PrependReactor("update", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
		lease := action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			mu.Lock()
			select {
			case released <- leadReturned:
			default:
			}
			mu.Unlock()
		}
		return false, nil, nil // the tracker stores it as usual
	})
	cfg := Config{Namespace: "security", Name: "authguard", Identity: "authguard-a", LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	leading := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, client, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(ctx context.Context) {
			close(leading)
			<-ctx.Done()
			// The final writes: long enough for a release racing them to
			// be seen here first.
			select {
			case early := <-released:
				released <- early
			case <-time.After(time.Second):
			}
			mu.Lock()
			leadReturned = true
			mu.Unlock()
		})
	}()
	<-leading
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case afterLead := <-released:
		if !afterLead {
			t.Fatal("the Lease was released while lead was still writing")
		}
	default:
		t.Fatal("the Lease was not released on stop: a standby waits out the whole lease")
	}
}
