package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bench is one benchmark run: its options, temporary directory, upstreams,
// the proxies found, and the results.
type bench struct {
	ctx     context.Context
	opt     *options
	root    string // repository root
	dir     string // temporary directory
	log     io.Writer
	up      *upstreams
	sk      sekishoFiles
	hosts   *hostNames
	proxies map[string]*proxyDef
	res     *results

	notesMu sync.Mutex
	notes   []string
	seq     int

	// profiling: sekisho serves pprof on pprofAddr, its admin listener
	// (results are not recorded).
	profiling bool
	pprofAddr string
	afterIdle func(t *target)

	bgLoads   []bgLoad      // background load of every measured run
	bgBad     int           // runs above bgDisturbed
	quietLeft time.Duration // what is left of --quiet-wait
	retryLeft time.Duration // what is left for measuring disturbed runs again
}

// scenarioDef is one of the six scenarios.
type scenarioDef struct {
	name  string
	title string
	mode  mode
	run   func(b *bench, t *target) ([]measurement, error)
	// profile is how long a CPU profile of it should last.
	profile func(o *options) time.Duration
}

var scenarioDefs = []scenarioDef{
	{"small", "small GETs", modePlain, (*bench).smallGets,
		func(o *options) time.Duration { return o.warmup + o.duration }},
	{"bulk", "tunnel bulk", modePlain, (*bench).bulk,
		func(*options) time.Duration { return 6 * time.Second }},
	{"newtunnel", "new tunnels", modePlain, (*bench).newTunnels,
		func(o *options) time.Duration { return o.warmup + o.duration }},
	{"intercept", "intercepted HTTPS", modeIntercept, (*bench).intercept,
		func(o *options) time.Duration { return 2*o.warmup + 3*o.duration }},
	{"upload", "plain upload", modePlain, (*bench).upload,
		func(*options) time.Duration { return 5 * time.Second }},
	{"idle", "idle tunnels", modePlain, (*bench).idle,
		func(*options) time.Duration { return 0 }},
}

func scenarioByName(name string) *scenarioDef {
	for i := range scenarioDefs {
		if scenarioDefs[i].name == name {
			return &scenarioDefs[i]
		}
	}
	return nil
}

// benchmark is the whole run: set up, measure, report, clean up.
func benchmark(ctx context.Context, opt *options, stdout, stderr io.Writer) (err error) {
	wallStart := time.Now()
	b := &bench{ctx: ctx, opt: opt, log: stderr, res: newResults(), proxies: map[string]*proxyDef{}}
	if b.root, err = repoRoot(); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "sekisho-bench-"); err != nil {
		return err
	}
	// Squid and tinyproxy drop privileges: they must be able to reach
	// their directories inside this one.
	_ = os.Chmod(b.dir, 0o755)
	defer func() {
		if opt.keep {
			b.logf("kept %s", b.dir)
		} else {
			_ = os.RemoveAll(b.dir)
		}
	}()
	b.raiseNofile()

	b.sk.version = checkoutVersion(b.root)
	b.logf("building sekisho %s (CGO_ENABLED=0) ...", b.sk.version)
	if b.sk.bin, err = buildSekisho(ctx, b.root, filepath.Join(b.dir, "bin"), b.sk.version); err != nil {
		return err
	}
	errLog := log.New(io.Discard, "", 0)
	if b.up, err = startUpstreams(errLog, opt.curves()); err != nil {
		return err
	}
	defer b.up.close()
	if err := b.findProxies(); err != nil {
		return err
	}
	if err := b.setupHostNames(); err != nil {
		return err
	}
	if err := b.setupSekisho(ctx); err != nil {
		return err
	}
	info := b.machineInfo()
	b.logf("machine: %s, %d cores, kernel %s, %s", info.CPU, info.Cores, info.Kernel, info.Go)
	b.logf("targets: %s; %d repetitions of %s runs", strings.Join(b.targetNames(false), ", "), opt.reps, opt.duration)

	b.quietLeft = opt.quietWait
	b.retryLeft = 3 * opt.quietWait
	for rep := range opt.reps {
		for _, name := range opt.scenarios {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sc := scenarioByName(name)
			if name == "idle" && rep >= opt.idleReps {
				continue
			}
			for _, tn := range rotate(b.targetsFor(sc), rep) {
				b.runOne(sc, tn, rep)
			}
		}
	}
	if opt.profileDir != "" && ctx.Err() == nil {
		b.profileAll()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	info.Wall = time.Since(wallStart).Round(time.Second).String()
	rep := &report{Machine: info, Settings: b.settings(), Targets: b.targetNames(true), Results: b.res,
		Notes: b.notes, Method: b.method()}
	var md bytes.Buffer
	writeMarkdown(&md, rep, goals(opt.idleTunnels, opt.proxyNofile))
	_, _ = stdout.Write(md.Bytes())
	if opt.out != "" {
		if err := os.WriteFile(opt.out, md.Bytes(), 0o644); err != nil {
			return err
		}
		b.logf("wrote %s (wall time %s)", opt.out, info.Wall)
	}
	return nil
}

