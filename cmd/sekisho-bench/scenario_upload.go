package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// uploadBoundary is the multipart boundary of the generated upload.
const uploadBoundary = "sekisho-bench-boundary-7d3f9a"

// upload is scenario 5: one POST of a multipart/form-data body with one
// file part and a Content-Length (as a browser sends a file), generated on
// the fly, to the domestic plain-HTTP sink; throughput and the proxy's peak
// RSS over its RSS before the upload.
func (b *bench) upload(t *target) ([]measurement, error) {
	tr := t.transport(nil)
	tr.WriteBufferSize = 256 << 10
	tr.ReadBufferSize = 64 << 10
	defer tr.CloseIdleConnections()
	url := "http://" + b.up.Upload + "/upload"

	if _, err := postOnce(b.ctx, tr, url, min(16*mib, b.opt.uploadBytes)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	pid := t.pid()
	var before memStatus
	var cpu0 float64
	peak := &peakRSS{}
	if pid != 0 {
		before = readMem(pid)
		if !resetPeak(pid) {
			b.notef("upload, %s: could not reset VmHWM (/proc/PID/clear_refs); the peak is sampled every 20 ms only", t.name)
		}
		cpu0 = cpuSeconds(pid)
		peak.start(pid)
	}
	secs, err := postOnce(b.ctx, tr, url, b.opt.uploadBytes)
	if pid != 0 {
		peak.stop()
	}
	if err != nil {
		return nil, err
	}
	out := []measurement{{mUpRate, float64(b.opt.uploadBytes) / mib / secs}}
	if pid != 0 {
		after := readMem(pid)
		hwm := max(after.HWM, peak.max)
		out = append(out,
			measurement{mUpRSS, float64(max(0, hwm-before.RSS)) / 1024},
			measurement{mUpCPU, (cpuSeconds(pid) - cpu0) / (float64(b.opt.uploadBytes) / gib)},
		)
	}
	return out, nil
}

// postOnce uploads a generated multipart body of exactly size bytes and
// checks that the sink received all of it.
func postOnce(ctx context.Context, rt http.RoundTripper, url string, size int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	body := newMultipartBody(size)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+uploadBoundary)
	start := time.Now()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	got, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(got)) != strconv.FormatInt(size, 10) {
		return 0, fmt.Errorf("upload of %d bytes: %s: %.200s", size, resp.Status, got)
	}
	return secs, nil
}

// multipartBody generates a multipart/form-data body with one file part
// of zeros, exactly size bytes long, without holding it in memory.
type multipartBody struct {
	head, tail []byte
	payload    int64 // bytes of the file part left
	pos        int   // position in head
	tpos       int   // position in tail
}

func newMultipartBody(size int64) *multipartBody {
	head := []byte("--" + uploadBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n")
	tail := []byte("\r\n--" + uploadBoundary + "--\r\n")
	return &multipartBody{head: head, tail: tail, payload: max(0, size-int64(len(head)+len(tail)))}
}

func (m *multipartBody) Read(p []byte) (int, error) {
	switch {
	case m.pos < len(m.head):
		n := copy(p, m.head[m.pos:])
		m.pos += n
		return n, nil
	case m.payload > 0:
		n := copy(p[:min(int64(len(p)), m.payload)], zeros)
		m.payload -= int64(n)
		return n, nil
	case m.tpos < len(m.tail):
		n := copy(p, m.tail[m.tpos:])
		m.tpos += n
		return n, nil
	}
	return 0, io.EOF
}

// peakRSS samples a process tree's RSS every 20 ms.
type peakRSS struct {
	max  int64
	done chan struct{}
	wg   sync.WaitGroup
}

func (p *peakRSS) start(pid int) {
	p.done = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 100_000; i++ {
			p.max = max(p.max, readMem(pid).RSS)
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *peakRSS) stop() {
	close(p.done)
	p.wg.Wait()
}
