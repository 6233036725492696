package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
)

// manifests decodes every document of deploy/kubernetes/*.yaml into its
// Kubernetes (or prometheus-operator) API type, by apiVersion and kind, as
// the API server's strict field validation would: an unknown or duplicate
// field, an unknown kind or a value of the wrong type fails.
func manifests(t *testing.T) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []runtime.Object
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(bytes.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAll(doc, nil))) == 0 {
				continue // comments only
			}
			obj, gvk, err := strict.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v", file, i+1, err)
				continue
			}
			acc, ok := obj.(metav1.Object)
			if !ok {
				t.Errorf("%s: %v has no metadata", file, gvk)
				continue
			}
			om := &metav1.ObjectMeta{Name: acc.GetName(), Namespace: acc.GetNamespace(), Labels: acc.GetLabels(), Annotations: acc.GetAnnotations()}
			for _, e := range apivalidation.ValidateObjectMeta(om, false, apivalidation.NameIsDNSSubdomain, field.NewPath(gvk.Kind, "metadata")) {
				t.Errorf("%s: %v", file, e)
			}
			if acc.GetLabels()["app.kubernetes.io/name"] != "tokenkeeper" {
				t.Errorf("%s: %s %s lacks the label app.kubernetes.io/name=tokenkeeper", file, gvk.Kind, acc.GetName())
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

// one returns the single object of type T among objs.
func one[T runtime.Object](t *testing.T, objs []runtime.Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0]
}

func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	if sel == nil {
		t.Errorf("%s: no selector", what)
		return false
	}
	for _, e := range metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, field.NewPath(what)) {
		t.Errorf("%v", e)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	if s.Empty() {
		t.Errorf("%s: an empty selector selects everything", what)
		return false
	}
	return s.Matches(labels.Set(podLabels))
}

// secretNames: variables carrying a secret's value itself (as in the
// compose test): their _FILE form must be used instead.
var secretNames = regexp.MustCompile(`_(SECRET|KEY|PASSWORD)(_ENV)?$`)

