//go:build real

package deploy

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/authguard/authguard/deploy/kubetest"
)

// Every overlay, with a Secret holding only the required key, applies to
// a real API server as `kubectl apply --server-side --validate=strict`
// would: the Namespace and the RBAC for real, the workloads as a
// server-side dry run (no kubelet runs them).
// Then the API server itself says what the service accounts may do: the
// daemon exactly what leader election needs, the gateway nothing.
func TestRealAPIServerAcceptsEveryOverlay(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := context.Background()
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := kubetest.Render(t, nil, o.dir)
			// With the Secret of a setup without Slack or a Redis
			// password: its one required key.
			secret, err := runtime.DefaultUnstructuredConverter.ToUnstructured(onlyAuditKey(t))
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: secret}
			for _, obj := range objs {
				if obj.GetKind() == "Namespace" {
					u.SetNamespace(obj.GetName())
				}
			}
			for _, err := range srv.Apply(ctx, append(objs, u), true) {
				t.Error(err)
			}
		})
	}
	// Each component added to prod. servicemonitor is for a cluster with
	// the Prometheus Operator: its CRD, generated from the operator's own
	// API types, goes first, and the ServiceMonitor is validated against
	// that schema.
	for _, component := range []string{"servicemonitor", "ingress", "direct-push", "redis"} {
		t.Run("components/"+component, func(t *testing.T) {
			var objs []*unstructured.Unstructured
			if component == "servicemonitor" {
				objs = append(objs, kubetest.CRD(t, "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1",
					schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}))
			}
			fsys, dir := withComponent(t, component)
			for _, err := range srv.Apply(ctx, append(objs, kubetest.Render(t, fsys, dir)...), true) {
				t.Error(err)
			}
		})
	}
	if t.Failed() {
		return
	}
	cs, err := kubernetes.NewForConfig(srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	may := func(account, verb, group, resource, namespace string) bool {
		t.Helper()
		review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:authguard:" + account,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:authguard", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Group: group, Resource: resource},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return review.Status.Allowed
	}
	const coordination = "coordination.k8s.io"
	for _, c := range []struct {
		account, verb, group, resource, namespace string
		want                                      bool
	}{
		// What client-go's leader election does with a Lease.
		{"authguard", "get", coordination, "leases", "authguard", true},
		{"authguard", "create", coordination, "leases", "authguard", true},
		{"authguard", "update", coordination, "leases", "authguard", true},
		// And nothing more.
		{"authguard", "list", coordination, "leases", "authguard", false},
		{"authguard", "watch", coordination, "leases", "authguard", false},
		{"authguard", "delete", coordination, "leases", "authguard", false},
		{"authguard", "patch", coordination, "leases", "authguard", false},
		{"authguard", "get", coordination, "leases", "kube-system", false},
		{"authguard", "get", "", "secrets", "authguard", false},
		{"authguard", "get", "", "configmaps", "authguard", false},
		{"authguard", "list", "", "pods", "authguard", false},
		{"authguard", "create", "", "events", "authguard", false},
		{"authguard-gateway", "get", coordination, "leases", "authguard", false},
		{"authguard-gateway", "update", coordination, "leases", "authguard", false},
		{"authguard-gateway", "get", "", "secrets", "authguard", false},
		{"authguard-gateway", "get", "", "configmaps", "authguard", false},
	} {
		if got := may(c.account, c.verb, c.group, c.resource, c.namespace); got != c.want {
			t.Errorf("service account %s may %s %s in %s: %v, want %v", c.account, c.verb, c.resource, c.namespace, got, c.want)
		}
	}
}
