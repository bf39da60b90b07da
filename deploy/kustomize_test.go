package deploy

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/authguard/authguard/rules"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// rendered is one overlay, each object decoded strictly into its type.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	accounts    map[string]*corev1.ServiceAccount
	roles       map[string]*rbacv1.Role
	bindings    map[string]*rbacv1.RoleBinding
	budgets     map[string]*policyv1.PodDisruptionBudget
	policies    map[string]*networkingv1.NetworkPolicy
	monitors    map[string]*monitoringv1.ServiceMonitor
	namespaces  map[string]*corev1.Namespace
	ingresses   map[string]*networkingv1.Ingress
	sets        map[string]*appsv1.StatefulSet
}

// render builds an overlay with kustomize's Go API, as `kubectl apply -k`
// would, from an on-disk or in-memory tree.
func render(t *testing.T, fsys filesys.FileSystem, dir string) *rendered {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := &rendered{map[string]*appsv1.Deployment{}, map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{},
		map[string]*corev1.ServiceAccount{}, map[string]*rbacv1.Role{}, map[string]*rbacv1.RoleBinding{},
		map[string]*policyv1.PodDisruptionBudget{}, map[string]*networkingv1.NetworkPolicy{}, map[string]*monitoringv1.ServiceMonitor{}, map[string]*corev1.Namespace{},
		map[string]*networkingv1.Ingress{}, map[string]*appsv1.StatefulSet{}}
	for _, r := range m.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		name, api := r.GetName(), r.GetApiVersion()+" "+r.GetKind()
		var err2 error
		switch api {
		case "apps/v1 Deployment":
			err2 = decode(out.deployments, name, data)
		case "v1 Service":
			err2 = decode(out.services, name, data)
		case "v1 ConfigMap":
			err2 = decode(out.configMaps, name, data)
		case "v1 ServiceAccount":
			err2 = decode(out.accounts, name, data)
		case "rbac.authorization.k8s.io/v1 Role":
			err2 = decode(out.roles, name, data)
		case "rbac.authorization.k8s.io/v1 RoleBinding":
			err2 = decode(out.bindings, name, data)
		case "policy/v1 PodDisruptionBudget":
			err2 = decode(out.budgets, name, data)
		case "networking.k8s.io/v1 NetworkPolicy":
			err2 = decode(out.policies, name, data)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			err2 = decode(out.monitors, name, data)
		case "v1 Namespace":
			err2 = decode(out.namespaces, name, data)
		case "networking.k8s.io/v1 Ingress":
			err2 = decode(out.ingresses, name, data)
		case "apps/v1 StatefulSet":
			err2 = decode(out.sets, name, data)
		default:
			t.Errorf("%s renders %s %s, which this test does not check", dir, api, name)
		}
		if err2 != nil {
			t.Errorf("%s %s/%s does not decode strictly: %v", dir, api, name, err2)
		}
	}
	return out
}

// decode decodes one rendered object strictly into a new T kept under name.
func decode[T any](into map[string]*T, name string, data []byte) error {
	obj := new(T)
	into[name] = obj
	return yaml.UnmarshalStrict(data, obj)
}

var overlays = []struct {
	dir string
	ttl time.Duration // runbook SEC-010's block TTL there
}{
	{"overlays/dev", 300 * time.Second},
	{"overlays/prod", 86400 * time.Second},
}

