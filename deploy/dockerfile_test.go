package deploy

import (
	"encoding/json"
	"go/version"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

func parseDockerfile(t *testing.T, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued line")
	}
	return out
}

// shellWords splits a command line as a POSIX shell would (quotes and
// backslashes; no expansion: ${VERSION} stays as written).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			if i >= len(s) {
				t.Fatalf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// goBuild is one `go build` command: its environment assignments, its
// arguments with the -o value taken out, and that value.
type goBuild struct {
	env    map[string]string
	args   []string
	output string
}

var envAssign = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`)

func parseGoBuild(t *testing.T, where string, words []string) goBuild {
	t.Helper()
	b := goBuild{env: map[string]string{}}
	i := 0
	for ; i < len(words) && envAssign.MatchString(words[i]); i++ {
		k, v, _ := strings.Cut(words[i], "=")
		b.env[k] = v
	}
	if len(words) < i+2 || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("%s: not a go build command: %q", where, words)
	}
	rest := words[i+2:]
	for j := 0; j < len(rest); j++ {
		if rest[j] == "-o" && j+1 < len(rest) {
			b.output = rest[j+1]
			j++
			continue
		}
		b.args = append(b.args, rest[j])
	}
	if b.output == "" {
		t.Fatalf("%s: go build without -o: %q", where, words)
	}
	return b
}

// dockerBuild finds the Dockerfile's go build step.
func dockerBuild(t *testing.T, ins []instruction) goBuild {
	t.Helper()
	var found []goBuild
	for _, in := range ins {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		words := shellWords(t, in.args)
		for len(words) > 0 && strings.HasPrefix(words[0], "--") { // --mount=...
			words = words[1:]
		}
		found = append(found, parseGoBuild(t, "Dockerfile:"+strconv.Itoa(in.line), words))
	}
	if len(found) != 1 {
		t.Fatalf("Dockerfile: want exactly one RUN with go build, found %d", len(found))
	}
	return found[0]
}

// scriptBuild finds build.sh's go build step, between its markers.
func scriptBuild(t *testing.T) goBuild {
	t.Helper()
	text := string(readFile(t, "build.sh"))
	_, after, ok := strings.Cut(text, "# BEGIN build")
	body, _, ok2 := strings.Cut(after, "# END build")
	if !ok || !ok2 {
		t.Fatal("build.sh: no # BEGIN build ... # END build markers")
	}
	var lines []string
	for _, l := range strings.Split(body, "\n")[1:] { // skip the rest of the BEGIN line
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, strings.TrimSuffix(l, `\`))
		}
	}
	return parseGoBuild(t, "build.sh", shellWords(t, strings.Join(lines, " ")))
}

func TestDockerfileBuildMatchesScript(t *testing.T) {
	ins := parseDockerfile(t, string(readFile(t, filepath.Join(repo, "Dockerfile"))))
	docker, script := dockerBuild(t, ins), scriptBuild(t)

	if !slices.Equal(docker.args, script.args) {
		t.Errorf("go build flags differ:\n  Dockerfile: %q\n  build.sh:   %q", docker.args, script.args)
	}
	// The Dockerfile may cross-compile for the image's platform; nothing
	// else in the environment may differ.
	for k, v := range docker.env {
		if k == "GOOS" || k == "GOARCH" {
			continue
		}
		if script.env[k] != v {
			t.Errorf("Dockerfile sets %s=%s, build.sh %s=%q", k, v, k, script.env[k])
		}
	}
	for k, v := range script.env {
		if docker.env[k] != v {
			t.Errorf("build.sh sets %s=%s, the Dockerfile %s=%q", k, v, k, docker.env[k])
		}
	}
	// What the issue asks of the build, whoever edits it next.
	if docker.env["CGO_ENABLED"] != "0" {
		t.Error("the build must set CGO_ENABLED=0 (a static binary for distroless/scratch)")
	}
	for _, want := range []string{"-trimpath", "./cmd/sekisho"} {
		if !slices.Contains(docker.args, want) {
			t.Errorf("the build lacks %s: %q", want, docker.args)
		}
	}
	i := slices.Index(docker.args, "-ldflags")
	if i < 0 || i+1 >= len(docker.args) || !strings.Contains(docker.args[i+1], "-X main.version=${VERSION}") {
		t.Errorf("the build must stamp the version with -ldflags \"-X main.version=${VERSION}\": %q", docker.args)
	}

	// The binary built is the one copied into the runtime image.
	var copied bool
	for _, in := range ins {
		if in.cmd == "COPY" && strings.HasPrefix(in.args, "--from=") {
			if f := strings.Fields(in.args); len(f) == 3 && f[1] == docker.output {
				copied = true
			}
		}
	}
	if !copied {
		t.Errorf("no COPY --from=... %s into the runtime image", docker.output)
	}
}

func TestDockerfileRuntimeImage(t *testing.T) {
	ins := parseDockerfile(t, string(readFile(t, filepath.Join(repo, "Dockerfile"))))
	get := func(cmd string) []instruction {
		var out []instruction
		for _, in := range ins {
			if in.cmd == cmd {
				out = append(out, in)
			}
		}
		return out
	}
	jsonArray := func(in instruction, args string) []string {
		var a []string
		if err := json.Unmarshal([]byte(args), &a); err != nil || len(a) == 0 {
			t.Fatalf("Dockerfile:%d: %s must be in exec form (a JSON array): the image has no shell", in.line, in.cmd)
		}
		return a
	}

	froms := get("FROM")
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, found %d FROM", len(froms))
	}
	final := strings.Fields(froms[len(froms)-1].args)[0]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("runtime image %s: want distroless static (CA certificates, tzdata) or scratch", final)
	}

	// Non-root, by number (Kubernetes' runAsNonRoot cannot check a name).
	users := get("USER")
	if len(users) == 0 {
		t.Fatal("no USER: the image would run as whatever the base says")
	}
	uid, _, _ := strings.Cut(users[len(users)-1].args, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric non-root uid", users[len(users)-1].args)
	}

	var exposed []string
	for _, in := range get("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}

	entry := get("ENTRYPOINT")
	cmd := get("CMD")
	if len(entry) != 1 || len(cmd) == 0 {
		t.Fatal("want one ENTRYPOINT and a CMD")
	}
	bin := jsonArray(entry[0], entry[0].args)[0]
	args := jsonArray(cmd[len(cmd)-1], cmd[len(cmd)-1].args)
	if len(args) != 3 || args[0] != "run" || args[1] != "--config" {
		t.Fatalf("CMD %q: want [run --config FILE]", args)
	}
	configInImage := args[2]

	// The configuration baked in is deploy/docker/sekisho.yaml.
	var baked string
	for _, in := range get("COPY") {
		if f := strings.Fields(in.args); len(f) == 2 && f[1] == configInImage {
			baked = f[0]
		}
	}
	if baked != "deploy/docker/sekisho.yaml" {
		t.Fatalf("CMD reads %s, which no COPY of deploy/docker/sekisho.yaml provides", configInImage)
	}
	cfg := loadSekishoConfig(t, filepath.Join(repo, baked))
	ports := map[string]bool{}
	for _, l := range cfg.listenAddrs() {
		h, p := hostPort(t, "listen", l)
		if !wildcard(h) {
			t.Errorf("%s: listen %s is not reachable through a published port; want 0.0.0.0", baked, l)
		}
		ports[p] = true
	}
	ah, ap := hostPort(t, "admin_listen", cfg.AdminListen)
	if !wildcard(ah) {
		t.Errorf("%s: admin_listen %s is not reachable through a published port", baked, cfg.AdminListen)
	}
	if cfg.Rules != "" || cfg.Geo.Database != "" {
		t.Errorf("%s names rules or a database: the image must run on its embedded defaults", baked)
	}
	for _, p := range []string{"3128", "9128"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE lacks %s", p)
		}
	}
	if !ports["3128"] || ap != "9128" {
		t.Errorf("%s: want the proxy on 3128 and the admin on 9128, got listen %v admin %s", baked, cfg.listenAddrs(), cfg.AdminListen)
	}

	// HEALTHCHECK runs `sekisho healthcheck` in exec form, and its default
	// URL reaches the admin listener the baked configuration opens.
	hcs := get("HEALTHCHECK")
	if len(hcs) != 1 {
		t.Fatal("want one HEALTHCHECK")
	}
	_, hcCmd, ok := strings.Cut(hcs[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q: no CMD", hcs[0].args)
	}
	hc := jsonArray(hcs[0], strings.TrimSpace(hcCmd))
	if !slices.Equal(hc, []string{bin, "healthcheck"}) {
		t.Errorf("HEALTHCHECK CMD %q: want [%s healthcheck]", hc, bin)
	}
	src := string(readFile(t, filepath.Join(repo, "cmd/sekisho/healthcheck.go")))
	m := regexp.MustCompile(`defaultHealthURL\s*=\s*"http://([^/"]+)/healthz"`).FindStringSubmatch(src)
	if m == nil {
		t.Fatal("cmd/sekisho/healthcheck.go: no defaultHealthURL = \"http://HOST:PORT/healthz\"")
	}
	hh, hp := hostPort(t, "healthcheck default URL", m[1])
	if hh != "127.0.0.1" || hp != ap {
		t.Errorf("healthcheck's default URL %s does not reach admin_listen %s of the image", m[1], cfg.AdminListen)
	}
}