// TestKubernetesManifests checks deploy/kubernetes against the API types
// and then what an ops review would: three replicas that never share a
// node and keep two through disruptions; probes on the routes httpapi
// serves (liveness independent of Redis) at the port the configuration
// listens on; non-root, read-only, no privilege escalation, no
// capabilities, no service account token; a container environment that
// is a valid configuration whose every secret is a file from a Secret
// volume (one Secret per app, mode 0440, defined in secrets.example.yaml
// with placeholder values); a Service, ServiceMonitor and NetworkPolicy
// that select these pods and open exactly the ports they need.
func TestKubernetesManifests(t *testing.T) {
	objs := manifests(t)
	dep := one[*appsv1.Deployment](t, objs)
	svc := one[*corev1.Service](t, objs)
	pdb := one[*policyv1.PodDisruptionBudget](t, objs)
	sm := one[*monitoringv1.ServiceMonitor](t, objs)
	np := one[*networkingv1.NetworkPolicy](t, objs)
	sa := one[*corev1.ServiceAccount](t, objs)
	secrets := map[string]*corev1.Secret{}
	for _, o := range objs {
		if s, ok := o.(*corev1.Secret); ok {
			secrets[s.Name] = s
			for k, v := range s.StringData {
				if !strings.HasPrefix(v, "REPLACE") {
					t.Errorf("Secret %s key %s holds a value, not a REPLACE placeholder", s.Name, k)
				}
			}
			if len(s.Data) > 0 {
				t.Errorf("Secret %s has data: examples hold placeholders only", s.Name)
			}
		}
	}

	spec := dep.Spec.Template.Spec
	podLabels := dep.Spec.Template.Labels
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", dep.Spec.Replicas)
	}
	if !selects(t, "Deployment.spec.selector", dep.Spec.Selector, podLabels) {
		t.Error("the Deployment's selector does not select its own pods")
	}

	// Anti-affinity: never two replicas on one node.
	var spread bool
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if term.TopologyKey == corev1.LabelHostname && selects(t, "podAntiAffinity", term.LabelSelector, podLabels) {
				spread = true
			}
		}
	}
	if !spread {
		t.Error("no required pod anti-affinity on kubernetes.io/hostname selecting the replicas")
	}

	// The disruption budget keeps a majority through drains.
	if !selects(t, "PodDisruptionBudget.spec.selector", pdb.Spec.Selector, podLabels) {
		t.Error("the PodDisruptionBudget does not select the replicas")
	}
	if m := pdb.Spec.MinAvailable; m == nil || m.Type != intstr.Int || m.IntVal < 2 || m.IntVal >= *dep.Spec.Replicas {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 2..replicas-1", m)
	}

	// Pod and container security.
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.FSGroup == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, a non-zero runAsUser, fsGroup and seccomp RuntimeDefault", psc)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; the refresher calls no Kubernetes API")
	}
	if spec.ServiceAccountName != sa.Name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account %q: want %q, with automountServiceAccountToken false", spec.ServiceAccountName, sa.Name)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, found %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem || csc.AllowPrivilegeEscalation == nil ||
		*csc.AllowPrivilegeEscalation || (csc.Privileged != nil && *csc.Privileged) || csc.Capabilities == nil ||
		!slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		t.Errorf("container securityContext %+v: want read-only root, no privilege escalation, capabilities drop [ALL]", csc)
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q is not pinned", c.Image)
	}

	// The environment is a valid configuration; secrets come from files.
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"=tokenkeeper-6b7f9c-x2x4q")
		case e.ValueFrom != nil:
			t.Errorf("env %s comes from %+v: secrets are files here, and other sources are not expected", e.Name, e.ValueFrom)
		default:
			env = append(env, e.Name+"="+e.Value)
		}
		if secretNames.MatchString(e.Name) {
			t.Errorf("env %s: a secret in the environment; use %s_FILE and a Secret volume", e.Name, strings.TrimSuffix(e.Name, "_ENV"))
		}
		if e.Name != "GOMEMLIMIT" && !strings.HasPrefix(e.Name, config.EnvPrefix) {
			t.Errorf("env %s is not a TOKENKEEPER_ variable", e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("envFrom %+v: every variable is listed, so the configuration test sees it", c.EnvFrom)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	type source struct{ secret, key string }
	read := map[string]source{} // file -> where it comes from
	readFile := func(p string) ([]byte, error) {
		for _, m := range c.VolumeMounts {
			rel, ok := strings.CutPrefix(p, m.MountPath+"/")
			if !ok {
				continue
			}
			v := volumes[m.Name]
			if v.Secret == nil || !m.ReadOnly {
				return nil, fmt.Errorf("%s: volume %s is not a read-only Secret mount", p, m.Name)
			}
			key := rel
			if len(v.Secret.Items) > 0 {
				key = ""
				for _, it := range v.Secret.Items {
					if it.Path == rel {
						key = it.Key
					}
				}
			}
			if key == "" {
				return nil, fmt.Errorf("%s: Secret %s projects no such file", p, v.Secret.SecretName)
			}
			read[p] = source{v.Secret.SecretName, key}
			return []byte("content-of-" + v.Secret.SecretName + "/" + key + "-0123456789"), nil
		}
		return nil, fmt.Errorf("%s is in no volume mount", p)
	}
	cfg, err := config.Load(config.Options{Environ: env, ReadFile: readFile})
	if err != nil {
		t.Fatalf("the container's environment is not a valid configuration: %v", err)
	}
	if len(cfg.UnusedEnv) > 0 {
		t.Errorf("variables the refresher never reads: %v", cfg.UnusedEnv)
	}
	if !strings.HasPrefix(cfg.HTTP.Addr, "0.0.0.0:") {
		t.Errorf("http.addr %s is not reachable from outside the pod", cfg.HTTP.Addr)
	}
	if len(cfg.HTTP.APIKeys) == 0 {
		t.Error("no API keys: anyone in the cluster could read tokens")
	}
	owner := map[string]string{} // Secret -> what it holds
	fromFile := func(what, from, got string) {
		p := strings.TrimPrefix(from, "file ")
		src, ok := read[p]
		if !strings.HasPrefix(from, "file ") || !ok || got != "content-of-"+src.secret+"/"+src.key+"-0123456789" {
			t.Errorf("%s comes from %q, not from a Secret volume", what, from)
			return
		}
		s := secrets[src.secret]
		if s == nil {
			t.Errorf("%s: Secret %s is not in secrets.example.yaml", what, src.secret)
		} else if _, ok := s.StringData[src.key]; !ok {
			t.Errorf("%s: Secret %s in secrets.example.yaml has no key %q", what, src.secret, src.key)
		}
		if strings.HasPrefix(what, "app ") {
			if prev, shared := owner[src.secret]; shared {
				t.Errorf("%s and %s share Secret %s: one Secret per app", what, prev, src.secret)
			}
		} else if prev, ok := owner[src.secret]; ok && strings.HasPrefix(prev, "app ") {
			t.Errorf("%s shares %s's Secret %s", what, prev, src.secret)
		}
		owner[src.secret] = what
	}
	for _, a := range cfg.Apps {
		fromFile("app "+a.ID, a.SecretFrom, a.Secret.Reveal())
	}
	for _, k := range cfg.HTTP.APIKeys {
		fromFile("API key "+k.Name, k.KeyFrom, k.Key.Reveal())
	}
	fromFile("the Redis password", cfg.Redis.PasswordFrom, cfg.Redis.Password.Reveal())
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if m := v.Secret.DefaultMode; m == nil || *m&0o007 != 0 || *m&0o222 != 0 {
			t.Errorf("volume %s: defaultMode %s, want no access for others and no write (0440)", v.Name, fmtMode(m))
		}
		if _, ok := owner[v.Secret.SecretName]; !ok {
			t.Errorf("volume %s mounts Secret %s, which the configuration never reads", v.Name, v.Secret.SecretName)
		}
	}

	// Ports and probes.
	_, portStr, _ := net.SplitHostPort(cfg.HTTP.Addr)
	port, _ := strconv.Atoi(portStr)
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	portOf := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			return named[p.StrVal]
		}
		return p.IntVal
	}
	for name, tc := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"liveness": {c.LivenessProbe, httpapi.RouteHealthz}, "readiness": {c.ReadinessProbe, httpapi.RouteReadyz},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("no %s httpGet probe", name)
			continue
		}
		if tc.probe.HTTPGet.Path != tc.path || int(portOf(tc.probe.HTTPGet.Port)) != port {
			t.Errorf("%s probe %s on port %v, want %s on %d (http.addr)", name, tc.probe.HTTPGet.Path, tc.probe.HTTPGet.Port.String(), tc.path, port)
		}
		if tc.probe.TimeoutSeconds < 1 || tc.probe.PeriodSeconds < 1 || tc.probe.FailureThreshold < 2 {
			t.Errorf("%s probe %+v: want a timeout, a period and at least 2 failures before acting", name, tc.probe)
		}
	}
	// GOMEMLIMIT below the memory limit.
	limit := c.Resources.Limits[corev1.ResourceMemory]
	if limit.IsZero() || c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resources %+v: want a memory limit and cpu/memory requests", c.Resources)
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
			if err != nil || q.Value() >= limit.Value()*9/10 {
				t.Errorf("GOMEMLIMIT %s (%v) is not below 90%% of the memory limit %s", e.Value, err, limit.String())
			}
		}
	}

	// The Service reaches the replicas' HTTP port.
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Error("the Service does not select the replicas")
	}
	var svcPort string
	for _, p := range svc.Spec.Ports {
		if int(portOf(p.TargetPort)) == port {
			svcPort = p.Name
		}
	}
	if svcPort == "" {
		t.Errorf("no Service port targets the container's port %d", port)
	}

	// The ServiceMonitor scrapes /metrics through that Service port.
	if !selects(t, "ServiceMonitor.spec.selector", &sm.Spec.Selector, svc.Labels) {
		t.Error("the ServiceMonitor does not select the Service")
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svcPort || sm.Spec.Endpoints[0].Path != httpapi.RouteMetrics {
		t.Errorf("ServiceMonitor endpoints %+v: want port %q path %s", sm.Spec.Endpoints, svcPort, httpapi.RouteMetrics)
	}

	// The NetworkPolicy: in, only the API port; out, DNS, Redis, WeChat.
	if !selects(t, "NetworkPolicy.spec.podSelector", &np.Spec.PodSelector, podLabels) {
		t.Error("the NetworkPolicy does not select the replicas")
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("policyTypes %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}
	for _, r := range np.Spec.Ingress {
		if len(r.From) == 0 {
			t.Error("an ingress rule with no from: open to every pod")
		}
		for _, p := range r.Ports {
			if p.Port == nil || int(portOf(*p.Port)) != port {
				t.Errorf("ingress opens port %v, not the API port %d", p.Port, port)
			}
		}
		if len(r.Ports) == 0 {
			t.Error("an ingress rule with no ports opens them all")
		}
	}
	if len(np.Spec.Ingress) == 0 {
		t.Error("no ingress rule: nobody can read tokens")
	}
	_, redisPort, _ := net.SplitHostPort(cfg.Redis.Addrs[0])
	u, _ := url.Parse(cfg.WeChat.BaseURL)
	wechatPort := u.Port()
	if wechatPort == "" && u.Scheme == "https" {
		wechatPort = "443"
	}
	want := map[string]bool{"UDP/53": false, "TCP/" + redisPort: false, "TCP/" + wechatPort: false}
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			if p.Protocol == nil || p.Port == nil {
				t.Errorf("egress rule %+v: name protocol and port", r)
				continue
			}
			k := string(*p.Protocol) + "/" + p.Port.String()
			if _, ok := want[k]; ok {
				want[k] = true
			}
		}
		if len(r.Ports) == 0 {
			t.Errorf("egress rule %+v opens every port", r)
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil && peer.IPBlock.CIDR == "0.0.0.0/0" && !slices.Contains(peer.IPBlock.Except, "10.0.0.0/8") {
				t.Errorf("egress to the whole Internet includes the private ranges: %+v", peer.IPBlock)
			}
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("no egress rule for %s (DNS, Redis at %s, WeChat at %s)", k, cfg.Redis.Addrs[0], path.Join(u.Host))
		}
	}
}

func fmtMode(m *int32) string {
	if m == nil {
		return "unset (0644)"
	}
	return fmt.Sprintf("%#o", *m)
}
