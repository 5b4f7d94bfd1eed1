package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// bulk is scenario 2: bulk download, then bulk upload, through CONNECT
// tunnels to the raw TCP source/sink (streams tunnels in parallel, the
// total split between them), with the proxy's CPU time per GiB.
func (b *bench) bulk(t *target) ([]measurement, error) {
	// Warm up: a small transfer each way on one tunnel.
	for _, dir := range []byte{bulkDownload, bulkUpload} {
		if _, _, err := b.transfer(t, dir, 1, min(32*mib, b.opt.bulkBytes)); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var out []measurement
	for _, dir := range []byte{bulkDownload, bulkUpload} {
		secs, cpu, err := b.transfer(t, dir, b.opt.bulkStreams, b.opt.bulkBytes)
		if err != nil {
			return out, err
		}
		rate := float64(b.opt.bulkBytes) / mib / secs
		perGiB := cpu / (float64(b.opt.bulkBytes) / gib)
		if dir == bulkDownload {
			out = append(out, measurement{mBulkDown, rate})
			if !t.direct() {
				out = append(out, measurement{mBulkDCPU, perGiB})
			}
		} else {
			out = append(out, measurement{mBulkUp, rate})
			if !t.direct() {
				out = append(out, measurement{mBulkUCPU, perGiB})
			}
		}
	}
	return out, nil
}

// transfer moves total bytes in direction dir over streams tunnels in
// parallel and returns the seconds from the first byte asked for to the
// last byte delivered, and the proxy's CPU seconds in that time.
func (b *bench) transfer(t *target, dir byte, streams int, total int64) (float64, float64, error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range streams {
		c, err := t.dialTunnel(b.ctx, b.up.Bulk, b.up.Bulk)
		if err != nil {
			return 0, 0, err
		}
		conns = append(conns, c)
	}
	per := total / int64(streams)
	cpu0 := 0.0
	if pid := t.pid(); pid != 0 {
		cpu0 = cpuSeconds(pid)
	}
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = bulkStream(c, dir, per, deadline)
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu := 0.0
	if pid := t.pid(); pid != 0 {
		cpu = cpuSeconds(pid) - cpu0
	}
	return secs, cpu, errors.Join(errs...)
}

// bulkStream runs one stream of the bulk protocol (see bulkConn).
func bulkStream(c net.Conn, dir byte, n int64, deadline time.Time) error {
	_ = c.SetDeadline(deadline)
	var hdr [9]byte
	hdr[0] = dir
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	switch dir {
	case bulkDownload:
		buf := make([]byte, bulkBufSize)
		for got := int64(0); got < n; {
			k, err := c.Read(buf[:min(n-got, bulkBufSize)])
			got += int64(k)
			if err != nil {
				return fmt.Errorf("download: %d of %d bytes: %w", got, n, err)
			}
		}
	case bulkUpload:
		for left := n; left > 0; {
			k, err := c.Write(zeros[:min(left, bulkBufSize)])
			left -= int64(k)
			if err != nil {
				return fmt.Errorf("upload: %w", err)
			}
		}
		var ack [1]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != 'K' {
			return fmt.Errorf("upload: no acknowledgement: %v", err)
		}
	}
	return nil
}
