package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const kubeDir = "kubernetes"

// strictDecoder decodes YAML into the official API types the way the API
// server's strict field validation does: unknown kinds, unknown fields and
// duplicate fields are errors.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, batchv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// manifests is the rendered kustomization, decoded.
type manifests struct {
	deployment  *appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdb         *policyv1.PodDisruptionBudget
	netpol      *networkingv1.NetworkPolicy
	namespace   *corev1.Namespace
	all         []runtime.Object
	namespaceOf map[runtime.Object]string
}

// render builds the kustomization as `kubectl apply -k` would (kustomize's
// own library) and decodes every object strictly.
func render(t *testing.T) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), kubeDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", kubeDir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	dec := strictDecoder(t)
	m := &manifests{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}, namespaceOf: map[runtime.Object]string{}}
	for i, doc := range splitYAML(out) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("rendered object %d (%v): %v\n%s", i, gvk, err, doc)
		}
		m.all = append(m.all, obj)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployment = o
			m.namespaceOf[o] = o.Namespace
		case *corev1.Service:
			m.services[o.Name] = o
			m.namespaceOf[o] = o.Namespace
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
			m.namespaceOf[o] = o.Namespace
		case *policyv1.PodDisruptionBudget:
			m.pdb = o
			m.namespaceOf[o] = o.Namespace
		case *networkingv1.NetworkPolicy:
			m.netpol = o
			m.namespaceOf[o] = o.Namespace
		case *corev1.Namespace:
			m.namespace = o
		default:
			t.Errorf("unexpected object %v", gvk)
		}
	}
	if m.deployment == nil || m.pdb == nil || m.netpol == nil || m.namespace == nil || len(m.services) == 0 {
		t.Fatalf("the kustomization lacks a Deployment, Services, a PodDisruptionBudget, a NetworkPolicy or the Namespace")
	}
	return m
}

func TestKubernetesDecoderIsStrict(t *testing.T) {
	// The negative control: what the strict decoder must refuse.
	dec := strictDecoder(t)
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  typo: 1\n",
		"misspelled case": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  Type: ClusterIP\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n",
		"wrong type":      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: three\n",
		"unknown kind":    "apiVersion: v1\nkind: Sevrice\nmetadata: {name: x}\n",
		"wrong group":     "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil {
				t.Errorf("decoded without error:\n%s", doc)
			}
		})
	}
}

// TestKubernetesFilesDecodeStrictly decodes every YAML file in the folder
// on its own: the resources kustomize reads, and the examples it does not.
func TestKubernetesFilesDecodeStrictly(t *testing.T) {
	dec := strictDecoder(t)
	var kz struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(kubeDir, "kustomization.yaml")), &kz); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	decoded := 0
	for _, f := range files {
		base := filepath.Base(f)
		switch base {
		case "kustomization.yaml", "sekisho.yaml", "rules.yaml":
			continue // kustomize's own file, and the ConfigMaps' contents
		}
		if !slices.Contains(kz.Resources, base) && !strings.HasSuffix(base, ".example.yaml") {
			t.Errorf("%s is neither listed in kustomization.yaml nor an *.example.yaml", f)
		}
		for i, doc := range splitYAML(readFile(t, f)) {
			if _, gvk, err := dec.Decode(doc, nil, nil); err != nil {
				t.Errorf("%s document %d (%v): %v", f, i+1, gvk, err)
			}
			decoded++
		}
	}
	if decoded < 7 {
		t.Errorf("decoded only %d objects", decoded)
	}
}