// runOne measures one scenario for one target. A run that other
// processes disturbed (see background.go) is measured once more while the
// retry budget lasts, and the less disturbed of the two is kept.
func (b *bench) runOne(sc *scenarioDef, tn string, rep int) {
	if b.quietLeft > 0 {
		b.quietLeft -= waitQuiet(min(b.quietLeft, 10*time.Second), bgDisturbed)
	}
	var kept *attempt
	for try := 0; try < 2; try++ {
		a := b.measureOnce(sc, tn)
		if a == nil || b.ctx.Err() != nil {
			return // not started, or interrupted: nothing of this run counts
		}
		var parts []string
		for _, m := range a.ms {
			parts = append(parts, fmt.Sprintf("%s=%s", m.id, fmtNum(m.v)))
		}
		b.logf("rep %d/%d %-10s %-9s %5.1fs bg %3.0f%% %s", rep+1, b.opt.reps, sc.name, tn, a.took.Seconds(), 100*a.bg.foreign, strings.Join(parts, " "))
		if a.err != nil {
			b.logf("  error: %v", a.err)
		}
		if kept == nil || a.bg.foreign < kept.bg.foreign {
			kept = a
		}
		if a.bg.foreign <= bgDisturbed || b.profiling || b.retryLeft <= 0 {
			break
		}
		b.retryLeft -= a.took
		b.logf("  disturbed (other processes used %.0f%% of the machine): measuring again", 100*a.bg.foreign)
	}
	if b.profiling {
		return
	}
	for _, m := range kept.ms {
		b.res.add(m.id, tn, m.v)
	}
	b.bgLoads = append(b.bgLoads, kept.bg)
	if kept.bg.foreign > bgDisturbed {
		b.bgBad++
		b.notef("%s, %s (repetition %d): other processes used %.0f%% of the machine during the run", sc.title, tn, rep+1, 100*kept.bg.foreign)
	}
	if kept.err != nil {
		b.notef("%s, %s (repetition %d): %v", sc.title, tn, rep+1, firstLine(kept.err))
	}
}

// attempt is one measurement of a scenario for a target.
type attempt struct {
	ms   []measurement
	err  error
	bg   bgLoad
	took time.Duration
}

// measureOnce starts a fresh proxy process (none for direct), runs the
// scenario against it and stops it. It returns nil when the proxy did not
// start.
func (b *bench) measureOnce(sc *scenarioDef, tn string) *attempt {
	t := &target{name: tn}
	if tn != targetDirect {
		p, err := b.launch(b.proxies[tn], sc.mode, nil)
		if err != nil {
			b.notef("%s, %s: not measured: %v", sc.title, tn, firstLine(err))
			b.logf("%v", err)
			return nil
		}
		t.proc = p
		defer p.stop()
	}
	start := time.Now()
	mark := markBackground()
	ms, err := sc.run(b, t)
	return &attempt{ms: ms, err: err, bg: backgroundSince(mark), took: time.Since(start)}
}

// targetsFor lists the targets of a scenario: direct, then the proxies
// measured (those with an interception mode for the intercept scenario).
func (b *bench) targetsFor(sc *scenarioDef) []string {
	out := []string{targetDirect}
	for _, n := range allTargets[1:] {
		p := b.proxies[n]
		if p == nil || (sc.mode == modeIntercept && !p.intercepts) ||
			(p.scenarios != nil && !slices.Contains(p.scenarios, sc.name)) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// targetNames are the report's columns (withDirect) or the proxies found.
func (b *bench) targetNames(withDirect bool) []string {
	var out []string
	for _, n := range allTargets {
		if n == targetDirect && withDirect || b.proxies[n] != nil {
			out = append(out, n)
		}
	}
	return out
}

// rotate shifts the order by rep so that no target always runs first or
// last; direct stays among them.
func rotate(ts []string, rep int) []string {
	if len(ts) == 0 {
		return ts
	}
	k := rep % len(ts)
	return append(slices.Clone(ts[k:]), ts[:k]...)
}

// findProxies looks up the proxies asked for; missing ones are noted.
func (b *bench) findProxies() error {
	for _, name := range b.opt.proxies {
		switch name {
		case targetSekisho:
			b.proxies[name] = sekishoDef(b)
		case targetRelay:
			b.proxies[name] = relayDef()
		case targetSquid, targetTinyproxy:
			bin, err := exec.LookPath(name)
			if err != nil {
				for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
					if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
						bin, err = filepath.Join(dir, name), nil
						break
					}
				}
			}
			if err != nil {
				b.notef("%s is not installed: not measured (Debian: apt-get install squid-openssl tinyproxy)", name)
				continue
			}
			def := squidDef(bin)
			if name == targetTinyproxy {
				def = tinyproxyDef(bin)
			}
			def.version = proxyVersion(bin)
			if name == targetSquid && !strings.Contains(mustOutput(bin, "-v"), "--with-openssl") {
				def.intercepts = false
				b.notef("this Squid is built without OpenSSL: no ssl_bump run (Debian: squid-openssl)")
			}
			b.proxies[name] = def
		}
	}
	if len(b.proxies) == 0 {
		return errors.New("no proxy to measure")
	}
	return nil
}

