//go:build real

package e2e

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/authguard/authguard/deploy/kubetest"
)

// An operator edits the rules in the ConfigMap on a real API server, as
// `kubectl edit` or `kubectl apply -k` after an edit does. The kubelet's
// projection of the volume (simulated: ..data swapped to a new directory
// in one rename) changes under the running daemon, which reloads it
// without a restart: the edited threshold blocks. A broken edit is
// reported with its position and the edited rules keep running.
func TestRealAPIServerRulesEditReloadsInPlace(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := context.Background()
	var namespace, rulesMap string
	var objs []*unstructured.Unstructured
	rendered := kubetest.Render(t, nil, "../deploy/overlays/dev")
	for _, obj := range rendered {
		if obj.GetKind() == "Deployment" && obj.GetName() == "authguard" {
			namespace = obj.GetNamespace()
			vols, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "volumes")
			for _, v := range vols {
				if v := v.(map[string]any); v["name"] == "rules" {
					rulesMap, _, _ = unstructured.NestedString(v, "configMap", "name")
				}
			}
		}
	}
	for _, obj := range rendered {
		if obj.GetKind() == "Namespace" || (obj.GetKind() == "ConfigMap" && obj.GetName() == rulesMap) {
			objs = append(objs, obj)
		}
	}
	if len(objs) != 2 {
		t.Fatalf("the dev overlay renders no Namespace or no rules ConfigMap %q for the daemon", rulesMap)
	}
	for _, err := range srv.Apply(ctx, objs, false) {
		t.Fatal(err)
	}
	mount := t.TempDir()
	updates := srv.MountConfigMap(t, namespace, rulesMap, mount)
	s := newStack(t, stackOptions{rulesPath: filepath.Join(mount, "rules.yaml")})

	cs, err := kubernetes.NewForConfig(srv.Admin)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(change func(string) string) {
		t.Helper()
		cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, rulesMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["rules.yaml"] = change(cm.Data["rules.yaml"])
		if _, err := cs.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-updates:
		case <-time.After(10 * time.Second):
			t.Fatal("the volume was not updated within 10 s of the edit")
		}
	}
	reloads := func(result string) float64 {
		return metricAt(s.daemonAt, `authguard_rules_reloads_total{result="`+result+`"}`)
	}

	// SEC-010's 5 failures become 3.
	edit(func(rules string) string {
		const from = "    threshold: 5 "
		if strings.Count(rules, from) != 1 {
			t.Fatalf("the rules have no single %q to edit:\n%s", from, rules)
		}
		return strings.Replace(rules, from, "    threshold: 3 ", 1)
	})
	eventually(t, 15*time.Second, "the daemon to reload the edited rules", func() bool { return s.daemon.alive(t) && reloads("success") == 1 })
	for range 3 {
		s.login("203.0.113.160", "guess")
	}
	s.awaitBlocked("203.0.113.160")

	// A broken edit: reported with its place, and 3 still block.
	edit(func(rules string) string { return rules + "  - name: [unclosed\n" })
	eventually(t, 15*time.Second, "the broken edit to be refused", func() bool { return reloads("failure") == 1 })
	if out := s.daemon.output(); !regexp.MustCompile(`rules\.yaml:\d+:\d+`).MatchString(out) {
		t.Errorf("the refused reload does not name the file and line:\n%s", out)
	}
	for range 3 {
		s.login("203.0.113.161", "guess")
	}
	s.awaitBlocked("203.0.113.161")
	s.daemon.alive(t)
}