func TestDockerfileGoVersion(t *testing.T) {
	ins := parseDockerfile(t, string(readFile(t, filepath.Join(repo, "Dockerfile"))))
	var goVersion string
	for _, in := range ins {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "GO_VERSION=") {
			goVersion = strings.TrimPrefix(in.args, "GO_VERSION=")
		}
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(readFile(t, filepath.Join(repo, "go.mod"))))
	if goVersion == "" || m == nil {
		t.Fatalf("no ARG GO_VERSION in the Dockerfile (%q) or no go directive in go.mod", goVersion)
	}
	if version.Compare("go"+goVersion, "go"+m[1]) < 0 {
		t.Errorf("Dockerfile builds with Go %s, go.mod needs %s", goVersion, m[1])
	}
}

// TestDockerignoreKeepsSources: the build context must still hold every
// file the build reads.
func TestDockerignoreKeepsSources(t *testing.T) {
	var patterns []string
	for _, l := range strings.Split(string(readFile(t, filepath.Join(repo, ".dockerignore"))), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	// Docker's rules: patterns are relative to the context root, ** matches
	// any number of folders, a match on a folder excludes what is in it,
	// and a later !pattern re-includes.
	match := func(pattern, path string) bool {
		pattern = strings.TrimPrefix(pattern, "/")
		parts := strings.Split(path, "/")
		for i := 1; i <= len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			if ok, _ := filepath.Match(pattern, prefix); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
				for j := 0; j < i; j++ {
					if ok, _ := filepath.Match(rest, strings.Join(parts[j:i], "/")); ok {
						return true
					}
				}
			}
		}
		return false
	}
	excluded := func(path string) bool {
		out := false
		for _, p := range patterns {
			if neg, ok := strings.CutPrefix(p, "!"); ok {
				if match(neg, path) {
					out = false
				}
			} else if match(p, path) {
				out = true
			}
		}
		return out
	}
	for _, need := range []string{
		"go.mod", "go.sum", "cmd/sekisho/main.go", "cmd/sekisho/healthcheck.go",
		"proxy/server.go", "proxy/pages/templates", "rules/default.yaml", "rules/catalog.yaml",
		"geo/embedded.go", "geo/data/geo-whois-asn-country.mmdb.gz", "deploy/docker/sekisho.yaml",
	} {
		if excluded(need) {
			t.Errorf(".dockerignore excludes %s, which the image build needs", need)
		}
	}
	for _, gone := range []string{".git", "cmd/sekisho/main_test.go", "deploy/kubernetes/deployment.yaml"} {
		if !excluded(gone) {
			t.Errorf(".dockerignore should keep %s out of the build context", gone)
		}
	}
}