// setupHostNames writes the interception names: enough fresh names for
// every cold run of every repetition.
func (b *bench) setupHostNames() error {
	runs := 0
	for _, p := range b.proxies {
		if p.intercepts {
			runs++
		}
	}
	total := b.opt.coldNames * max(runs, 1) * (b.opt.reps + 1) // +1: the profiling pass
	if !slices.Contains(b.opt.scenarios, "intercept") {
		total = 0
	}
	h, err := setupHosts(b.dir, total)
	if err != nil {
		return err
	}
	b.hosts = h
	return nil
}

// raiseNofile lifts this process's descriptor limit (it holds both ends of
// the idle tunnels) and so the ceiling for the proxies' ulimit.
func (b *bench) raiseNofile() {
	want := uint64(max(262144, 2*b.opt.proxyNofile))
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Max < want {
		nl := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
			nl = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl)
			if uint64(b.opt.proxyNofile) > lim.Max {
				b.notef("the hard RLIMIT_NOFILE of this environment is %d and cannot be raised (%v; no CAP_SYS_RESOURCE): the proxies run with %d descriptors instead of %d",
					lim.Max, err, lim.Max, b.opt.proxyNofile)
				b.opt.proxyNofile = int(lim.Max)
			}
			return
		}
		return
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// machineInfo collects the machine and versions for the report.
func (b *bench) machineInfo() machineInfo {
	m := machineInfo{
		CPU:    cpuModel(),
		Cores:  runtime.NumCPU(),
		Kernel: kernelRelease(),
		Go:     runtime.Version(),
		Date:   time.Now().UTC().Format("2006-01-02 15:04 MST"),
	}
	m.Sekisho = b.sk.version + ", built with CGO_ENABLED=0"
	pkg := func(names ...string) string {
		for _, n := range names {
			if v := strings.TrimSpace(mustOutput("dpkg-query", "-W", "-f", "${Package} ${Version}", n)); v != "" && !strings.Contains(v, "no packages") {
				return " (Debian " + v + ")"
			}
		}
		return ""
	}
	if p := b.proxies[targetSquid]; p != nil {
		m.Squid = p.version + pkg("squid-openssl", "squid")
	}
	if p := b.proxies[targetTinyproxy]; p != nil {
		m.Tinyproxy = p.version + pkg("tinyproxy")
	}
	return m
}

// settings are the run's parameters, as report rows.
func (b *bench) settings() []string {
	o := b.opt
	return []string{
		fmt.Sprintf("Repetitions: %d (idle tunnels: %d), targets interleaved in an order rotated every repetition; a fresh proxy process per scenario and repetition", o.reps, min(o.reps, o.idleReps)),
		fmt.Sprintf("Timed runs: %s each after a %s warm-up", o.duration, o.warmup),
		fmt.Sprintf("Concurrency: %d keep-alive clients; %d workers for new connections", o.clients, o.workers),
		fmt.Sprintf("Transfers: %s each way over %d tunnels; a %s upload; %s idle tunnels", sizeString(o.bulkBytes), o.bulkStreams, sizeString(o.uploadBytes), fmtInt(o.idleTunnels)),
		fmt.Sprintf("Proxies' RLIMIT_NOFILE: %d", o.proxyNofile),
		"TLS key exchange: " + o.kxDescription(),
		"Background load: " + bgSummary(b.bgLoads, b.bgBad) + fmt.Sprintf("; before each run the harness waits (%s in all at most) for the machine to be quiet, and measures a disturbed run once more (%s in all at most), keeping the less disturbed", o.quietWait, 3*o.quietWait),
		fmt.Sprintf("Command: go run ./cmd/sekisho-bench %s", strings.Join(os.Args[1:], " ")),
	}
}