// The overlays render, every object decodes strictly into its Kubernetes
// type, and they hold what the brief asks of a well-behaved deployment.
func TestOverlaysRenderIntoValidObjects(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, filesys.MakeFsOnDisk(), o.dir)
			// A first apply on an empty cluster creates the namespace.
			if ns := r.namespaces["authguard"]; ns == nil || len(r.namespaces) != 1 {
				t.Errorf("namespaces %v; want the one authguard lives in", keys(r.namespaces))
			}
			d := r.deployments["authguard"]
			if d == nil || r.deployments["authguard-gateway"] == nil {
				t.Fatalf("deployments %v", keys(r.deployments))
			}
			if *d.Spec.Replicas != 2 || !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--leader-elect") {
				t.Errorf("the daemon runs %d replicas with args %v; want 2 with --leader-elect", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
			}
			for name, dep := range r.deployments {
				pod := dep.Spec.Template.Spec
				c := pod.Containers[0]
				if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
					t.Errorf("%s may run as root", name)
				}
				if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
					t.Errorf("%s has a writable root filesystem", name)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s has no CPU request or memory limit", name)
				}
				if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.StartupProbe == nil {
					t.Errorf("%s lacks probes", name)
				} else if c.StartupProbe.HTTPGet.Path != c.LivenessProbe.HTTPGet.Path {
					t.Errorf("%s's startup probe asks %s, its liveness probe %s", name, c.StartupProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
				}
				// The replicas spread over nodes; prod insists.
				spread := ""
				for _, tc := range pod.TopologySpreadConstraints {
					if tc.TopologyKey == "kubernetes.io/hostname" && tc.LabelSelector != nil &&
						tc.LabelSelector.MatchLabels["app.kubernetes.io/name"] == dep.Spec.Template.Labels["app.kubernetes.io/name"] {
						spread = string(tc.WhenUnsatisfiable)
					}
				}
				if want := map[string]string{"overlays/dev": "ScheduleAnyway", "overlays/prod": "DoNotSchedule"}[o.dir]; spread != want {
					t.Errorf("%s spreads its replicas over nodes with %q, want %q", name, spread, want)
				}
				if img := c.Image; !regexp.MustCompile(`:[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(img) {
					t.Errorf("%s runs image %s, not a versioned tag", name, img)
				}
				if r.budgets[name] == nil || r.policies[name] == nil {
					t.Errorf("%s has no PodDisruptionBudget or NetworkPolicy", name)
				}
				if _, ok := r.accounts[pod.ServiceAccountName]; !ok {
					t.Errorf("%s runs as service account %q, which is not rendered", name, pod.ServiceAccountName)
				}
				for _, s := range r.services {
					if s.Spec.Selector["app.kubernetes.io/name"] != dep.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
						continue
					}
					for _, p := range s.Spec.Ports {
						if containerPort(c, p.TargetPort.String()) == 0 {
							t.Errorf("service %s targets port %s, which %s does not expose", s.Name, p.TargetPort.String(), name)
						}
					}
				}
			}
			// The daemon may take, renew and read its Lease, and nothing more.
			b := r.bindings["authguard-leader-election"]
			role := r.roles["authguard-leader-election"]
			if b == nil || role == nil || b.RoleRef.Name != role.Name || b.Subjects[0].Name != d.Spec.Template.Spec.ServiceAccountName {
				t.Fatalf("no binding of the daemon's service account to the leader-election role")
			}
			rule := role.Rules[0]
			if !slices.Equal(rule.APIGroups, []string{"coordination.k8s.io"}) || !slices.Equal(rule.Resources, []string{"leases"}) || len(role.Rules) != 1 {
				t.Errorf("leader-election role grants %v", role.Rules)
			}
			// The rules ConfigMap is the overlay's, with runbook SEC-010's
			// TTL, under a name without kustomize's content hash: an edit
			// then changes the ConfigMap in place, and the pods reload it,
			// rather than a renamed one rolling the Deployment.
			rulesMap := volume(d.Spec.Template.Spec, "rules").ConfigMap.Name
			if rulesMap != "authguard-rules" {
				t.Errorf("the rules ConfigMap is named %s: an edit would restart the pods instead of reloading", rulesMap)
			}
			set := rulesOf(t, r, rulesMap)
			for _, rule := range set.Config.Rules {
				if rule.Name == "failed-login-burst" && rule.BlockTTL != o.ttl {
					t.Errorf("failed-login-burst blocks for %s, want %s", rule.BlockTTL, o.ttl)
				}
			}
		})
	}
}

// The base's rules are the embedded defaults, so they cannot drift apart.
func TestBaseRulesAreTheDefaults(t *testing.T) {
	base, err := os.ReadFile("base/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def, err := os.ReadFile("../rules/examples/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(base, def) {
		t.Error("deploy/base/rules.yaml differs from rules/examples/default.yaml: copy it over")
	}
}

// The component adds a ServiceMonitor that scrapes both deployments'
// metrics ports.
func TestServiceMonitorComponent(t *testing.T) {
	r := renderWith(t, "servicemonitor")
	sm := r.monitors["authguard"]
	if sm == nil {
		t.Fatalf("no ServiceMonitor rendered")
	}
	for _, name := range []string{"authguard", "authguard-gateway"} {
		svc := r.services[name]
		if sm.Namespace != svc.Namespace {
			t.Errorf("the ServiceMonitor is in namespace %q, service %s in %q: it selects only its own namespace's", sm.Namespace, name, svc.Namespace)
		}
		matched := false
		for _, e := range sm.Spec.Selector.MatchExpressions {
			matched = matched || (e.Key == "app.kubernetes.io/name" && e.Operator == "In" && slices.Contains(e.Values, svc.Labels["app.kubernetes.io/name"]))
		}
		if !matched {
			t.Errorf("the ServiceMonitor does not select service %s (labels %v)", name, svc.Labels)
		}
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, p := range svc.Spec.Ports {
				found = found || p.Name == ep.Port
			}
			if !found || ep.Path != "/metrics" {
				t.Errorf("endpoint %s%s is not a metrics port of %s", ep.Port, ep.Path, name)
			}
		}
	}
}

// With components/ingress the login service is reached through the
// gateway and, of the daemon, only Slack's interactions path on its Slack
// port is exposed. Only the ingress controller may connect to either
// port, and the gateway believes X-Forwarded-For from the same range the
// daemon never blocks.
func TestIngressComponent(t *testing.T) {
	r := renderWith(t, "ingress")
	d, gw := r.deployments["authguard"], r.deployments["authguard-gateway"]
	backend := func(name string) (svc *corev1.Service, port int32, paths []networkingv1.HTTPIngressPath) {
		ing := r.ingresses[name]
		if ing == nil {
			t.Fatalf("no Ingress %s among %v", name, keys(r.ingresses))
		}
		for _, rule := range ing.Spec.Rules {
			paths = append(paths, rule.HTTP.Paths...)
		}
		if len(paths) == 0 {
			t.Fatalf("Ingress %s routes nothing", name)
		}
		b := paths[0].Backend.Service
		svc = r.services[b.Name]
		if svc == nil || svc.Namespace != ing.Namespace {
			t.Fatalf("Ingress %s (namespace %s) routes to service %s, which is not beside it", name, ing.Namespace, b.Name)
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == b.Port.Name || (b.Port.Number != 0 && p.Port == b.Port.Number) {
				port = containerPort(d.Spec.Template.Spec.Containers[0], p.TargetPort.String())
				if svc.Name == gw.Name {
					port = containerPort(gw.Spec.Template.Spec.Containers[0], p.TargetPort.String())
				}
			}
		}
		return svc, port, paths
	}
	svc, port, paths := backend("authguard-slack")
	exact := networkingv1.PathTypeExact
	if svc.Name != d.Name || port != 9092 || len(paths) != 1 || paths[0].Path != "/slack/interactions" || *paths[0].PathType != exact {
		t.Errorf("the Slack Ingress routes %v to %s:%d; want exactly /slack/interactions to the daemon's Slack port 9092", paths, svc.Name, port)
	}
	if svc, port, _ := backend("authguard-gateway"); svc.Name != gw.Name || port != 8080 {
		t.Errorf("the login Ingress routes to %s:%d, want the gateway's proxy port 8080", svc.Name, port)
	}
	for policy, port := range map[string]int{"authguard": 9092, "authguard-gateway": 8080} {
		for _, rule := range r.policies[policy].Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port.IntValue() != port {
					continue
				}
				if len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil ||
					rule.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" ||
					rule.From[0].PodSelector == nil || rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "ingress-nginx" {
					t.Errorf("%s's port %d admits %+v, not the ingress controller alone", policy, port, rule.From)
				}
			}
		}
	}
	var daemon struct {
		NeverBlock []string `json:"never-block"`
	}
	var gateway struct {
		TrustedProxies []string `json:"trusted-proxies"`
	}
	cfg := r.configMaps[volume(d.Spec.Template.Spec, "config").ConfigMap.Name]
	if err := yaml.Unmarshal([]byte(cfg.Data["authguard.yaml"]), &daemon); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(cfg.Data["gateway.yaml"]), &gateway); err != nil {
		t.Fatal(err)
	}
	if len(gateway.TrustedProxies) == 0 || !slices.Equal(gateway.TrustedProxies, daemon.NeverBlock) {
		t.Errorf("the gateway trusts %v and the daemon never blocks %v: one block of the proxy would refuse everyone behind it", gateway.TrustedProxies, daemon.NeverBlock)
	}
	for _, c := range gateway.TrustedProxies {
		if p, err := netip.ParsePrefix(c); err != nil || p.Bits() < 12 {
			t.Errorf("the gateway trusts X-Forwarded-For from %s: wider than a pod network", c)
		}
	}
}

// components/redis is the Redis the settings name, on a volume of its
// own, reached only by the daemon and the gateways. (e2e's
// TestRedisExampleKeepsBlocksAcrossACrash runs it.)
func TestRedisComponent(t *testing.T) {
	r := renderWith(t, "redis")
	sts, svc := r.sets["redis"], r.services["redis"]
	if sts == nil || svc == nil {
		t.Fatalf("statefulsets %v, services %v", keys(r.sets), keys(r.services))
	}
	cfg := r.configMaps[volume(r.deployments["authguard"].Spec.Template.Spec, "config").ConfigMap.Name]
	for _, file := range []string{"authguard.yaml", "gateway.yaml"} {
		var settings struct {
			Redis struct {
				URL string `json:"url"`
			} `json:"redis"`
		}
		if err := yaml.Unmarshal([]byte(cfg.Data[file]), &settings); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("redis://%s.%s.svc.cluster.local:%d/0", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port); settings.Redis.URL != want {
			t.Errorf("%s's redis url is %s; the component's Redis is %s", file, settings.Redis.URL, want)
		}
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("the Redis keeps its data on %v, not a volume of its own", sts.Spec.VolumeClaimTemplates)
	}
	if cm := volume(sts.Spec.Template.Spec, "config").ConfigMap; cm == nil || r.configMaps[cm.Name] == nil {
		t.Errorf("the Redis's redis.conf ConfigMap is not rendered")
	}
	var from []string
	for _, rule := range r.policies["redis"].Spec.Ingress {
		for _, peer := range rule.From {
			from = append(from, peer.PodSelector.MatchLabels["app.kubernetes.io/name"])
		}
	}
	if slices.Sort(from); !slices.Equal(from, []string{"authguard", "authguard-gateway"}) {
		t.Errorf("the Redis admits %v; want the daemon and the gateways alone", from)
	}
}

// renderWith renders overlays/prod with a component added, as an overlay
// of a user's would.
func renderWith(t *testing.T, component string) *rendered {
	t.Helper()
	fsys, dir := withComponent(t, component)
	return render(t, fsys, dir)
}

// withComponent is the deploy tree in memory with an overlay of
// overlays/prod and component, and that overlay's directory.
func withComponent(t *testing.T, component string) (filesys.FileSystem, string) {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return fsys.WriteFile(filepath.Join("/deploy", path), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	fsys.WriteFile("/deploy/overlays/mine/kustomization.yaml", []byte(
		"resources: [../prod]\ncomponents: [../../components/"+component+"]\n"))
	return fsys, "/deploy/overlays/mine"
}

// With components/direct-push the gateways push to the daemon's receiver
// with the shared token; only the gateway pods and pods labelled as push
// clients may connect to it; and the command lines pass --check-config.
func TestDirectPushComponent(t *testing.T) {
	r := renderWith(t, "direct-push")
	d, gw := r.deployments["authguard"], r.deployments["authguard-gateway"]
	if *d.Spec.Replicas != 1 {
		t.Errorf("the daemon runs %d replicas; pushes reach only the leader", *d.Spec.Replicas)
	}
	var pushURL string
	for _, a := range gw.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--loki-push-url="); ok {
			pushURL = v
		}
	}
	svc := r.services["authguard"]
	var servicePort int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "http-push" && containerPort(d.Spec.Template.Spec.Containers[0], p.TargetPort.String()) == 9093 {
			servicePort = p.Port
		}
	}
	if want := fmt.Sprintf("http://%s:%d", svc.Name, servicePort); pushURL != want || servicePort == 0 {
		t.Errorf("the gateway pushes to %q, want %q (the daemon's push port)", pushURL, want)
	}
	for _, rule := range r.policies["authguard"].Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() != 9093 {
				continue
			}
			if len(rule.From) == 0 {
				t.Fatal("any pod may connect to the push receiver")
			}
			for _, peer := range rule.From {
				gateway := peer.PodSelector != nil && peer.PodSelector.MatchLabels["app.kubernetes.io/name"] == "authguard-gateway" && peer.NamespaceSelector == nil
				shipper := peer.PodSelector != nil && peer.PodSelector.MatchLabels["authguard.io/push-client"] == "true"
				if !gateway && !shipper {
					t.Errorf("the push receiver admits %+v", peer)
				}
			}
		}
	}
	egress := false
	for _, rule := range r.policies["authguard-gateway"].Spec.Egress {
		for _, p := range rule.Ports {
			egress = egress || p.Port.IntValue() == 9093
		}
	}
	if !egress {
		t.Error("the gateway's NetworkPolicy does not let it reach the push receiver")
	}
	checkAgainstBinaries(t, buildBinaries(t), secretTemplate(t), r)
}

// The containers' args, mounted files and probes are those of the real
// binaries: each container's command line is run with --check-config
// against its mounts laid out in a temporary directory, its rules pass
// `authguard rules lint`, and the probes' paths answer on a running binary.
// So it is with every key of the Secret template, each reaching the
// binaries, and with the audit key alone (a Redis without a password and
// no Slack): no mount or variable needs another key, and the binaries say
// that pages go to the log and Redis is used without a password.
func TestManifestsMatchTheBinaries(t *testing.T) {
	bin := buildBinaries(t)
	for _, c := range []struct {
		secret string
		with   *corev1.Secret
		say    map[string][]string
	}{
		{"every key of the template", secretTemplate(t), map[string][]string{
			"authguard":         {"(password from AUTHGUARD_REDIS_PASSWORD)", "slack: bot token", "buttons on :9092"},
			"authguard-gateway": {"(password from AUTHGUARD_REDIS_PASSWORD)"},
		}},
		{"only the audit key", onlyAuditKey(t), map[string][]string{
			"authguard":         {"(no password)", "slack: none (pages on stdout), no buttons"},
			"authguard-gateway": {"(no password)"},
		}},
	} {
		for _, o := range overlays {
			t.Run(o.dir+" with "+c.secret, func(t *testing.T) {
				printed := checkAgainstBinaries(t, bin, c.with, render(t, filesys.MakeFsOnDisk(), o.dir))
				for name, want := range c.say {
					for _, w := range want {
						if !strings.Contains(printed[name], w) {
							t.Errorf("with %s in the Secret, %s's --check-config does not say %q:\n%s", c.secret, name, w, printed[name])
						}
					}
				}
			})
		}
	}
}

// onlyAuditKey is the Secret of a setup with neither Slack nor a Redis
// password: the template's one required key.
func onlyAuditKey(t *testing.T) *corev1.Secret {
	s := secretTemplate(t)
	s.StringData = map[string]string{"audit-signing-key": s.StringData["audit-signing-key"]}
	return s
}

// checkAgainstBinaries runs every rendered container's command line with
// --check-config against its mounts laid out in a temporary directory and
// its environment as the kubelet sets it from secret, lints its rules and
// asks its probes. It returns what --check-config printed, by Deployment.
func checkAgainstBinaries(t *testing.T, bin string, secret *corev1.Secret, r *rendered) map[string]string {
	t.Helper()
	printed := map[string]string{}
	for name, dep := range r.deployments {
		pod := dep.Spec.Template.Spec
		c := pod.Containers[0]
		root := t.TempDir()
		lay := func(mountPath string, files map[string]string) {
			for k, v := range files {
				p := filepath.Join(root, mountPath, k)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte(v), 0o600)
			}
		}
		var mounts []string
		for _, vm := range c.VolumeMounts {
			mounts = append(mounts, vm.MountPath)
		}
		// Paths in args and in mounted files point into root.
		relocate := func(s string) string {
			for _, m := range mounts {
				s = strings.ReplaceAll(s, m, filepath.Join(root, m))
			}
			return s
		}
		for _, vm := range c.VolumeMounts {
			v := volume(pod, vm.Name)
			switch {
			case v == nil:
				t.Fatalf("%s mounts volume %s, which the pod lacks", name, vm.Name)
			case v.ConfigMap != nil:
				cm := r.configMaps[v.ConfigMap.Name]
				if cm == nil {
					t.Fatalf("%s mounts ConfigMap %s, which is not rendered", name, v.ConfigMap.Name)
				}
				files := map[string]string{}
				for k, data := range cm.Data {
					files[k] = relocate(data)
				}
				lay(vm.MountPath, files)
			case v.Secret != nil:
				if v.Secret.SecretName != secret.Name {
					t.Fatalf("%s mounts Secret %s; the template is %s", name, v.Secret.SecretName, secret.Name)
				}
				files := map[string]string{}
				for k, data := range secret.StringData {
					files[k] = data
				}
				if len(v.Secret.Items) > 0 {
					files = map[string]string{}
					for _, it := range v.Secret.Items {
						data, ok := secret.StringData[it.Key]
						if !ok && (v.Secret.Optional == nil || !*v.Secret.Optional) {
							t.Errorf("%s mounts key %s, which the Secret lacks: the pod would not start", name, it.Key)
						}
						files[it.Path] = data
					}
				}
				lay(vm.MountPath, files)
			}
		}
		binary := filepath.Join(bin, "authguard")
		if name == "authguard-gateway" {
			binary = filepath.Join(bin, "authguard-gateway")
		}
		var args []string
		for _, a := range c.Args {
			args = append(args, relocate(a))
		}
		env := podEnv(t, name, c, secret)
		check := exec.Command(binary, append(args, "--check-config")...)
		check.Env = env
		out, err := check.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "configuration OK") {
			t.Errorf("%s's command line fails --check-config: %v\n%s", name, err, out)
		}
		printed[name] = string(out)
		if name == "authguard" {
			for _, rulesFile := range argFiles(args, "--rules") {
				if out, err := exec.Command(binary, "rules", "lint", rulesFile).CombinedOutput(); err != nil {
					t.Errorf("authguard rules lint %s: %v\n%s", rulesFile, err, out)
				}
			}
		}
		checkProbes(t, binary, name, args, env, c)
	}
	return printed
}

// podEnv is the environment the kubelet gives container c with secret:
// only what the spec sets (nothing of the test's own), a key an optional
// reference finds missing left unset.
func podEnv(t *testing.T, name string, c corev1.Container, secret *corev1.Secret) []string {
	t.Helper()
	env := []string{"HOME=/nonexistent"}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			env = append(env, e.Name+"="+name+"-5d9c7b8f4-x2x9q")
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != secret.Name {
				t.Errorf("%s reads %s from Secret %s; the Secret is %s", name, e.Name, ref.Name, secret.Name)
			}
			v, ok := secret.StringData[ref.Key]
			switch {
			case ok:
				env = append(env, e.Name+"="+v)
			case ref.Optional == nil || !*ref.Optional:
				t.Errorf("%s reads %s from key %s, which the Secret lacks: the pod would not start", name, e.Name, ref.Key)
			}
		default:
			t.Errorf("%s sets %s from a source this test does not lay out", name, e.Name)
		}
	}
	return env
}

// checkProbes runs the binary with the container's args, its listeners
// moved to free local ports (and without leader election, which needs a
// cluster), and asks the probes' paths: liveness must answer 200, and
// readiness must be served (this test gives it no Redis or Loki).
func checkProbes(t *testing.T, binary, name string, args, env []string, c corev1.Container) {
	t.Helper()
	listenFlag := map[string]string{} // container port number -> the flag that sets it
	flags := map[string]string{"9090": "--listen", "9092": "--slack-listen", "9093": "--push-listen", "8080": "--listen", "9091": "--admin-listen"}
	if name == "authguard" {
		delete(flags, "8080")
	} else {
		delete(flags, "9090")
	}
	for _, p := range c.Ports {
		f, ok := flags[fmt.Sprint(p.ContainerPort)]
		if !ok {
			t.Errorf("%s exposes port %d, which no listener of the binary uses by default", name, p.ContainerPort)
			continue
		}
		listenFlag[fmt.Sprint(p.ContainerPort)] = f
	}
	local := map[string]string{} // container port number -> local address
	run := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--leader-elect" })
	for port, f := range listenFlag {
		addr := freeAddr(t)
		local[port] = addr
		run = append(run, f+"="+addr)
	}
	cmd := exec.Command(binary, run...)
	cmd.Env = env
	out := &lockedBuffer{written: make(chan struct{}, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	// Both binaries log "... running" once their listeners are bound.
	deadline := time.After(20 * time.Second)
	for !strings.Contains(out.String(), " running") {
		select {
		case <-out.written:
		case <-exited:
			t.Errorf("%s exited before it served its probes:\n%s", name, out.String())
			return
		case <-deadline:
			t.Errorf("%s did not start within 20 s:\n%s", name, out.String())
			return
		}
	}
	for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		port := containerPort(c, p.HTTPGet.Port.String())
		url := "http://" + local[fmt.Sprint(port)] + p.HTTPGet.Path
		var status int
		if resp, err := http.Get(url); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		switch {
		case status == 0:
			t.Errorf("%s %s probe %s: nothing answered\n%s", name, kind, url, out.String())
		case kind != "readiness" && status != http.StatusOK:
			t.Errorf("%s liveness probe %s answered %d", name, url, status)
		case status == http.StatusNotFound:
			t.Errorf("%s readiness probe %s is not served", name, url)
		}
	}
}

// lockedBuffer is a process's output, safe to read while it runs; written
// signals each write.
type lockedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.written <- struct{}{}:
	default: // a signal is already waiting
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func volume(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// containerPort resolves a probe's or service's port, by name or number.
func containerPort(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

func argFiles(args []string, flag string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func rulesOf(t *testing.T, r *rendered, name string) *rules.Set {
	t.Helper()
	cm := r.configMaps[name]
	if cm == nil {
		t.Fatalf("no ConfigMap %s among %v", name, keys(r.configMaps))
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(path, []byte(cm.Data["rules.yaml"]), 0o644)
	set, err := rules.Load(path)
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", name, err)
	}
	return set
}

func secretTemplate(t *testing.T) *corev1.Secret {
	t.Helper()
	data, err := os.ReadFile("base/secret.template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		t.Fatalf("secret template: %v", err)
	}
	return &s
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds both binaries with the very command the
// Dockerfile's build stage runs (docker itself is not needed).
// copyContext copies the tree at root to dir as `docker build` sends it
// as the build context: without what root's .dockerignore excludes.
func copyContext(root, dir string) error {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if excluded, err := pm.MatchesOrParentMatches(rel); err != nil || excluded {
			if excluded && d.IsDir() {
				return filepath.SkipDir
			}
			return err
		}
		to := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		df, err := os.ReadFile("Dockerfile")
		if err != nil {
			buildErr = err
			return
		}
		m := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0) go build (.*) -o /out/ (.*)$`).FindStringSubmatch(string(df))
		if m == nil {
			buildErr = fmt.Errorf("the Dockerfile has no `RUN CGO_ENABLED=0 go build ... -o /out/ ...` line")
			return
		}
		dir, err := os.MkdirTemp("", "authguard-deploy-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		// In the build context docker sends: what .dockerignore lets by.
		context := filepath.Join(dir, "context")
		if buildErr = copyContext("..", context); buildErr != nil {
			return
		}
		args := append([]string{"build"}, splitArgs(m[2])...)
		args = append(args, "-o", dir+"/")
		args = append(args, strings.Fields(m[3])...)
		cmd := exec.Command("go", args...)
		cmd.Dir = context
		cmd.Env = append(os.Environ(), m[1])
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// splitArgs splits a shell word list with single quotes, as in
// -ldflags='-s -w'.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// The image's binaries are static: built as the Dockerfile builds them,
// they have no program interpreter and run on their own.
func TestDockerfileBuildsStaticBinaries(t *testing.T) {
	bin := buildBinaries(t)
	for _, name := range []string{"authguard", "authguard-gateway"} {
		f, err := elf.Open(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked", name)
			}
		}
		f.Close()
	}
	out, err := exec.Command(filepath.Join(bin, "authguard"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "authguard") {
		t.Errorf("authguard version: %v\n%s", err, out)
	}
	// The context docker sends holds none of the history, earlier
	// binaries or test output (83 MB of bin/ and .git before).
	var size int64
	filepath.WalkDir(filepath.Join(bin, "context"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			t.Errorf("the build context holds %s", path)
		}
		if fi, err := d.Info(); err == nil && !d.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	t.Logf("build context: %.1f MB", float64(size)/1e6)
	df, _ := os.ReadFile("Dockerfile")
	// The image's Go is the module's: the binaries built there are those
	// the tests ran.
	gomod, _ := os.ReadFile("../go.mod")
	if v := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod); v == nil || !strings.Contains(string(df), "FROM golang:"+string(v[1])+" ") {
		t.Errorf("the Dockerfile does not build with go.mod's Go release (%s)", v)
	}
	// The pod's args start with the subcommand, so the entrypoint is the
	// bare binary.
	for _, want := range []string{"USER 65532:65532", "distroless/static", `ENTRYPOINT ["/authguard"]`, `ENTRYPOINT ["/authguard-gateway"]`} {
		if !strings.Contains(string(df), want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}
