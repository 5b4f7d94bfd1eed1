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
	"context"
	"io"
	"log/slog"
	"time"
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

// Logger writes audit lines.
type Logger struct {
	l *slog.Logger
}

// New writes JSON lines to w. A nil w discards.
func New(w io.Writer) *Logger {
	if w == nil {
		w = io.Discard
	}
	return &Logger{l: slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))}
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

// Log writes one record.
func (l *Logger) Log(r *Record) {
	attrs := make([]slog.Attr, 0, 40)
	add := func(a slog.Attr) { attrs = append(attrs, a) }
	str := func(k, v string) {
		if v != "" {
			add(slog.String(k, v))
		}
	}
	add(slog.String(FieldID, r.ID))
	add(slog.String(FieldKind, r.Kind))
	str(FieldClient, r.Client)
	str(FieldClientGroup, r.ClientGroup)
	str(FieldMethod, r.Method)
	str(FieldScheme, r.Scheme)
	str(FieldHost, r.Host)
	if r.Port != 0 {
		add(slog.Int(FieldPort, int(r.Port)))
	}
	str(FieldPath, r.Path)
	str(FieldAddr, r.Addr)
	str(FieldCountry, r.Country)
	str(FieldDeclared, r.Declared)
	str(FieldEffective, r.Effective)
	str(FieldDestination, r.Destination)
	if r.ASN != 0 {
		add(slog.Uint64(FieldASN, uint64(r.ASN)))
	}
	str(FieldService, r.Service)
	str(FieldEndpoint, r.Endpoint)
	str(FieldRule, r.Rule)
	str(FieldAction, r.Action)
	if r.WouldBlock {
		add(slog.Bool(FieldWouldBlock, true))
	}
	if r.FailClosed {
		add(slog.Bool(FieldFailClosed, true))
	}
	str(FieldMode, r.Mode)
	if r.BodyBytes != 0 {
		add(slog.Int64(FieldBodyBytes, r.BodyBytes))
	}
	str(FieldContentType, r.ContentType)
	str(FieldFileParts, r.FileParts)
	if len(r.PartTypes) > 0 {
		add(slog.Any(FieldPartTypes, r.PartTypes))
	}
	add(slog.Int64(FieldUploadBytes, r.UploadBytes))
	add(slog.Int64(FieldDownloadBytes, r.DownloadBytes))
	if r.Budget != 0 {
		add(slog.Int64(FieldBudget, r.Budget))
	}
	if r.BudgetExceeded {
		add(slog.Bool(FieldBudgetExceeded, true))
	}
	if r.Status != 0 {
		add(slog.Int(FieldStatus, r.Status))
	}
	add(slog.Float64(FieldDuration, float64(r.Duration.Microseconds())/1000))
	str(FieldReason, r.Reason)
	str(FieldError, r.Error)
	str(FieldRulesHash, r.RulesHash)
	str(FieldInspection, r.Inspection)
	if r.Stream {
		add(slog.Bool(FieldStream, true))
	}
	if r.Encoded {
		add(slog.Bool(FieldEncoded, true))
	}
	if r.BodyBytesMin != 0 {
		add(slog.Int64(FieldBodyBytesMin, r.BodyBytesMin))
	}
	if r.PartsIncomplete {
		add(slog.Bool(FieldPartsIncomplete, true))
	}
	l.l.LogAttrs(context.Background(), r.Level(), r.Kind, attrs...)
}
