package rules

import "net/netip"

// Action is what a rule does with a request or tunnel.
type Action uint8

const (
	// Allow lets the request through.
	Allow Action = iota
	// Log lets the request through and records it as notable: the audit
	// line is a warning, so that it stands out in a SIEM.
	Log
	// Block stops the request before any byte of its body is sent, unless
	// the rules are in report-only mode.
	Block
)

var actionNames = [...]string{Allow: "allow", Log: "log", Block: "block"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "invalid"
}

// ParseAction reads an action name as written in a rules file.
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if n == s {
			return Action(i), true
		}
	}
	return 0, false
}

// Destination is the class of a country relative to the domestic set. The
// classes, not the countries, are what most rules are written against.
type Destination uint8

const (
	// Internal is a private or loopback address the database does not place.
	Internal Destination = iota
	// Domestic is a country in the rules' domestic set.
	Domestic
	// Foreign is a known country outside the domestic set.
	Foreign
	// Unknown is an address the database does not place. It is treated as
	// foreign: the rule condition "destinations: [foreign]" matches it.
	Unknown
)

var destinationNames = [...]string{Internal: "internal", Domestic: "domestic", Foreign: "foreign", Unknown: "unknown"}

func (d Destination) String() string {
	if int(d) < len(destinationNames) {
		return destinationNames[d]
	}
	return "invalid"
}

// Tri is a fact that may not be known yet: whether a multipart body has
// file parts can only be seen in the body.
type Tri uint8

const (
	// TriUnknown means the fact has not been seen (yet).
	TriUnknown Tri = iota
	// TriNo means the fact is known to be false.
	TriNo
	// TriYes means the fact is known to be true.
	TriYes
)

// TriOf converts a known boolean.
func TriOf(b bool) Tri {
	if b {
		return TriYes
	}
	return TriNo
}

// Body holds what is known of a request body. The proxy fills it from the
// headers and, when a rule needs it, from a bounded prefix of the body.
type Body struct {
	// Present is true when the request has a body: a Content-Length above
	// zero, or a chunked body (which may turn out empty).
	Present bool
	// Size is the exact size when SizeExact, otherwise a lower bound (the
	// bytes seen so far of a body without Content-Length).
	Size      int64
	SizeExact bool
	// ContentType is the media type of the request, lower case, without
	// parameters ("multipart/form-data").
	ContentType string
	// Encoded is true when a Content-Encoding other than identity hides the
	// body's structure (a gzip-compressed multipart body is opaque).
	Encoded bool
	// FileParts says whether a multipart body carries at least one part
	// with a filename.
	FileParts Tri
	// PartTypes are the media types of the file parts seen so far (lower
	// case, without parameters); PartsComplete is true once the whole body
	// has been seen, so the list is final.
	PartTypes     []string
	PartsComplete bool
}

// Facts are everything a decision depends on, gathered by the proxy for one
// request or tunnel. The proxy fills the first group; Set.Prepare derives the
// second from the set's catalog and client groups.
type Facts struct {
	Client netip.Addr // the client's address
	Host   string     // normalised destination host (see NormalizeHost)
	Port   uint16
	Addr   netip.Addr // the address that will be dialed; invalid when resolution failed
	// Country is the country of Addr: an ISO code, CountryInternal or
	// CountryUnknown.
	Country string
	Method  string
	// Path is the URL path as CleanPath gives it (decoded, dot segments
	// removed), or "" when it cannot be seen (a tunnel).
	Path string
	// Stream is true for a CONNECT tunnel or an upgraded connection
	// (WebSocket): its upload is a byte stream governed by the upload
	// budget, and rules with body conditions do not apply to it.
	Stream bool
	Body   Body
	// Final is set when no more of the body will be seen before deciding:
	// a rule that might match on facts still unknown then blocks if it is a
	// block rule (fail closed) and is skipped otherwise.
	Final bool

	// Derived by Set.Prepare.
	Service  *Service  // nil when no catalog service matches
	Endpoint *Endpoint // nil unless one of the service's endpoints matches
	Group    *ClientGroup
	// Declared is the storage country the catalog declares for the service
	// or endpoint, "" when none.
	Declared string
	// Effective is the stricter of Country and Declared: a CDN edge in Japan
	// in front of storage in Korea is Korea. Rules match countries and
	// destinations against Effective.
	Effective   string
	Destination Destination
}

// ServiceName is the service's name, or "other": the value used in logs
// and metric labels.
func (f *Facts) ServiceName() string {
	if f.Service == nil {
		return OtherService
	}
	return f.Service.Name
}

// GroupName is the client group's name, or "other".
func (f *Facts) GroupName() string {
	if f.Group == nil {
		return OtherGroup
	}
	return f.Group.Name
}

// OtherService and OtherGroup name "no catalog service" and "no client
// group" in rules, logs and metric labels.
const (
	OtherService = "other"
	OtherGroup   = "other"
)

// Decision is the outcome of Set.Decide.
type Decision struct {
	// Action is the matching rule's action (or the default action).
	Action Action
	// Rule is the matching rule, nil for the default.
	Rule *Rule
	// ReportOnly is true when the rules are in report-only mode: a Block is
	// then not enforced, only recorded as "would block".
	ReportOnly bool
	// Budget is the upload budget for a stream, in bytes; Unlimited (-1)
	// for none.
	Budget int64
	// NeedBody is true when a rule might match on body facts that are not
	// known yet: the proxy should hold back a bounded prefix of the body,
	// update the facts, and decide again (with Final set if the body goes
	// on beyond what it may hold).
	NeedBody bool
	// FailClosed is true when a block rule matched only because facts were
	// still unknown at the final decision.
	FailClosed bool
}

// RuleName is the matching rule's name, or "default".
func (d Decision) RuleName() string {
	if d.Rule == nil {
		return DefaultRuleName
	}
	return d.Rule.Name
}

// DefaultRuleName names the default action in logs and metric labels.
const DefaultRuleName = "default"

// Blocks reports whether the request must be stopped: a block that is
// enforced (not report-only).
func (d Decision) Blocks() bool { return d.Action == Block && !d.ReportOnly }

// WouldBlock reports a block that report-only mode let through.
func (d Decision) WouldBlock() bool { return d.Action == Block && d.ReportOnly }
