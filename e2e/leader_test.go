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
// record and one page per incident), and when it stops the other takes over
// within the lease duration, rebuilds its windows from Loki without
// repeating what was done, and acts.
func TestLeaderElectionOneActsAndTheStandbyTakesOver(t *testing.T) {
	api := &leaseServer{leases: map[string]*coordinationv1.Lease{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	const lease = 3 * time.Second
	elect := func(id string) []string {
		return []string{"--leader-elect", "--kubeconfig", kubeconfig(t, srv.URL), "--leader-elect-namespace", "security",
			"--leader-elect-identity", id, "--leader-elect-lease-duration", lease.String(),
			"--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "200ms", "--slack-coalesce", "0s"}
	}
	s := newStack(t, stackOptions{ttl: "300s", dArgs: elect("authguard-a")})
	// A second replica: the same settings, its own name and admin port.
	bAt := freeAddr(t)
	var bArgs []string
	for i := 0; i < len(s.daemonArgs); i++ {
		a := s.daemonArgs[i]
		switch {
		case a == "--listen":
			bArgs = append(bArgs, a, bAt)
			i++
		case a == "--leader-elect-identity":
			bArgs = append(bArgs, a, "authguard-b")
			i++
		default:
			bArgs = append(bArgs, a)
		}
	}
	b := start(t, "authguard", bArgs...)
	addrs := map[string]string{"authguard-a": s.daemonAt, "authguard-b": bAt}
	eventually(t, 20*time.Second, "one replica to lead and the other to stand by, ready", func() bool {
		b.alive(t)
		return api.holder("security", "authguard") != "" && metricAt(s.daemonAt, "authguard_leader")+metricAt(bAt, "authguard_leader") == 1 &&
			httpStatus("http://"+bAt+"/readyz") == 200
	})
	first := api.holder("security", "authguard")
	other := "authguard-b"
	if first == other {
		other = "authguard-a"
	}
	eventually(t, 20*time.Second, "the leader to tail Loki", func() bool { return httpStatus("http://"+addrs[first]+"/readyz") == 200 })

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
	// decisions were made, so a repeat of the first attack's page (from the
	// new leader's backfill) would come before the second attack's.
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
	attack("203.0.113.150")
	awaitPage("203.0.113.150")

	// SIGTERM to the leader: it writes what it has queued, releases the
	// Lease, and the standby takes over within the lease duration.
	var leader *process = s.daemon
	if first == "authguard-b" {
		leader = b
	}
	stopped := time.Now()
	leader.stop()
	eventually(t, lease, "the standby to take the Lease", func() bool { return api.holder("security", "authguard") == other })
	eventually(t, 20*time.Second, "the new leader to tail Loki", func() bool {
		return metricAt(addrs[other], "authguard_leader") == 1 && httpStatus("http://"+addrs[other]+"/readyz") == 200
	})
	t.Logf("handover in %v", time.Since(stopped).Round(time.Millisecond))
	attack("203.0.113.151")
	eventually(t, 15*time.Second, "the new leader's block to be recorded", func() bool { return blockRecords("203.0.113.151") == 1 })
	// The new leader's backfill saw the first attack again: recognised in
	// Redis, it is neither written again nor paged again.
	eventually(t, 15*time.Second, "the new leader to have processed the backfill", func() bool {
		return metricAt(addrs[other], "authguard_events_processed_total") >= 10
	})
	if n := blockRecords("203.0.113.150"); n != 1 {
		t.Errorf("the first block was recorded %d times, want once", n)
	}
	awaitPage("203.0.113.151")
	if first, second := pages("203.0.113.150"), pages("203.0.113.151"); first != 1 || second != 1 {
		t.Errorf("pages: %d for the first attack, %d for the second; want one each", first, second)
	}
}
