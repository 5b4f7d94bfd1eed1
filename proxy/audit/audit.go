// Package audit writes the canonical log line: one JSON object per request
// and per tunnel, with every fact the decision used and what happened.
//
// It is what a security team feeds to its SIEM, what `sekisho report` (and
// a helpdesk, given a request id from a block page) reads, and what
// `sekisho whatif` replays against new rules — so every fact a rule can
// match on is in it. Field names are constants here; changing one is a
// breaking change for every consumer.
//
// Redaction: the URL query string is never logged (it often carries
// tokens and personal data); the path is, because rules can match it.
package audit

import (
	"bufio"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Field names of the audit line.
const (
	FieldID             = "id"
	FieldKind           = "kind"
	FieldClient         = "client"
	FieldClientGroup    = "client_group"
	FieldMethod         = "method"
	FieldScheme         = "scheme"
	FieldHost           = "host"
	FieldPort           = "port"
	FieldPath           = "path"
	FieldAddr           = "addr"
	FieldCountry        = "country"
	FieldDeclared       = "declared_country"
	FieldEffective      = "effective_country"
	FieldDestination    = "destination"
	FieldASN            = "asn"
	FieldService        = "service"
	FieldEndpoint       = "endpoint"
	FieldRule           = "rule"
	FieldAction         = "action"
	FieldWouldBlock     = "would_block"
	FieldFailClosed     = "fail_closed"
	FieldMode           = "mode"
	FieldBodyBytes      = "body_bytes"
	FieldContentType    = "content_type"
	FieldFileParts      = "file_parts"
	FieldPartTypes      = "part_types"
	FieldUploadBytes    = "upload_bytes"
	FieldDownloadBytes  = "download_bytes"
	FieldBudget         = "budget"
	FieldBudgetExceeded = "budget_exceeded"
	FieldStatus         = "status"
	FieldDuration       = "duration_ms"
	FieldReason         = "reason"
	FieldError          = "error"
	FieldRulesHash      = "rules_hash"
	FieldInspection     = "inspection"
	// Facts for `sekisho whatif`: with them a logged request can be
	// decided again exactly as the proxy decided it.
	FieldStream          = "stream"
	FieldEncoded         = "body_encoded"
	FieldBodyBytesMin    = "body_bytes_min"
	FieldPartsIncomplete = "parts_incomplete"
)

// Kinds of audit line.
const (
	KindRequest = "request"
	KindTunnel  = "tunnel"
)

// Record is one audit line. Zero-valued optional fields are left out.
// The line's "time" is when it is written: the end of the request.
type Record struct {
	ID          string
	Kind        string // KindRequest or KindTunnel
	Client      string // ip:port of the client
	ClientGroup string
	Method      string
	Scheme      string
	Host        string
	Port        uint16
	Path        string
	Addr        string // the address dialed (or that would have been)
	Country     string
	Declared    string
	Effective   string
	Destination string
	ASN         uint32
	Service     string
	Endpoint    string
	Rule        string
	Action      string // allow, log, block; "" when no decision was reached
	WouldBlock  bool
	FailClosed  bool
	Mode        string // http, tunnel, websocket
	// BodyBytes is the declared (or observed) request body size; -1 when
	// unknown.
	BodyBytes      int64
	ContentType    string
	FileParts      string // yes, no, unknown; "" for no body
	PartTypes      []string
	UploadBytes    int64
	DownloadBytes  int64
	Budget         int64 // stream upload budget; 0 when not a stream
	BudgetExceeded bool
	Status         int
	Duration       time.Duration
	Reason         string // why the outcome (refusal, error class)
	Error          string
	RulesHash      string
	// Inspection is, for a CONNECT, what decided whether its TLS was
	// opened (an inspection rule, "bypass:<entry>", or "default").
	Inspection string
	// Stream is true for a tunnel or WebSocket: its upload was governed by
	// the budget, and rules with body conditions did not apply to it.
	Stream bool
	// Encoded is true when a Content-Encoding other than identity hid the
	// body's structure from the rules.
	Encoded bool
	// BodyBytesMin is, when BodyBytes is -1 (no length), the bytes of the
	// body seen before deciding: a lower bound of its size.
	BodyBytesMin int64
	// PartsIncomplete is true when a multipart body was not seen to its
	// end: PartTypes may miss file parts.
	PartsIncomplete bool
}

// Logger writes audit lines. It encodes them by hand into pooled buffers
// (the format is slog's JSON: "time", "level", "msg" and the fields below)
// and writes each line with one Write call under a lock, so lines from
// concurrent requests never interleave. It costs a few hundred nanoseconds
// and no allocation per line, instead of slog's microseconds: there is one
// line per request.
type Logger struct {
	// OnError, when set (before the first Log), hears of every failed
	// write, with the lines it lost; it is called with the logger's lock
	// held, so it must not log audit lines. A write error (a full disk for
	// a moment, an I/O error) loses the lines of that write, never the
	// ones after it.
	OnError func(err error, lines int)

	mu      sync.Mutex
	w       io.Writer
	bw      *bufio.Writer // nil: unbuffered
	pending int           // lines in bw

	stop chan struct{}
	done chan struct{}
}

// New writes JSON lines to w, each as it is logged. A nil w discards.
func New(w io.Writer) *Logger {
	if w == nil {
		w = io.Discard
	}
	return &Logger{w: w}
}

// NewBuffered writes JSON lines to w through a 64 KiB buffer flushed at
// least every interval (and when full): one write system call per many
// lines instead of one per request, as Squid buffers its access log. A
// crash loses at most interval's worth of lines; Close flushes.
func NewBuffered(w io.Writer, interval time.Duration) *Logger {
	if w == nil {
		w = io.Discard
	}
	l := &Logger{w: w, bw: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go l.flusher(interval)
	return l
}

func (l *Logger) flusher(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = l.Flush()
		case <-l.stop:
			_ = l.Flush()
			return
		}
	}
}