// method is how the figures were made.
func (b *bench) method() []string {
	return []string{
		"Everything runs on this machine: the load generator and the upstreams (one Go process, GOMAXPROCS = all cores), and the proxy under test; they share the cores, as in issue 6's reference runs. Traffic is loopback only.",
		"Upstreams listen on 127.0.1.1 (JP in geo/geotest's database, so domestic to sekisho): a small-body HTTP server, a raw TCP source/sink, an HTTPS server (ECDSA P-256 certificate for *.bench.example and 127.0.1.1 from the harness's own CA, h2 and http/1.1) and an upload sink. Keep-alive is on everywhere.",
		"Plain HTTP and tunnels use IP-literal URLs and CONNECT targets (no proxy resolves a name). Interception CONNECTs to names: both read them from one generated hosts file (Squid's hosts_file, sekisho's resolver.hosts_file).",
		"sekisho is built with CGO_ENABLED=0 like the Dockerfile, configured with realistic rules (domestic JP, a client group, services, upload rules on size, content type and file parts), the geotest database, audit log to a file, default limits; for interception its CA (`sekisho ca init`), the upstream CA in tls.upstream_roots and an inspection rule that opens bench.example.",
		"Squid: no cache (`cache deny all`, `cache_mem 0`, no cache_dir), access.log on, `via off` and `forwarded_for transparent` (sekisho adds neither header), loopback clients, CONNECT to any port, one worker (Debian's default), DNS only from its hosts_file. ssl_bump (" + b.squidBumpText() + "): an ECDSA P-256 CA, security_file_certgen with a 64 MB database and a 64 MB in-memory certificate cache, the upstream CA in tls_outgoing_options.",
		"Every intercepted site has its own certificate from the upstream's CA (issued before the run), as real sites do: with one wildcard, a proxy that mimics the server's certificate would sign once for all names and no handshake would be cold.",
		"tinyproxy: Debian's defaults but for loopback clients, no Via header, CONNECT to any port and MaxClients raised to hold the idle tunnels; LogLevel Info to a file. It closes the client connection after every plain request (no keep-alive), which its small-GET figures show.",
		"go-relay is a calibration target, not a product: a CONNECT relay of a few lines in this harness (read the head, dial, 200, io.Copy both ways between *net.TCPConn, so Linux splices), with no rules, logging or limits. Its bulk and new-tunnel ratios are what a Go tunnel without any proxy logic reaches on this machine (the extra loopback hop costs kernel CPU on the shared cores); its idle figures are plain io.Copy's cost, which holds a splice pipe pair per direction while idle.",
		"Rates count operations completed in the timed window; latencies are per operation (a request, or connect + CONNECT + handshake + GET). New connections never resume TLS sessions. CPU is utime+stime of the proxy's process tree from /proc/PID/stat; RSS is VmRSS, peak RSS VmHWM (reset through /proc/PID/clear_refs before the upload) and a 20 ms sampler; kernel memory is /proc/meminfo's Slab, machine-wide.",
	}
}

func (b *bench) squidBumpText() string {
	if b.opt.squidBump == "peek" {
		return "`ssl_bump peek step1` then `ssl_bump bump all`: Squid reaches the server and mimics its certificate before answering the client"
	}
	return "`ssl_bump bump all` at step 1, client-first: the certificate is made for the CONNECT target, as sekisho does; `--squid-bump peek` for peek-then-bump"
}

// repoRoot is the module root (where go.mod of github.com/sekisho/sekisho is).
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run sekisho-bench from inside the sekisho repository")
	}
	return filepath.Dir(mod), nil
}

// checkoutVersion names the checkout: its commit, and whether files
// outside this command differ from it.
func checkoutVersion(root string) string {
	rev := strings.TrimSpace(mustOutputIn(root, "git", "rev-parse", "--short=12", "HEAD"))
	if rev == "" || strings.Contains(rev, " ") {
		return "unknown checkout"
	}
	v := "checkout " + rev
	var changed []string
	for _, line := range strings.Split(mustOutputIn(root, "git", "status", "--porcelain"), "\n") {
		if len(line) > 3 && !strings.HasPrefix(line[3:], "cmd/sekisho-bench/") && !strings.HasPrefix(line[3:], "BENCHMARKS.md") {
			changed = append(changed, line[3:])
		}
	}
	if len(changed) > 0 {
		v += fmt.Sprintf(" with %d uncommitted changes", len(changed))
	}
	return v
}

func mustOutput(name string, args ...string) string { return mustOutputIn("", name, args...) }

func mustOutputIn(dir, name string, args ...string) string {
	c := exec.Command(name, args...)
	c.Dir = dir
	out, _ := c.CombinedOutput()
	return string(out)
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// notef adds a line to the report's notes (once).
func (b *bench) notef(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	if b.profiling {
		b.logf("profiling pass: %s", s) // not part of the report
		return
	}
	b.notesMu.Lock()
	defer b.notesMu.Unlock()
	if !slices.Contains(b.notes, s) {
		b.notes = append(b.notes, s)
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func sizeString(n int64) string {
	switch {
	case n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	}
	return fmt.Sprintf("%d bytes", n)
}
