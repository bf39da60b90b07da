//go:build real

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/authguard/authguard/deploy/kubetest"
)

// Leader election against a real kube-apiserver, with the Namespace,
// service account and RBAC exactly as the prod overlay renders them, and
// a token the API server issued for that service account: what a pod of
// the Deployment gets. The scenario is the one the fake runs.
func TestRealAPIServerLeaderElection(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := context.Background()
	var namespace, account string
	var access []*unstructured.Unstructured
	for _, obj := range kubetest.Render(t, nil, "../deploy/overlays/prod") {
		switch obj.GetKind() {
		case "Namespace", "ServiceAccount", "Role", "RoleBinding":
			access = append(access, obj)
		case "Deployment":
			if obj.GetName() == "authguard" {
				namespace = obj.GetNamespace()
				account, _, _ = unstructured.NestedString(obj.Object, "spec", "template", "spec", "serviceAccountName")
			}
		}
	}
	if namespace == "" || account == "" {
		t.Fatalf("the prod overlay renders no authguard Deployment with a service account (namespace %q, account %q)", namespace, account)
	}
	for _, err := range srv.Apply(ctx, access, false) {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := srv.Kubeconfig(t, srv.ServiceAccountToken(t, namespace, account))
	leaderScenario(t, leaderSetup{
		kubeconfig: kubeconfig, namespace: namespace,
		holder: func() string {
			l, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "authguard", metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil {
				return ""
			}
			return *l.Spec.HolderIdentity
		},
		lease: 4 * time.Second, renew: 3 * time.Second, retry: 500 * time.Millisecond,
	})

	// --check-config=online reads the Lease with the service account's
	// token, as a pod would: the RBAC the overlay renders allows it.
	r := startRedisServer(t)
	args := []string{"run", "--check-config=online", "--listen", "127.0.0.1:0", "--redis-url", r.url(),
		"--leader-elect", "--leader-elect-namespace", namespace, "--kubeconfig", kubeconfig}
	if out, status := checkConfig(t, nil, "authguard", args...); status != 0 || !strings.Contains(out, "kubernetes ok: lease "+namespace+"/authguard") {
		t.Errorf("check-config=online: exit %d\n%s", status, out)
	}
	// Another namespace's Lease is not this account's to read: a failed
	// check (1), not an unreachable API server (3).
	args[8] = "kube-system"
	if out, status := checkConfig(t, nil, "authguard", args...); status != 1 || !strings.Contains(out, "kubernetes FAILED") {
		t.Errorf("check-config=online in kube-system: exit %d (want 1)\n%s", status, out)
	}
}
