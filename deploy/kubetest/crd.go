package kubetest

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-tools/pkg/crd"
	crdmarkers "sigs.k8s.io/controller-tools/pkg/crd/markers"
	"sigs.k8s.io/controller-tools/pkg/loader"
	"sigs.k8s.io/controller-tools/pkg/markers"
)

// CRD generates the CustomResourceDefinition of kind from the Go types of
// package pkg (a module go.mod requires) with controller-tools, as the
// types' own project generates the CRDs it publishes: the schema the API
// server then validates objects of that kind against.
func CRD(t testing.TB, pkg string, kind schema.GroupKind) *unstructured.Unstructured {
	t.Helper()
	roots, err := loader.LoadRoots(pkg)
	if err != nil {
		t.Fatalf("load %s: %v", pkg, err)
	}
	for _, r := range roots {
		for _, e := range r.Errors {
			t.Fatalf("load %s: %v", pkg, e)
		}
	}
	reg := &markers.Registry{}
	if err := crdmarkers.Register(reg); err != nil {
		t.Fatal(err)
	}
	parser := &crd.Parser{Collector: &markers.Collector{Registry: reg}, Checker: &loader.TypeChecker{}, AllowDangerousTypes: true}
	crd.AddKnownTypes(parser)
	for _, r := range roots {
		parser.NeedPackage(r)
	}
	noDescriptions := 0 // as small as the API server takes it
	parser.NeedCRDFor(kind, &noDescriptions)
	def, ok := parser.CustomResourceDefinitions[kind]
	if !ok {
		t.Fatalf("%s defines no %s", pkg, kind)
	}
	crd.FixTopLevelMetadata(def)
	def.APIVersion, def.Kind = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&def)
	if err != nil {
		t.Fatal(fmt.Errorf("CRD %s: %w", kind, err))
	}
	delete(obj, "status")
	unstructured.RemoveNestedField(obj, "metadata", "creationTimestamp")
	return &unstructured.Unstructured{Object: obj}
}
