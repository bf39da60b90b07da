package kubetest

import (
	"os"
	"path/filepath"
	"testing"
)

// The projection is the kubelet's layout: the key a symlink through
// ..data, ..data swapped to a new directory on each update, the old one
// gone.
func TestProjectSwapsDataAsTheKubeletDoes(t *testing.T) {
	dir := t.TempDir()
	if err := project(dir, map[string]string{"rules.yaml": "one"}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := project(dir, map[string]string{"rules.yaml": "two"}); err != nil {
		t.Fatal(err)
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if b, err := os.ReadFile(filepath.Join(dir, "rules.yaml")); err != nil || string(b) != "two" {
		t.Fatalf("rules.yaml reads %q, %v", b, err)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "rules.yaml")); target != filepath.Join("..data", "rules.yaml") {
		t.Errorf("rules.yaml links to %q, not through ..data", target)
	}
	if first == second || first == "" {
		t.Errorf("..data was %q and is %q: not swapped", first, second)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("the old projection %s is still there", first)
	}
}