func container(t *testing.T, spec *corev1.PodSpec, name string, init bool) *corev1.Container {
	t.Helper()
	list := spec.Containers
	if init {
		list = spec.InitContainers
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	t.Fatalf("no container %q (init=%v)", name, init)
	return nil
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	t.Fatalf("no volume %q", name)
	return nil
}

func mountOf(c *corev1.Container, vol string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == vol {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesDeployment(t *testing.T) {
	m := render(t)
	d := m.deployment
	pod := &d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels

	for obj, ns := range m.namespaceOf {
		if ns != m.namespace.Name {
			t.Errorf("%T is in namespace %q, not %q", obj, ns, m.namespace.Name)
		}
	}

	// Several replicas, rolled one at a time without losing capacity.
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas: want several, got %v", d.Spec.Replicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update must keep every replica until its successor is ready (maxUnavailable: 0)")
	}
	if !selects(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, podLabels)
	}

	// The restricted Pod Security Standard.
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext: want runAsNonRoot, a non-zero runAsUser and seccomp RuntimeDefault: %+v", psc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("sekisho needs no Kubernetes API token: automountServiceAccountToken: false")
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop ALL", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s: want cpu and memory requests and a memory limit: %+v", c.Name, c.Resources)
		}
		// Third-party images are pinned to a version. (sekisho's own tag is
		// set in kustomization.yaml, once releases are published.)
		if c.Name != "sekisho" && (!strings.Contains(path.Base(c.Image), ":") || strings.HasSuffix(c.Image, ":latest")) {
			t.Errorf("container %s: image %s is not pinned to a version", c.Name, c.Image)
		}
	}

	// sekisho: its arguments, ports and probes agree with its configuration.
	s := container(t, pod, "sekisho", false)
	if !strings.HasPrefix(s.Image, "ghcr.io/sekisho/sekisho:") {
		t.Errorf("sekisho image %s has no tag (kustomization.yaml images:)", s.Image)
	}
	if len(s.Args) != 3 || s.Args[0] != "run" || s.Args[1] != "--config" {
		t.Fatalf("sekisho args %q: want [run --config FILE]", s.Args)
	}
	cfgFile := s.Args[2]
	cfgMount := mountOf(s, "config")
	if cfgMount == nil || path.Join(cfgMount.MountPath, "sekisho.yaml") != cfgFile {
		t.Fatalf("the config volume is not mounted where %s is", cfgFile)
	}
	cfgMap := m.configMaps[volume(t, pod, "config").ConfigMap.Name]
	if cfgMap == nil || cfgMap.Data["sekisho.yaml"] == "" {
		t.Fatal("the config volume's ConfigMap does not hold sekisho.yaml")
	}
	if cfgMap.Name == "sekisho-config" {
		t.Error("the configuration's ConfigMap should get a hash suffix, so that a change rolls the pods")
	}
	cfgPath := filepath.Join(t.TempDir(), "sekisho.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgMap.Data["sekisho.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := loadSekishoConfig(t, cfgPath)

	ports := map[string]int32{}
	for _, p := range s.Ports {
		ports[p.Name] = p.ContainerPort
	}
	listen := cfg.listenAddrs()
	if len(listen) != 1 {
		t.Fatalf("sekisho.yaml: want one listen address, got %v", listen)
	}
	lh, lp := hostPort(t, "listen", listen[0])
	ah, ap := hostPort(t, "admin_listen", cfg.AdminListen)
	if !wildcard(lh) || !wildcard(ah) {
		t.Errorf("sekisho.yaml: listen %s and admin_listen %s must accept connections on the pod's address", listen[0], cfg.AdminListen)
	}
	if fmt.Sprint(ports["proxy"]) != lp || fmt.Sprint(ports["admin"]) != ap {
		t.Errorf("container ports %v do not match listen %s and admin_listen %s", ports, listen[0], cfg.AdminListen)
	}
	probe := func(name string, p *corev1.Probe, wantPath string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an HTTP probe of %s", name, wantPath)
			return
		}
		if p.HTTPGet.Path != wantPath || p.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s: probes %s on %s, want %s on the admin port", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath)
		}
	}
	probe("readinessProbe", s.ReadinessProbe, "/readyz")
	probe("livenessProbe", s.LivenessProbe, "/healthz")
	probe("startupProbe", s.StartupProbe, "/healthz")

	// Shutdown: the preStop pause plus sekisho's drain fit in the grace
	// period.
	drain := 30 * time.Second // limits.shutdown_timeout's default
	var pause time.Duration
	if s.Lifecycle != nil && s.Lifecycle.PreStop != nil && s.Lifecycle.PreStop.Sleep != nil {
		pause = time.Duration(s.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	} else {
		t.Error("sekisho: want a preStop sleep, so the load balancer stops sending before the listener closes")
	}
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || time.Duration(*grace)*time.Second <= pause+drain {
		t.Errorf("terminationGracePeriodSeconds %v does not cover preStop %s + drain %s", grace, pause, drain)
	}

	// Rules: a ConfigMap with a stable name (updated in place, so that
	// sekisho's hot reload sees Kubernetes' ..data swap), mounted where
	// sekisho.yaml says the rules are.
	rulesVol := volume(t, pod, "rules")
	if rulesVol.ConfigMap == nil || rulesVol.ConfigMap.Name != "sekisho-rules" {
		t.Errorf("rules volume: want the ConfigMap sekisho-rules without a hash suffix, got %+v", rulesVol.VolumeSource)
	}
	rulesMap := m.configMaps["sekisho-rules"]
	if rulesMap == nil || rulesMap.Data["rules.yaml"] == "" {
		t.Fatal("no ConfigMap sekisho-rules holding rules.yaml")
	}
	if rm := mountOf(s, "rules"); rm == nil || rm.MountPath != cfg.Rules || rm.SubPath != "" {
		t.Errorf("sekisho.yaml reads rules from %s; the rules volume must be mounted there as a whole folder (a subPath mount never sees updates): %+v", cfg.Rules, rm)
	}
	for _, vm := range s.VolumeMounts {
		if vm.SubPath != "" {
			t.Errorf("mount %s uses subPath: Kubernetes never updates those", vm.Name)
		}
	}

	// The CA: the Secret's tls.crt/tls.key as ca.crt/ca.key, owner- and
	// group-readable only.
	ca := volume(t, pod, "ca")
	if ca.Secret == nil || ca.Secret.SecretName != "sekisho-ca" {
		t.Fatalf("ca volume: want the Secret sekisho-ca, got %+v", ca.VolumeSource)
	}
	items := map[string]string{}
	for _, it := range ca.Secret.Items {
		items[it.Key] = it.Path
	}
	if items["tls.crt"] != "ca.crt" || items["tls.key"] != "ca.key" {
		t.Errorf("ca volume items %v: want tls.crt→ca.crt, tls.key→ca.key (the layout tls.ca_dir reads)", items)
	}
	if ca.Secret.DefaultMode == nil || *ca.Secret.DefaultMode&0o007 != 0 {
		t.Errorf("ca volume: the key must not be readable by others (defaultMode %v)", ca.Secret.DefaultMode)
	}
	if mountOf(s, "ca") == nil {
		t.Error("the CA is not mounted into sekisho")
	}

	// The geo database: geoipupdate (init and sidecar) writes the edition
	// sekisho.yaml names into the volume sekisho reads it from.
	geoDir, geoFile := path.Split(cfg.Geo.Database)
	gm := mountOf(s, "geoip")
	if gm == nil || path.Clean(gm.MountPath) != path.Clean(geoDir) || !gm.ReadOnly {
		t.Errorf("sekisho.yaml reads %s; the geoip volume must be mounted read-only at %s: %+v", cfg.Geo.Database, geoDir, gm)
	}
	if volume(t, pod, "geoip").EmptyDir == nil {
		t.Error("the geoip volume should be an emptyDir shared by sekisho and geoipupdate")
	}
	for _, gu := range []struct {
		name      string
		init      bool
		frequency string
	}{{"geoipupdate-init", true, "0"}, {"geoipupdate", false, ""}} {
		c := container(t, pod, gu.name, gu.init)
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if !slices.Contains(strings.Fields(env["GEOIPUPDATE_EDITION_IDS"]), strings.TrimSuffix(geoFile, ".mmdb")) {
			t.Errorf("%s downloads %q, but sekisho reads %s", gu.name, env["GEOIPUPDATE_EDITION_IDS"], geoFile)
		}
		if um := mountOf(c, "geoip"); um == nil || path.Clean(um.MountPath) != path.Clean(env["GEOIPUPDATE_DB_DIR"]) {
			t.Errorf("%s writes to %s, where the geoip volume is not mounted", gu.name, env["GEOIPUPDATE_DB_DIR"])
		}
		if gu.frequency != "" && env["GEOIPUPDATE_FREQUENCY"] != gu.frequency {
			t.Errorf("%s: GEOIPUPDATE_FREQUENCY %q: the init container must run once (0)", gu.name, env["GEOIPUPDATE_FREQUENCY"])
		}
		if !gu.init && (env["GEOIPUPDATE_FREQUENCY"] == "" || env["GEOIPUPDATE_FREQUENCY"] == "0") {
			t.Errorf("%s: the sidecar must repeat (GEOIPUPDATE_FREQUENCY hours)", gu.name)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "geoipupdate" {
			t.Errorf("%s: want the MaxMind account from the Secret geoipupdate", gu.name)
		}
	}

	// Services: the proxy for clients keeps their addresses; the admin
	// port is never in a LoadBalancer.
	proxySvc := m.services["sekisho"]
	if proxySvc == nil {
		t.Fatal("no Service sekisho")
	}
	if proxySvc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Error("Service sekisho: externalTrafficPolicy must be Local, or every client appears as a node's address and clients.allow and client groups see nobody")
	}
	for name, svc := range m.services {
		if !selects(svc.Spec.Selector, podLabels) {
			t.Errorf("Service %s selects %v, not sekisho's pods %v", name, svc.Spec.Selector, podLabels)
		}
		for _, p := range svc.Spec.Ports {
			if _, ok := ports[p.TargetPort.StrVal]; p.TargetPort.Type != intstr.String || !ok {
				t.Errorf("Service %s port %s targets %s, not a named container port", name, p.Name, p.TargetPort.String())
			}
			if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && p.TargetPort.StrVal == "admin" {
				t.Errorf("Service %s exposes the unauthenticated admin port outside the cluster", name)
			}
		}
	}
	if admin := m.services["sekisho-admin"]; admin == nil || admin.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Error("want a ClusterIP Service sekisho-admin for Prometheus")
	}

	// The PodDisruptionBudget leaves most replicas running.
	pdb := m.pdb.Spec
	if !selects(pdb.Selector.MatchLabels, podLabels) {
		t.Errorf("the PodDisruptionBudget selects %v, not sekisho's pods", pdb.Selector.MatchLabels)
	}
	switch {
	case pdb.MaxUnavailable != nil:
		if pdb.MaxUnavailable.IntValue() < 1 || int32(pdb.MaxUnavailable.IntValue()) >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget maxUnavailable %s with %d replicas", pdb.MaxUnavailable.String(), *d.Spec.Replicas)
		}
	case pdb.MinAvailable != nil:
		if n := int32(pdb.MinAvailable.IntValue()); n < 1 || n >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget minAvailable %s with %d replicas blocks drains or protects nothing", pdb.MinAvailable.String(), *d.Spec.Replicas)
		}
	default:
		t.Error("the PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}

	// The NetworkPolicy lets clients reach the proxy and limits the admin.
	np := m.netpol.Spec
	if !selects(np.PodSelector.MatchLabels, podLabels) {
		t.Errorf("the NetworkPolicy selects %v, not sekisho's pods", np.PodSelector.MatchLabels)
	}
	var proxyOpen, adminLimited bool
	for _, rule := range np.Ingress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.StrVal == "proxy" && len(rule.From) == 0 {
				proxyOpen = true
			}
			if p.Port != nil && p.Port.StrVal == "admin" && len(rule.From) > 0 {
				adminLimited = true
			}
		}
	}
	if !proxyOpen || !adminLimited {
		t.Errorf("NetworkPolicy: want the proxy port open to clients and the admin port limited (open=%v limited=%v)", proxyOpen, adminLimited)
	}

	if m.namespace.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("the namespace should enforce the restricted Pod Security Standard, which sekisho's pods meet")
	}
}

// TestKubernetesConfigMapReload: the ConfigMap's volume layout Kubernetes
// produces ("..data" → "..TIMESTAMP/", rules.yaml → "..data/rules.yaml")
// is the one cmd/sekisho's TestRulesReloadConfigMapSwap reloads from; this
// only guards that the test is still there.
func TestKubernetesConfigMapReload(t *testing.T) {
	src := readFile(t, filepath.Join(repo, "cmd/sekisho/main_test.go"))
	if !bytes.Contains(src, []byte("func TestRulesReloadConfigMapSwap(")) || !bytes.Contains(src, []byte(`"..data"`)) {
		t.Error("cmd/sekisho lost TestRulesReloadConfigMapSwap, which proves that the rules ConfigMap reloads")
	}
}
