package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procTree lists pid and its descendants (a proxy and its helpers, such as
// Squid's certificate generators).
func procTree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out) && i < 10000; i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// statFields returns /proc/PID/stat's fields after the command name (which
// may contain spaces): field 3 (state) is f[0].
func statFields(b []byte) []string {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// cpuSeconds is the CPU time (user + system, including reaped children) of
// pid and its live descendants.
func cpuSeconds(pid int) float64 {
	var ticks int64
	for _, p := range procTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) < 15 {
			continue
		}
		// utime, stime, cutime, cstime are fields 14-17: f[11..14].
		for _, s := range f[11:15] {
			v, _ := strconv.ParseInt(s, 10, 64)
			ticks += v
		}
	}
	return float64(ticks) / clockTicks
}

// memStatus is what /proc/PID/status says about memory, in KiB, summed
// over the process tree.
type memStatus struct {
	RSS     int64 // VmRSS
	HWM     int64 // VmHWM: peak RSS since start or the last resetPeak
	Threads int64
}

func readMem(pid int) memStatus {
	var m memStatus
	for _, p := range procTree(pid) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "VmRSS":
				m.RSS += n
			case "VmHWM":
				m.HWM += n
			case "Threads":
				m.Threads += n
			}
		}
		_ = f.Close()
	}
	return m
}

// resetPeak resets VmHWM of the process tree to the current RSS (writing 5
// to /proc/PID/clear_refs, Linux ≥ 4.0); it reports whether that worked.
func resetPeak(pid int) bool {
	ok := true
	for _, p := range procTree(pid) {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}

// fdCount is the number of open file descriptors of the process tree.
func fdCount(pid int) int {
	n := 0
	for _, p := range procTree(pid) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err == nil {
			n += len(ents)
		}
	}
	return n
}

// kernelSlabKiB is the kernel's slab memory (/proc/meminfo Slab): where
// sockets, their buffers and pipes live, for the whole machine.
func kernelSlabKiB() int64 { return meminfo("Slab") }

// meminfo reads one /proc/meminfo field in KiB.
func meminfo(field string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// kernelRelease is uname -r.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// machineCPU reads /proc/stat's aggregate line: busy seconds in processes
// (user, nice, system; interrupt and softirq time is left out: loopback
// traffic is processed there, and it cannot be told whose it is), stolen
// seconds (taken by the hypervisor), and the total.
func machineCPU() (busy, steal, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0
	}
	v := make([]float64, len(f)-1)
	for i, s := range f[1:] {
		n, _ := strconv.ParseFloat(s, 64)
		v[i] = n / clockTicks
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice]
	busy = v[0] + v[1] + v[2]
	steal = v[7]
	for _, x := range v[:8] {
		total += x
	}
	return busy, steal, total
}

// fdKinds counts a process tree's descriptors by kind: socket, pipe,
// anon_inode, file.
func fdKinds(pid int) map[string]int {
	out := map[string]int{}
	for _, p := range procTree(pid) {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			k, _, ok := strings.Cut(l, ":")
			if !ok || strings.HasPrefix(l, "/") {
				k = "file"
			}
			out[k]++
		}
	}
	return out
}
