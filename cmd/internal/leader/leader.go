// Package leader runs authguard's daemon as one of several replicas, of
// which only the holder of a coordination.k8s.io Lease acts: it alone
// writes blocks and posts to Slack. Standbys wait, ready, and the first to
// take the Lease after the leader leaves or dies starts the loop, whose
// start-up backfill from Loki rebuilds the windows.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Config says which Lease to hold and how.
type Config struct {
	Namespace, Name string
	// Identity names this replica in the Lease (the pod name).
	Identity string
	// LeaseDuration is how long a Lease not renewed stays with its holder:
	// the longest a dead leader keeps the others waiting. RenewDeadline is
	// how long the leader keeps trying to renew before it steps down
	// (shorter than LeaseDuration); RetryPeriod is how often candidates try.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// ErrLost says this replica held the Lease and lost it while still
// running: it must stop acting at once (and, in Kubernetes, is restarted
// as a standby).
var ErrLost = errors.New("leader election: lost the lease")

// Run campaigns for the Lease and runs lead while this replica holds it,
// with a context that ends when it stops holding it. It returns nil when
// ctx ends (releasing the Lease, so a standby takes over at once), or
// ErrLost. It returns only after lead has returned.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config, log *slog.Logger, lead func(context.Context)) error {
	if cfg.RenewDeadline >= cfg.LeaseDuration {
		return fmt.Errorf("leader election: the renew deadline (%s) must be shorter than the lease duration (%s)", cfg.RenewDeadline, cfg.LeaseDuration)
	}
	tm := &term{done: make(chan struct{})}
	// The elector releases the Lease as soon as its context ends, while
	// lead may still be writing what it has queued: a standby would then
	// act beside it. So the elector's context ends only once lead has
	// returned, and lead's ends with ctx or with the Lease.
	electCtx, stopElect := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElect()
	defer context.AfterFunc(ctx, func() { tm.finish(); stopElect() })()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
		},
		LeaseDuration:   cfg.LeaseDuration,
		RenewDeadline:   cfg.RenewDeadline,
		RetryPeriod:     cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(whileHeld context.Context) {
				if !tm.begin() {
					return
				}
				defer close(tm.done)
				leadCtx, cancel := context.WithCancel(whileHeld)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				log.Info("leader election: leading", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
				lead(leadCtx)
			},
			OnStoppedLeading: func() {
				log.Info("leader election: not leading", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
			},
			OnNewLeader: func(identity string) {
				if identity != cfg.Identity {
					log.Info("leader election: standing by", "leader", identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	elector.Run(electCtx)
	if tm.finish() && ctx.Err() == nil {
		return ErrLost
	}
	return nil
}

// term is one leadership of Run's. OnStartedLeading runs on a goroutine
// of the elector's: once Run is over it must not start lead any more, and
// Run waits for a lead that did start.
type term struct {
	mu         sync.Mutex
	held, over bool
	done       chan struct{} // closed when a lead that began returns
}

// begin says whether lead may start, and marks it started.
func (t *term) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.held = !t.over
	return t.held
}

// finish ends the term: no lead starts after it, and a lead that began
// has returned when it does. It says whether one began.
func (t *term) finish() bool {
	t.mu.Lock()
	t.over = true
	held := t.held
	t.mu.Unlock()
	if held {
		<-t.done
	}
	return held
}

// Client connects to the Kubernetes API: in-cluster, or through kubeconfig
// when given.
func Client(kubeconfig string) (kubernetes.Interface, error) {
	var conf *rest.Config
	var err error
	if kubeconfig != "" {
		conf, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		conf, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("leader election: kubernetes client: %w", err)
	}
	// JSON rather than protobuf: a Lease is a few hundred bytes renewed
	// every few seconds, and JSON is what every API server substitute
	// (and a person reading a trace) understands.
	conf.ContentType = "application/json"
	conf.AcceptContentTypes = "application/json"
	return kubernetes.NewForConfig(conf)
}

// Namespace is the pod's namespace when running in Kubernetes, from the
// service account, or else "default".
func Namespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return "default"
}

// Identity is the pod's name (POD_NAME, else the host name, which
// Kubernetes sets to the pod name).
func Identity() string {
	if id := os.Getenv("POD_NAME"); id != "" {
		return id
	}
	host, _ := os.Hostname()
	return host
}
