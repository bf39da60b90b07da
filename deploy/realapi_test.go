//go:build real

package deploy

import (
	"context"
	"encoding/json"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/authguard/authguard/deploy/kubetest"
)

// Every overlay applies to a real API server as `kubectl apply
// --server-side --validate=strict` would: the Namespace and the RBAC for
// real, the workloads as a server-side dry run (no kubelet runs them).
// Then the API server itself says what the service accounts may do: the
// daemon exactly what leader election needs, the gateway nothing.
func TestRealAPIServerAcceptsEveryOverlay(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	apply := func(obj *unstructured.Unstructured, dryRun bool) error {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return err
		}
		var res dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			res = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		force := true
		opts := metav1.PatchOptions{FieldManager: "authguard-test", FieldValidation: "Strict", Force: &force}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err = res.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
		return err
	}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := renderObjects(t, o.dir)
			// Namespace first, then who may do what, then the rest: the
			// order kubectl apply needs on an empty cluster. Only the
			// workloads are a dry run.
			order := func(kind string) int {
				switch kind {
				case "Namespace":
					return 0
				case "ServiceAccount", "Role", "RoleBinding":
					return 1
				}
				return 2
			}
			for pass := range 3 {
				for _, obj := range objs {
					if order(obj.GetKind()) != pass {
						continue
					}
					if err := apply(obj, pass == 2); err != nil {
						t.Errorf("apply %s %s/%s: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
					}
				}
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

// renderObjects builds an overlay as `kubectl apply -k` would and returns
// its objects as the API server receives them.
func renderObjects(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
	return objs
}
