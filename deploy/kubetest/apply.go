package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization in dir of fsys (nil: the disk) as
// `kubectl apply -k` would and returns its objects as the API server
// receives them.
func Render(t testing.TB, fsys filesys.FileSystem, dir string) []*unstructured.Unstructured {
	t.Helper()
	if fsys == nil {
		fsys = filesys.MakeFsOnDisk()
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
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

// Apply sends objs to the API server as `kubectl apply --server-side
// --validate=strict` would, in the order an empty cluster needs:
// Namespaces, then service accounts and RBAC, for real; then the rest,
// for real only when dryRun is false (no kubelet runs workloads here).
// It returns one error per object refused, naming it.
func (s *Server) Apply(ctx context.Context, objs []*unstructured.Unstructured, dryRun bool) []error {
	dyn, err := dynamic.NewForConfig(s.Admin)
	if err != nil {
		return []error{err}
	}
	dc, err := discovery.NewDiscoveryClientForConfig(s.Admin)
	if err != nil {
		return []error{err}
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	apply := func(obj *unstructured.Unstructured, dryRun bool) error {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		// An established CRD's kind reaches discovery a moment later;
		// discovery has nothing to watch, so it is asked again.
		for deadline := time.Now().Add(10 * time.Second); meta.IsNoMatchError(err) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			mapper.Reset()
			m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
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
	order := func(kind string) int {
		switch kind {
		case "Namespace", "CustomResourceDefinition":
			return 0
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			return 1
		}
		return 2
	}
	var errs []error
	for pass := range 3 {
		for _, obj := range objs {
			if order(obj.GetKind()) != pass {
				continue
			}
			if err := apply(obj, dryRun && pass == 2); err != nil {
				errs = append(errs, fmt.Errorf("apply %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err))
			}
		}
		if pass == 0 {
			// A CRD's kind is served once it is established; discovery
			// then finds it afresh.
			for _, obj := range objs {
				if obj.GetKind() == "CustomResourceDefinition" {
					if err := established(ctx, dyn, obj.GetName()); err != nil {
						errs = append(errs, err)
					}
				}
			}
			mapper.Reset()
		}
	}
	return errs
}

// established waits up to 30 s for the CRD name to be served: its
// Established condition, seen on a watch.
func established(ctx context.Context, dyn dynamic.Interface, name string) error {
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	isEstablished := func(crd *unstructured.Unstructured) bool {
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
				return true
			}
		}
		return false
	}
	crd, err := crds.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("CRD %s: %w", name, err)
	}
	if isEstablished(crd) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w, err := crds.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: crd.GetResourceVersion()})
	if err != nil {
		return fmt.Errorf("CRD %s: %w", name, err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if crd, ok := ev.Object.(*unstructured.Unstructured); ok && isEstablished(crd) {
			return nil
		}
	}
	return fmt.Errorf("CRD %s not established within 30 s", name)
}

// ServiceAccountToken asks the API server for a token bound to the
// service account namespace/name, as the kubelet does for a pod that
// mounts it.
func (s *Server) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.Admin)
	if err != nil {
		t.Fatal(err)
	}
	hour := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for service account %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}
