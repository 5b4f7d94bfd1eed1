package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// profileAll runs each selected scenario once more against sekisho with
// admin.pprof on (the same binary) and saves a CPU profile of it, and for the idle tunnels a heap
// profile and the goroutine dump while they are open. These runs are not
// part of the results. `go tool pprof -top` (flat and -cum) of each is
// saved beside it.
func (b *bench) profileAll() {
	if b.proxies[targetSekisho] == nil {
		return
	}
	if err := os.MkdirAll(b.opt.profileDir, 0o755); err != nil {
		b.logf("profile: %v", err)
		return
	}
	b.profiling = true
	defer func() { b.profiling = false; b.afterIdle = nil }()
	for _, name := range b.opt.profileScen {
		if !slices.Contains(b.opt.scenarios, name) {
			continue
		}
		if b.ctx.Err() != nil {
			return
		}
		sc := scenarioByName(name)
		if !slices.Contains(b.targetsFor(sc), targetSekisho) {
			continue
		}
		b.profileOne(sc)
	}
}

// profileOne measures sc with pprof on the admin listener and saves its
// profiles.
func (b *bench) profileOne(sc *scenarioDef) {
	port, err := freePort()
	if err != nil {
		return
	}
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", port)
	b.pprofAddr = pprofAddr
	p, err := b.launch(b.proxies[targetSekisho], sc.mode, nil)
	if err != nil {
		b.logf("profile %s: %v", sc.name, err)
		return
	}
	defer p.stop()
	t := &target{name: targetSekisho, proc: p}
	base := filepath.Join(b.opt.profileDir, "sekisho-"+sc.name)
	var wg sync.WaitGroup
	if secs := sc.profile(b.opt); secs > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(secs.Seconds()+0.5))
			b.saveProfile(url, base+".cpu.pprof", secs+30*time.Second, "")
		}()
	}
	if sc.name == "idle" {
		b.afterIdle = func(*target) {
			b.saveProfile("http://"+pprofAddr+"/debug/pprof/heap", base+".heap.pprof", 30*time.Second, "-sample_index=inuse_space")
			b.saveProfile("http://"+pprofAddr+"/debug/pprof/goroutine?debug=1", base+".goroutines.txt", 30*time.Second, "")
		}
	}
	ms, err := sc.run(b, t)
	wg.Wait()
	b.afterIdle = nil
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s=%s", m.id, fmtNum(m.v)))
	}
	b.logf("profiled %-10s sekisho %s (not recorded)", sc.name, strings.Join(parts, " "))
	if err != nil {
		b.logf("  error: %v", err)
	}
}

// saveProfile fetches a profile to file and, for pprof files, writes
// `go tool pprof -top` of it to file.top.txt.
func (b *bench) saveProfile(url, file string, timeout time.Duration, topFlag string) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		b.logf("profile %s: %s %v", url, resp.Status, err)
		return
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.logf("profile: %v", err)
		return
	}
	if !strings.HasSuffix(file, ".pprof") {
		b.logf("saved %s", file)
		return
	}
	args := []string{"tool", "pprof", "-top", "-nodecount=40"}
	if topFlag != "" {
		args = append(args, topFlag)
	}
	args = append(args, b.sk.bin, file)
	top, err := runCmd(b.ctx, b.root, nil, "go", args...)
	if err != nil {
		b.logf("go tool pprof: %v", err)
		return
	}
	_ = os.WriteFile(strings.TrimSuffix(file, ".pprof")+".top.txt", []byte(top), 0o644)
	args = append([]string{"tool", "pprof", "-top", "-cum", "-nodecount=80"}, args[4:]...)
	if cum, err := runCmd(b.ctx, b.root, nil, "go", args...); err == nil {
		_ = os.WriteFile(strings.TrimSuffix(file, ".pprof")+".cum.txt", []byte(cum), 0o644)
	}
	b.logf("saved %s (-top: .top.txt, -top -cum: .cum.txt)", file)
}
