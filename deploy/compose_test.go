package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

const composeFile = "compose/compose.yaml"

// loadCompose loads a compose file as `docker compose` does: the Compose
// specification's own loader, with schema validation (unknown keys are
// errors), interpolation, path resolution and consistency checks. The
// environment is empty, so that ${VAR:-default} takes its default.
func loadCompose(path string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{path},
		cli.WithWorkingDirectory(filepath.Dir(path)),
		cli.WithEnv(nil),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func TestComposeLoaderIsStrict(t *testing.T) {
	// The negative control: the same loader rejects what the Compose
	// specification does not know, so a typo in compose.yaml fails CI.
	for name, text := range map[string]string{
		"unknown service key":   "services:\n  a:\n    image: x\n    portz: [\"80:80\"]\n",
		"unknown top-level key": "servicez:\n  a:\n    image: x\n",
		"bad port":              "services:\n  a:\n    image: x\n    ports: [\"eighty:80\"]\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(path, []byte("name: strict\n"+text), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := loadCompose(path); err == nil {
				t.Errorf("loaded without error:\n%s", text)
			}
		})
	}
}

// mount finds the bind mount of service s with the given target.
func mount(s types.ServiceConfig, target string) *types.ServiceVolumeConfig {
	for i := range s.Volumes {
		if s.Volumes[i].Target == target {
			return &s.Volumes[i]
		}
	}
	return nil
}

// dashboardsLanded reports whether dashboards/ has files yet (another
// issue writes them); until it has, mounts from it are not required to
// exist.
func dashboardsLanded() bool {
	entries, _ := os.ReadDir(filepath.Join(repo, "dashboards"))
	return len(entries) > 0
}

