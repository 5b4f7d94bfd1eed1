package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The idle-tunnel sink runs in a child process of its own: it holds one
// end of every idle tunnel while this process holds the other, and each
// process has its own RLIMIT_NOFILE (which a sandbox may not let anyone
// raise).

// sinkEnv makes this binary run as the idle sink.
const sinkEnv = "SEKISHO_BENCH_IDLE_SINK"

// runSink serves the idle sink on upstreamIP, prints its address, and exits
// when its parent closes its standard input (or after an hour at most).
func runSink() int {
	ln, err := net.Listen("tcp", upstreamIP+":0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	time.AfterFunc(time.Hour, func() { os.Exit(0) })
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		go func() {
			defer c.Close()
			idleConn(c)
		}()
	}
}

// startSink starts the sink process and returns its address and a stop
// function.
func startSink() (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), sinkEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	stop := func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case addr := <-line:
		if addr == "" {
			stop()
			return "", nil, errors.New("idle sink did not start")
		}
		return addr, stop, nil
	case <-time.After(10 * time.Second):
		stop()
		return "", nil, errors.New("idle sink did not start in 10s")
	}
}