// Flush writes buffered lines out (a no-op when unbuffered): before the
// file under the log is reopened, and at shutdown.
func (l *Logger) Flush() error {
	if l.bw == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

// flushLocked writes the buffer out. bufio.Writer keeps its first error
// and refuses every later write, so after a failure the buffer is
// dropped (and reported) and the writer starts afresh.
func (l *Logger) flushLocked() error {
	if err := l.bw.Flush(); err != nil {
		l.failLocked(err, 0)
		return err
	}
	l.pending = 0
	return nil
}

// failLocked reports a failed write that lost the buffered lines and
// extra more, and starts the buffer afresh.
func (l *Logger) failLocked(err error, extra int) {
	lost := extra
	if l.bw != nil {
		lost += l.pending
		l.pending = 0
		l.bw.Reset(l.w)
	}
	if l.OnError != nil {
		l.OnError(err, lost)
	}
}

// Close flushes and stops a buffered logger's flusher. Lines logged after
// Close are written unbuffered.
func (l *Logger) Close() error {
	if l.bw == nil || l.stop == nil {
		return nil
	}
	select {
	case <-l.stop:
		return nil
	default:
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.flushLocked()
	l.bw = nil
	return err
}

// Level is the level a record is logged at: notable outcomes (log, block,
// would-block, refusals) are warnings so a SIEM can filter on them.
func (r *Record) Level() slog.Level {
	switch {
	case r.Action == "block" || r.Action == "log" || r.WouldBlock || r.BudgetExceeded:
		return slog.LevelWarn
	case r.Status >= 400 && r.Status < 500:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Log writes one record.
func (l *Logger) Log(r *Record) {
	bp := bufPool.Get().(*[]byte)
	e := enc{b: (*bp)[:0]}
	e.b = append(e.b, `{"time":"`...)
	e.b = time.Now().AppendFormat(e.b, time.RFC3339Nano)
	e.b = append(e.b, `","level":"`...)
	e.b = append(e.b, r.Level().String()...)
	e.b = append(e.b, `","msg":`...)
	e.quote(r.Kind)
	e.str(FieldID, r.ID)
	e.str(FieldKind, r.Kind)
	e.opt(FieldClient, r.Client)
	e.opt(FieldClientGroup, r.ClientGroup)
	e.opt(FieldMethod, r.Method)
	e.opt(FieldScheme, r.Scheme)
	e.opt(FieldHost, r.Host)
	if r.Port != 0 {
		e.int(FieldPort, int64(r.Port))
	}
	e.opt(FieldPath, r.Path)
	e.opt(FieldAddr, r.Addr)
	e.opt(FieldCountry, r.Country)
	e.opt(FieldDeclared, r.Declared)
	e.opt(FieldEffective, r.Effective)
	e.opt(FieldDestination, r.Destination)
	if r.ASN != 0 {
		e.int(FieldASN, int64(r.ASN))
	}
	e.opt(FieldService, r.Service)
	e.opt(FieldEndpoint, r.Endpoint)
	e.opt(FieldRule, r.Rule)
	e.opt(FieldAction, r.Action)
	e.flag(FieldWouldBlock, r.WouldBlock)
	e.flag(FieldFailClosed, r.FailClosed)
	e.opt(FieldMode, r.Mode)
	if r.BodyBytes != 0 {
		e.int(FieldBodyBytes, r.BodyBytes)
	}
	e.opt(FieldContentType, r.ContentType)
	e.opt(FieldFileParts, r.FileParts)
	if len(r.PartTypes) > 0 {
		e.key(FieldPartTypes)
		e.b = append(e.b, '[')
		for i, t := range r.PartTypes {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.quote(t)
		}
		e.b = append(e.b, ']')
	}
	e.int(FieldUploadBytes, r.UploadBytes)
	e.int(FieldDownloadBytes, r.DownloadBytes)
	if r.Budget != 0 {
		e.int(FieldBudget, r.Budget)
	}
	e.flag(FieldBudgetExceeded, r.BudgetExceeded)
	if r.Status != 0 {
		e.int(FieldStatus, int64(r.Status))
	}
	e.key(FieldDuration)
	e.b = strconv.AppendFloat(e.b, float64(r.Duration.Microseconds())/1000, 'f', -1, 64)
	e.opt(FieldReason, r.Reason)
	e.opt(FieldError, r.Error)
	e.opt(FieldRulesHash, r.RulesHash)
	e.opt(FieldInspection, r.Inspection)
	e.flag(FieldStream, r.Stream)
	e.flag(FieldEncoded, r.Encoded)
	if r.BodyBytesMin != 0 {
		e.int(FieldBodyBytesMin, r.BodyBytesMin)
	}
	e.flag(FieldPartsIncomplete, r.PartsIncomplete)
	e.b = append(e.b, '}', '\n')
	l.mu.Lock()
	if l.bw != nil {
		if _, err := l.bw.Write(e.b); err != nil {
			l.failLocked(err, 1) // a flush of the full buffer failed
		} else {
			l.pending++
		}
	} else if _, err := l.w.Write(e.b); err != nil {
		l.failLocked(err, 1)
	}
	l.mu.Unlock()
	if cap(e.b) <= 64<<10 {
		*bp = e.b
		bufPool.Put(bp)
	}
}

// enc appends JSON to a byte slice.
type enc struct{ b []byte }

func (e *enc) key(k string) {
	e.b = append(e.b, ',', '"')
	e.b = append(e.b, k...)
	e.b = append(e.b, '"', ':')
}

func (e *enc) str(k, v string) {
	e.key(k)
	e.quote(v)
}

func (e *enc) opt(k, v string) {
	if v != "" {
		e.str(k, v)
	}
}

func (e *enc) int(k string, v int64) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, v, 10)
}

func (e *enc) flag(k string, v bool) {
	if v {
		e.key(k)
		e.b = append(e.b, "true"...)
	}
}

const hexDigits = "0123456789abcdef"

// quote appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD (hosts and paths
// come from clients).
func (e *enc) quote(s string) {
	e.b = append(e.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			e.b = append(e.b, s[start:i]...)
			switch c {
			case '"', '\\':
				e.b = append(e.b, '\\', c)
			case '\n':
				e.b = append(e.b, '\\', 'n')
			case '\r':
				e.b = append(e.b, '\\', 'r')
			case '\t':
				e.b = append(e.b, '\\', 't')
			default:
				e.b = append(e.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			e.b = append(e.b, s[start:i]...)
			e.b = append(e.b, "\\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	e.b = append(e.b, s[start:]...)
	e.b = append(e.b, '"')
}