func TestComposeStack(t *testing.T) {
	p, err := loadCompose(composeFile)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	var names []string
	for name := range p.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"grafana", "prometheus", "sekisho"}) {
		t.Fatalf("services %v: want grafana, prometheus, sekisho", names)
	}

	checkBind := func(svc, target, wantSource string, dir bool) {
		t.Helper()
		v := mount(p.Services[svc], target)
		if v == nil {
			t.Errorf("%s: nothing mounted at %s", svc, target)
			return
		}
		if v.Type != types.VolumeTypeBind || v.Source != abs(t, wantSource) {
			t.Errorf("%s: %s is mounted from %s %s, want the bind mount %s", svc, target, v.Type, v.Source, wantSource)
		}
		if !v.ReadOnly {
			t.Errorf("%s: %s should be mounted read-only", svc, target)
		}
		if strings.HasPrefix(filepath.Clean(wantSource), filepath.Join(repo, "dashboards")) && !dashboardsLanded() {
			t.Logf("%s: %s not checked: dashboards/ is still empty", svc, wantSource)
			return
		}
		st, err := os.Stat(wantSource)
		switch {
		case err != nil:
			t.Errorf("%s mounts %s: %v", svc, wantSource, err)
		case st.IsDir() != dir:
			t.Errorf("%s mounts %s: folder=%v, want folder=%v", svc, wantSource, st.IsDir(), dir)
		}
	}

	// sekisho: built from the top-level Dockerfile, configuration folder
	// mounted, proxy published, admin on loopback only.
	s := p.Services["sekisho"]
	if s.Build == nil || s.Build.Context != abs(t, repo) || s.Build.Dockerfile != "Dockerfile" {
		t.Errorf("sekisho: want build from the repository's Dockerfile, got %+v", s.Build)
	}
	checkBind("sekisho", "/etc/sekisho", "compose/sekisho", true)
	cfg := loadSekishoConfig(t, "compose/sekisho/sekisho.yaml")
	if _, err := os.Stat(filepath.Join("compose/sekisho", cfg.Rules)); cfg.Rules == "" || err != nil {
		t.Errorf("compose/sekisho/sekisho.yaml: rules %q is not a file beside it", cfg.Rules)
	}
	var proxyPort string
	for _, l := range cfg.listenAddrs() {
		h, port := hostPort(t, "listen", l)
		if !wildcard(h) {
			t.Errorf("compose/sekisho/sekisho.yaml: listen %s is unreachable from outside the container", l)
		}
		proxyPort = port
	}
	ah, adminPort := hostPort(t, "admin_listen", cfg.AdminListen)
	if !wildcard(ah) {
		t.Errorf("compose/sekisho/sekisho.yaml: admin_listen %s is unreachable for Prometheus", cfg.AdminListen)
	}
	published := map[string]types.ServicePortConfig{}
	for _, port := range s.Ports {
		published[strconv.FormatUint(uint64(port.Target), 10)] = port
	}
	if pp, ok := published[proxyPort]; !ok || pp.Published != proxyPort {
		t.Errorf("sekisho: proxy port %s not published as %s: %+v", proxyPort, proxyPort, s.Ports)
	}
	if ap, ok := published[adminPort]; !ok || ap.HostIP != "127.0.0.1" {
		t.Errorf("sekisho: admin port %s must be published on 127.0.0.1 only (it is unauthenticated): %+v", adminPort, s.Ports)
	}

	// Prometheus: its configuration, sekisho's alert rules where the
	// configuration looks for rule files, and a scrape job for sekisho's
	// admin listener by its service name.
	pr := p.Services["prometheus"]
	var configPath string
	for _, a := range pr.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configPath = v
		}
	}
	if configPath == "" {
		t.Fatal("prometheus: no --config.file in command")
	}
	checkBind("prometheus", configPath, "compose/prometheus.yml", false)
	var prom struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "compose/prometheus.yml"), &prom); err != nil {
		t.Fatal(err)
	}
	alerts := filepath.Join(repo, "dashboards/alerts.yml")
	var alertTarget string
	for _, v := range pr.Volumes {
		if v.Source == abs(t, alerts) {
			alertTarget = v.Target
		}
	}
	if alertTarget == "" {
		t.Errorf("prometheus: dashboards/alerts.yml is not mounted")
	} else {
		checkBind("prometheus", alertTarget, alerts, false)
		loaded := false
		for _, g := range prom.RuleFiles {
			if ok, _ := filepath.Match(g, alertTarget); ok {
				loaded = true
			}
		}
		if !loaded {
			t.Errorf("prometheus.yml rule_files %v do not match %s, where the alert rules are mounted", prom.RuleFiles, alertTarget)
		}
	}
	var scraped bool
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, "sekisho:"+adminPort) {
				scraped = sc.JobName == "sekisho"
			}
		}
	}
	if !scraped {
		t.Errorf("prometheus.yml: no job \"sekisho\" scraping sekisho:%s (the admin listener)", adminPort)
	}

	// Grafana: provisioning and dashboards from the repository's folder.
	checkBind("grafana", "/etc/grafana/provisioning", filepath.Join(repo, "dashboards/provisioning"), true)
	var dashboardsTarget string
	for _, v := range p.Services["grafana"].Volumes {
		if v.Source == abs(t, filepath.Join(repo, "dashboards")) {
			dashboardsTarget = v.Target
		}
	}
	if dashboardsTarget == "" {
		t.Error("grafana: the dashboards/ folder is not mounted")
	} else {
		checkBind("grafana", dashboardsTarget, filepath.Join(repo, "dashboards"), true)
		checkGrafanaProvisioning(t, dashboardsTarget, "prometheus:9090")
	}

	for name, svc := range p.Services {
		if svc.Image == "" {
			t.Errorf("%s: no image", name)
		}
		if svc.Restart == "" {
			t.Errorf("%s: no restart policy", name)
		}
	}
}

// checkGrafanaProvisioning checks, once dashboards/provisioning exists,
// that its dashboard providers read the folder compose mounts the JSON in
// and that its Prometheus data source can reach the compose service.
func checkGrafanaProvisioning(t *testing.T, dashboardsDir, promHost string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(repo, "dashboards/provisioning/*/*.y*ml"))
	if len(files) == 0 {
		t.Log("dashboards/provisioning has no files yet: provider paths not checked")
		return
	}
	for _, f := range files {
		var doc struct {
			Providers []struct {
				Options struct {
					Path string `json:"path"`
				} `json:"options"`
			} `json:"providers"`
			Datasources []struct {
				Type string `json:"type"`
				URL  string `json:"url"`
			} `json:"datasources"`
		}
		if err := yaml.Unmarshal(readFile(t, f), &doc); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, p := range doc.Providers {
			if p.Options.Path != "" && filepath.Clean(p.Options.Path) != dashboardsDir {
				t.Errorf("%s: dashboard provider reads %s, but compose mounts the dashboards at %s", f, p.Options.Path, dashboardsDir)
			}
		}
		for _, d := range doc.Datasources {
			if d.Type == "prometheus" && !strings.Contains(d.URL, promHost) && !strings.Contains(d.URL, "$") {
				t.Errorf("%s: Prometheus data source %s does not reach the compose service %s", f, d.URL, promHost)
			}
		}
	}
}
