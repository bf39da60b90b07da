package kubetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// MountConfigMap projects the ConfigMap namespace/name into dir as the
// kubelet does for a configMap volume, and keeps the projection current
// until t ends. Each key is a file reached through the ..data symlink;
// each change is written into a new timestamped directory, ..data is
// swapped to it in one rename and the old one removed, so a reader sees
// the old files or the new, never a mix. It returns once the first
// projection is in place; updates reports each later one.
func (s *Server) MountConfigMap(t testing.TB, namespace, name, dir string) (updates <-chan struct{}) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.Admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		cancel()
		t.Fatalf("configMap volume %s/%s: %v", namespace, name, err)
	}
	if err := project(dir, cm.Data); err != nil {
		cancel()
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps(namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: cm.ResourceVersion})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if ev.Type != watch.Modified || !ok {
				continue
			}
			if err := project(dir, cm.Data); err != nil {
				t.Errorf("projecting %s/%s: %v", namespace, name, err)
				return
			}
			ch <- struct{}{}
		}
	}()
	t.Cleanup(func() { w.Stop(); cancel(); <-done })
	return ch
}

// project writes data as the kubelet's atomic writer does.
func project(dir string, data map[string]string) error {
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	link := filepath.Join(dir, "..data")
	old, _ := os.Readlink(link)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("swap ..data: %w", err)
	}
	for k := range data {
		visible := filepath.Join(dir, k)
		if _, err := os.Lstat(visible); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), visible); err != nil {
				return err
			}
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
