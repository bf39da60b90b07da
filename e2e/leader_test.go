package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// leaseServer is an in-process substitute for the Kubernetes API server
// that serves what leader election uses: get, create and update of
// coordination.k8s.io/v1 Leases, with resourceVersion conflicts as the real
// one answers them.
type leaseServer struct {
	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease
	rv     int
}

const leasePrefix = "/apis/coordination.k8s.io/v1/namespaces/"

func (s *leaseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, leasePrefix)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) < 2 || parts[1] != "leases" {
		status(w, http.StatusNotFound, "NotFound", "no such resource")
		return
	}
	ns := parts[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && len(parts) == 3:
		l := s.leases[ns+"/"+parts[2]]
		if l == nil {
			status(w, http.StatusNotFound, "NotFound", "leases "+parts[2]+" not found")
			return
		}
		reply(w, http.StatusOK, l)
	case r.Method == http.MethodPost && len(parts) == 2:
		var l coordinationv1.Lease
		if err := json.NewDecoder(r.Body).Decode(&l); err != nil {
			status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		if s.leases[ns+"/"+l.Name] != nil {
			status(w, http.StatusConflict, "AlreadyExists", "leases "+l.Name+" already exists")
			return
		}
		s.store(ns, &l)
		reply(w, http.StatusCreated, &l)
	case r.Method == http.MethodPut && len(parts) == 3:
		var l coordinationv1.Lease
		if err := json.NewDecoder(r.Body).Decode(&l); err != nil {
			status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		cur := s.leases[ns+"/"+parts[2]]
		if cur == nil {
			status(w, http.StatusNotFound, "NotFound", "leases "+parts[2]+" not found")
			return
		}
		if l.ResourceVersion != cur.ResourceVersion {
			status(w, http.StatusConflict, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
			return
		}
		s.store(ns, &l)
		reply(w, http.StatusOK, &l)
	default:
		status(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" "+r.URL.Path)
	}
}

func (s *leaseServer) store(ns string, l *coordinationv1.Lease) {
	s.rv++
	l.Namespace, l.ResourceVersion = ns, strconv.Itoa(s.rv)
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	s.leases[ns+"/"+l.Name] = l
}

func (s *leaseServer) holder(ns, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.leases[ns+"/"+name]; l != nil && l.Spec.HolderIdentity != nil {
		return *l.Spec.HolderIdentity
	}
	return ""
}

func reply(w http.ResponseWriter, code int, obj any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(obj)
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	reply(w, code, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Reason: metav1.StatusReason(reason), Message: msg, Code: int32(code)})
}

// kubeconfig points client-go at the substitute.
func kubeconfig(t *testing.T, server string) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: authguard, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: authguard}}]
current-context: fake
`, server)), 0o600)
	return path
}

// Two daemons elect a leader through a Lease: exactly one acts (one block
// record and one page per incident); SIGTERM to the leader hands over at
// once, SIGKILL within the lease; each new leader rebuilds its windows
// from Loki without repeating what was done, and acts.
func TestLeaderElectionOneActsAndTheStandbyTakesOver(t *testing.T) {
	api := &leaseServer{leases: map[string]*coordinationv1.Lease{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	leaderScenario(t, leaderSetup{
		kubeconfig: kubeconfig(t, srv.URL), namespace: "security",
		holder: func() string { return api.holder("security", "authguard") },
		lease:  3 * time.Second, renew: 2 * time.Second, retry: 200 * time.Millisecond,
	})
}

// leaderSetup is where a leader scenario's Lease lives.
type leaderSetup struct {
	kubeconfig, namespace string
	// holder reads the Lease's holder from the API server.
	holder              func() string
	lease, renew, retry time.Duration
}

// leaderScenario runs two replicas with --leader-elect and checks what
// operators rely on: one leader at a time, a handover under 2 s when the
// leader is stopped (SIGTERM: it releases the Lease), a takeover within
// the lease when it dies (SIGKILL), and no block written or page posted
// twice across either.
func leaderScenario(t *testing.T, l leaderSetup) {
	elect := func(id string) []string {
		return []string{"--leader-elect", "--kubeconfig", l.kubeconfig, "--leader-elect-namespace", l.namespace,
			"--leader-elect-identity", id, "--leader-elect-lease-duration", l.lease.String(),
			"--leader-elect-renew-deadline", l.renew.String(), "--leader-elect-retry-period", l.retry.String(), "--slack-coalesce", "0s"}
	}
	s := newStack(t, stackOptions{ttl: "300s", dArgs: elect("authguard-a")})
	// A second replica: the same settings, its own name and admin port.
	addrs := map[string]string{"authguard-a": s.daemonAt, "authguard-b": freeAddr(t)}
	argsOf := func(id string) []string {
		var args []string
		for i := 0; i < len(s.daemonArgs); i++ {
			a := s.daemonArgs[i]
			switch a {
			case "--listen":
				args = append(args, a, addrs[id])
				i++
			case "--leader-elect-identity":
				args = append(args, a, id)
				i++
			default:
				args = append(args, a)
			}
		}
		return args
	}
	replicas := map[string]*process{"authguard-a": s.daemon, "authguard-b": start(t, "authguard", argsOf("authguard-b")...)}
	otherThan := func(id string) string {
		if id == "authguard-a" {
			return "authguard-b"
		}
		return "authguard-a"
	}
	leading := func(id string) bool { return metricAt(addrs[id], "authguard_leader") == 1 }
	ready := func(id string) bool { return httpStatus("http://"+addrs[id]+"/readyz") == 200 }
	eventually(t, 20*time.Second, "one replica to lead and the other to stand by, ready", func() bool {
		for _, p := range replicas {
			p.alive(t)
		}
		h := l.holder()
		return h != "" && leading(h) && !leading(otherThan(h)) && ready(otherThan(h))
	})
	first := l.holder()
	eventually(t, 20*time.Second, "the leader to tail Loki", func() bool { return ready(first) })

	ctx := context.Background()
	attack := func(ip string) {
		for range 5 {
			s.login(ip, "guess")
		}
		s.awaitBlocked(ip)
	}
	blockRecords := func(ip string) int {
		msgs, _ := s.rdb.XRange(ctx, "authguard:evidence", "-", "+").Result()
		n := 0
		for _, m := range msgs {
			if evidenceField(m, "ip") == ip && evidenceField(m, "action") == "block" {
				n++
			}
		}
		return n
	}
	// Pages are read as they come; pages are sent in the order their
	// decisions were made, so a repeat of an earlier attack's page (from a
	// new leader's backfill) would come before the next attack's.
	var seen []string
	pages := func(ip string) int {
		n := 0
		for _, text := range seen {
			if strings.Contains(text, ip+",") {
				n++
			}
		}
		return n
	}
	awaitPage := func(ip string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for pages(ip) == 0 {
			select {
			case p := <-s.slack.posts:
				seen = append(seen, p.Get("text"))
			case <-deadline:
				t.Fatalf("no page for %s within 15 s; pages %q", ip, seen)
			}
		}
	}
	// takeOver awaits the standby as holder and tailing, then has it act
	// on a new attack, and checks that its backfill (every attack so far,
	// seen again in Loki) was recognised in Redis: no second block
	// record, no second page.
	attacks := []string{"203.0.113.150"}
	takeOver := func(next string, within time.Duration, how string, since time.Time) {
		t.Helper()
		eventually(t, within, "the standby to take the Lease "+how, func() bool { return l.holder() == next })
		took := time.Since(since)
		eventually(t, 20*time.Second, "the new leader to tail Loki", func() bool { return leading(next) && ready(next) })
		t.Logf("%s: the Lease changed hands in %v, the new leader tailed Loki after %v", how, took.Round(time.Millisecond), time.Since(since).Round(time.Millisecond))
		ip := fmt.Sprintf("203.0.113.%d", 150+len(attacks))
		attack(ip)
		attacks = append(attacks, ip)
		eventually(t, 15*time.Second, "the new leader's block to be recorded", func() bool { return blockRecords(ip) == 1 })
		eventually(t, 15*time.Second, "the new leader to have processed its backfill", func() bool {
			return metricAt(addrs[next], "authguard_events_processed_total") >= float64(5*len(attacks))
		})
		awaitPage(ip)
		for _, a := range attacks {
			if n, p := blockRecords(a), pages(a); n != 1 || p != 1 {
				t.Errorf("after %s: the block of %s was recorded %d times and paged %d times, want once each", how, a, n, p)
			}
		}
	}
	attack(attacks[0])
	awaitPage(attacks[0])

	// SIGTERM: the leader writes what it has queued and releases the
	// Lease; the standby takes it on its next try.
	stopped := time.Now()
	replicas[first].cmd.Process.Signal(syscall.SIGTERM)
	takeOver(otherThan(first), 2*time.Second, "after SIGTERM", stopped)
	<-replicas[first].done

	// The stopped replica comes back as the standby.
	replicas[first] = start(t, "authguard", argsOf(first)...)
	second := otherThan(first)
	eventually(t, 20*time.Second, "the restarted replica to stand by, ready", func() bool {
		return replicas[first].alive(t) && ready(first) && !leading(first) && l.holder() == second
	})

	// SIGKILL: nothing is released. The standby waits out the lease as
	// it last saw it renewed: up to one try after the last renewal to see
	// it, the lease, and one try to take it; client-go spreads each try
	// over up to 2.2 retry periods (JitterFactor 1.2).
	killed := time.Now()
	replicas[second].kill()
	takeOver(first, l.lease+2*l.retry*22/10+l.retry, "after SIGKILL", killed)
}
