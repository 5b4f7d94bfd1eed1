package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Reading audit lines back. `sekisho report` reads months of them and
// `sekisho whatif` replays them, so the decoder is written for that: it
// streams line by line, decodes into a caller-owned Entry that is reused,
// interns the strings that repeat (service, country, action, ...), and can
// skip the fields a caller does not need, so that a line costs no
// allocation at all in the common case. Unknown fields (added by a newer
// sekisho, or by a SIEM that re-exports the lines) are skipped; a line that
// is not a JSON object with a time and a kind is an error the caller
// counts, never a reason to stop.

// Entry is one audit line read back: the Record that was logged, and what
// slog added to it.
type Entry struct {
	// Time is when the line was written (the end of the request), in the
	// UTC offset the line was written with: the city hall's local time.
	Time  time.Time
	Level string // INFO or WARN
	Record
}

// MaxLineBytes bounds one audit line. Real lines are well under 2 KiB; a
// longer one is reported as malformed and skipped, so that a corrupt file
// cannot make the reader buffer without limit.
const MaxLineBytes = 1 << 20

// maxIntern bounds the table of interned strings per Decoder: values that
// repeat (services, countries, hosts) are shared; once the table is full,
// new values are allocated as they come.
const maxIntern = 8192

// Decoder decodes single audit lines. It keeps an intern table, so reuse
// one Decoder for many lines; it is not safe for concurrent use.
type Decoder struct {
	skip    uint64 // bit per field index: do not decode
	intern  map[string]string
	zones   map[int]*time.Location
	scratch []byte
}

// NewDecoder returns a Decoder that decodes every field.
func NewDecoder() *Decoder {
	return &Decoder{intern: make(map[string]string, 256), zones: make(map[int]*time.Location)}
}

// Skip makes the decoder leave the named fields (Field* constants) at their
// zero value. A report that does not need ids, client addresses or paths
// skips them and allocates nothing per line. Unknown names are ignored.
func (d *Decoder) Skip(fields ...string) {
	for _, f := range fields {
		if i := fieldIndex(f); i >= 0 {
			d.skip |= 1 << uint(i)
		}
	}
}

// fieldIndex numbers the fields the decoder knows, for the skip mask.
func fieldIndex(name string) int {
	switch name {
	case FieldID:
		return 0
	case FieldClient:
		return 1
	case FieldClientGroup:
		return 2
	case FieldMethod:
		return 3
	case FieldScheme:
		return 4
	case FieldHost:
		return 5
	case FieldPath:
		return 6
	case FieldAddr:
		return 7
	case FieldError:
		return 8
	case FieldRulesHash:
		return 9
	case FieldEndpoint:
		return 10
	case FieldPartTypes:
		return 11
	case FieldContentType:
		return 12
	case FieldReason:
		return 13
	case FieldInspection:
		return 14
	case FieldASN:
		return 15
	case FieldDuration:
		return 16
	}
	return -1
}

func (d *Decoder) skips(field string) bool {
	i := fieldIndex(field)
	return i >= 0 && d.skip&(1<<uint(i)) != 0
}

// SyntaxError is a line that is not an audit line.
type SyntaxError struct {
	Offset int // byte offset in the line
	Msg    string
}

// Error says what is wrong and where in the line.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%s (at byte %d)", e.Msg, e.Offset+1)
}

// errf builds a SyntaxError at the cursor.
func (c *cursor) errf(format string, args ...any) error {
	return &SyntaxError{Offset: c.i, Msg: fmt.Sprintf(format, args...)}
}

type cursor struct {
	b []byte
	i int
}

func (c *cursor) ws() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\r', '\n':
			c.i++
		default:
			return
		}
	}
}

func (c *cursor) expect(ch byte) error {
	c.ws()
	if c.i >= len(c.b) {
		return c.errf("unexpected end of line, want %q", ch)
	}
	if c.b[c.i] != ch {
		return c.errf("unexpected %q, want %q", c.b[c.i], ch)
	}
	c.i++
	return nil
}

// rawString reads a JSON string at the cursor and returns its bytes
// between the quotes, and whether they hold escapes.
func (c *cursor) rawString() (raw []byte, escaped bool, err error) {
	c.ws()
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		return nil, false, c.errf("want a string")
	}
	c.i++
	start := c.i
	rest := c.b[start:]
	q := bytes.IndexByte(rest, '"')
	if q < 0 {
		return nil, false, c.errf("unterminated string")
	}
	if bytes.IndexByte(rest[:q], '\\') < 0 {
		c.i = start + q + 1
		return rest[:q], false, nil
	}
	for j := start; j < len(c.b); j++ {
		switch c.b[j] {
		case '\\':
			j++
		case '"':
			c.i = j + 1
			return c.b[start:j], true, nil
		}
	}
	return nil, false, c.errf("unterminated string")
}

// unescape decodes a JSON string's escapes into buf.
func unescape(buf, raw []byte) ([]byte, error) {
	for i := 0; i < len(raw); i++ {
		ch := raw[i]
		if ch != '\\' {
			buf = append(buf, ch)
			continue
		}
		i++
		if i >= len(raw) {
			return buf, errors.New("bad escape")
		}
		switch raw[i] {
		case '"', '\\', '/':
			buf = append(buf, raw[i])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(raw[i+1:])
			if !ok {
				return buf, errors.New(`bad \u escape`)
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(0), false
				if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
					r2, ok2 = hex4(raw[i+3:])
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return buf, fmt.Errorf("bad escape \\%c", raw[i])
		}
	}
	return buf, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// str reads a string value; interned values share one copy.
func (d *Decoder) str(c *cursor, intern bool) (string, error) {
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == 'n' {
		return "", c.literal("null")
	}
	raw, esc, err := c.rawString()
	if err != nil {
		return "", err
	}
	if esc {
		d.scratch, err = unescape(d.scratch[:0], raw)
		if err != nil {
			return "", c.errf("%v", err)
		}
		raw = d.scratch
	}
	if !intern {
		return string(raw), nil
	}
	return d.internBytes(raw), nil
}

func (d *Decoder) internBytes(b []byte) string {
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.intern) < maxIntern {
		d.intern[s] = s
	}
	return s
}

func (c *cursor) literal(lit string) error {
	if !bytes.HasPrefix(c.b[c.i:], []byte(lit)) {
		return c.errf("want %s", lit)
	}
	c.i += len(lit)
	return nil
}

// number returns the bytes of a JSON number at the cursor.
func (c *cursor) number() ([]byte, error) {
	c.ws()
	start := c.i
	for c.i < len(c.b) {
		switch ch := c.b[c.i]; {
		case ch >= '0' && ch <= '9', ch == '-', ch == '+', ch == '.', ch == 'e', ch == 'E':
			c.i++
			continue
		}
		break
	}
	if c.i == start {
		return nil, c.errf("want a number")
	}
	return c.b[start:c.i], nil
}

// int reads an integer value (null is 0).
func (c *cursor) int() (int64, error) {
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == 'n' {
		return 0, c.literal("null")
	}
	start := c.i
	num, err := c.number()
	if err != nil {
		return 0, err
	}
	neg := false
	if num[0] == '-' {
		neg, num = true, num[1:]
	}
	if len(num) == 0 || len(num) > 18 {
		c.i = start
		return 0, c.errf("want an integer")
	}
	var n int64
	for _, ch := range num {
		if ch < '0' || ch > '9' {
			c.i = start
			return 0, c.errf("want an integer")
		}
		n = n*10 + int64(ch-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// float reads a number value as float64 (null is 0).
func (c *cursor) float() (float64, error) {
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == 'n' {
		return 0, c.literal("null")
	}
	start := c.i
	num, err := c.number()
	if err != nil {
		return 0, err
	}
	// Fast path: digits, optionally a fraction of up to 9 digits, which is
	// how slog writes duration_ms.
	var ip, fp, scale int64 = 0, 0, 1
	neg := false
	s := num
	if s[0] == '-' {
		neg, s = true, s[1:]
	}
	ok := len(s) > 0 && len(s) <= 18
	j := 0
	for ; ok && j < len(s) && s[j] >= '0' && s[j] <= '9'; j++ {
		ip = ip*10 + int64(s[j]-'0')
	}
	if ok && j < len(s) && s[j] == '.' && len(s)-j-1 <= 9 && j+1 < len(s) {
		for j++; j < len(s) && s[j] >= '0' && s[j] <= '9'; j++ {
			fp = fp*10 + int64(s[j]-'0')
			scale *= 10
		}
	}
	if ok && j == len(s) && j > 0 {
		v := float64(ip) + float64(fp)/float64(scale)
		if neg {
			v = -v
		}
		return v, nil
	}
	v, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		c.i = start
		return 0, c.errf("want a number")
	}
	return v, nil
}

// bool reads true, false or null.
func (c *cursor) bool() (bool, error) {
	c.ws()
	if c.i < len(c.b) {
		switch c.b[c.i] {
		case 't':
			return true, c.literal("true")
		case 'f':
			return false, c.literal("false")
		case 'n':
			return false, c.literal("null")
		}
	}
	return false, c.errf("want true or false")
}

// skipValue steps over any JSON value.
func (c *cursor) skipValue(depth int) error {
	if depth > 32 {
		return c.errf("nested too deeply")
	}
	c.ws()
	if c.i >= len(c.b) {
		return c.errf("unexpected end of line, want a value")
	}
	switch c.b[c.i] {
	case '"':
		_, _, err := c.rawString()
		return err
	case 't':
		return c.literal("true")
	case 'f':
		return c.literal("false")
	case 'n':
		return c.literal("null")
	case '{', '[':
		open := c.b[c.i]
		closing := byte('}')
		if open == '[' {
			closing = ']'
		}
		c.i++
		c.ws()
		if c.i < len(c.b) && c.b[c.i] == closing {
			c.i++
			return nil
		}
		for {
			if open == '{' {
				if _, _, err := c.rawString(); err != nil {
					return err
				}
				if err := c.expect(':'); err != nil {
					return err
				}
			}
			if err := c.skipValue(depth + 1); err != nil {
				return err
			}
			c.ws()
			if c.i >= len(c.b) {
				return c.errf("unexpected end of line in %c", open)
			}
			switch c.b[c.i] {
			case ',':
				c.i++
			case closing:
				c.i++
				return nil
			default:
				return c.errf("unexpected %q in %c", c.b[c.i], open)
			}
		}
	}
	_, err := c.number()
	return err
}

// Decode decodes one line into e, overwriting it. Strings that repeat are
// shared between entries; e.PartTypes' backing array is reused, so copy it
// to keep it past the next Decode into the same Entry.
func (d *Decoder) Decode(line []byte, e *Entry) error {
	parts := e.PartTypes[:0]
	*e = Entry{}
	c := cursor{b: line}
	if err := c.expect('{'); err != nil {
		return err
	}
	var haveTime bool
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
	} else {
		for {
			key, esc, err := c.rawString()
			if err != nil {
				return err
			}
			if esc {
				d.scratch, err = unescape(d.scratch[:0], key)
				if err != nil {
					return c.errf("key: %v", err)
				}
				key = d.scratch
			}
			if err := c.expect(':'); err != nil {
				return err
			}
			if err := d.field(&c, string(key), e, &parts, &haveTime); err != nil {
				return err
			}
			c.ws()
			if c.i >= len(c.b) {
				return c.errf("unexpected end of line, want , or }")
			}
			if c.b[c.i] == '}' {
				c.i++
				break
			}
			if c.b[c.i] != ',' {
				return c.errf("unexpected %q, want , or }", c.b[c.i])
			}
			c.i++
		}
	}
	c.ws()
	if c.i != len(c.b) {
		return c.errf("unexpected data after the object")
	}
	if !haveTime {
		return &SyntaxError{Msg: "not an audit line: no " + slog.TimeKey}
	}
	if e.Kind == "" {
		return &SyntaxError{Msg: "not an audit line: no " + FieldKind}
	}
	e.PartTypes = parts
	return nil
}

// field decodes the value of one key; an error names the key.
func (d *Decoder) field(c *cursor, key string, e *Entry, parts *[]string, haveTime *bool) error {
	err := d.fieldValue(c, key, e, parts, haveTime)
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			se.Msg = key + ": " + se.Msg
		}
	}
	return err
}

// fieldValue decodes the value of one key. The switch on key, a
// conversion from the line's bytes, does not allocate.
func (d *Decoder) fieldValue(c *cursor, key string, e *Entry, parts *[]string, haveTime *bool) error {
	var err error
	if d.skip != 0 && d.skips(key) {
		return c.skipValue(0)
	}
	r := &e.Record
	switch key {
	case slog.TimeKey:
		var raw []byte
		if raw, _, err = c.rawString(); err == nil {
			if e.Time, err = d.parseTime(raw); err != nil {
				return &SyntaxError{Offset: c.i, Msg: err.Error()}
			}
			*haveTime = true
		}
	case slog.LevelKey:
		e.Level, err = d.str(c, true)
	case FieldID:
		r.ID, err = d.str(c, false)
	case FieldKind:
		r.Kind, err = d.str(c, true)
	case FieldClient:
		r.Client, err = d.str(c, false)
	case FieldClientGroup:
		r.ClientGroup, err = d.str(c, true)
	case FieldMethod:
		r.Method, err = d.str(c, true)
	case FieldScheme:
		r.Scheme, err = d.str(c, true)
	case FieldHost:
		r.Host, err = d.str(c, true)
	case FieldPort:
		var n int64
		if n, err = c.int(); err == nil {
			if n < 0 || n > math.MaxUint16 {
				return c.errf("port %d out of range", n)
			}
			r.Port = uint16(n)
		}
	case FieldPath:
		r.Path, err = d.str(c, false)
	case FieldAddr:
		r.Addr, err = d.str(c, false)
	case FieldCountry:
		r.Country, err = d.str(c, true)
	case FieldDeclared:
		r.Declared, err = d.str(c, true)
	case FieldEffective:
		r.Effective, err = d.str(c, true)
	case FieldDestination:
		r.Destination, err = d.str(c, true)
	case FieldASN:
		var n int64
		if n, err = c.int(); err == nil {
			if n < 0 || n > math.MaxUint32 {
				return c.errf("asn %d out of range", n)
			}
			r.ASN = uint32(n)
		}
	case FieldService:
		r.Service, err = d.str(c, true)
	case FieldEndpoint:
		r.Endpoint, err = d.str(c, true)
	case FieldRule:
		r.Rule, err = d.str(c, true)
	case FieldAction:
		r.Action, err = d.str(c, true)
	case FieldWouldBlock:
		r.WouldBlock, err = c.bool()
	case FieldFailClosed:
		r.FailClosed, err = c.bool()
	case FieldMode:
		r.Mode, err = d.str(c, true)
	case FieldBodyBytes:
		r.BodyBytes, err = c.int()
	case FieldContentType:
		r.ContentType, err = d.str(c, true)
	case FieldFileParts:
		r.FileParts, err = d.str(c, true)
	case FieldPartTypes:
		err = d.strings(c, parts)
	case FieldUploadBytes:
		r.UploadBytes, err = c.int()
	case FieldDownloadBytes:
		r.DownloadBytes, err = c.int()
	case FieldBudget:
		r.Budget, err = c.int()
	case FieldBudgetExceeded:
		r.BudgetExceeded, err = c.bool()
	case FieldStatus:
		var n int64
		n, err = c.int()
		r.Status = int(n)
	case FieldDuration:
		var ms float64
		if ms, err = c.float(); err == nil {
			r.Duration = time.Duration(math.Round(ms*1000)) * time.Microsecond
		}
	case FieldReason:
		r.Reason, err = d.str(c, true)
	case FieldError:
		r.Error, err = d.str(c, false)
	case FieldRulesHash:
		r.RulesHash, err = d.str(c, true)
	case FieldInspection:
		r.Inspection, err = d.str(c, true)
	case FieldStream:
		r.Stream, err = c.bool()
	case FieldEncoded:
		r.Encoded, err = c.bool()
	case FieldBodyBytesMin:
		r.BodyBytesMin, err = c.int()
	case FieldPartsIncomplete:
		r.PartsIncomplete, err = c.bool()
	default:
		err = c.skipValue(0)
	}
	return err
}

// strings reads an array of strings (or null).
func (d *Decoder) strings(c *cursor, out *[]string) error {
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == 'n' {
		return c.literal("null")
	}
	if err := c.expect('['); err != nil {
		return err
	}
	*out = (*out)[:0]
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
		return nil
	}
	for {
		s, err := d.str(c, true)
		if err != nil {
			return err
		}
		*out = append(*out, s)
		c.ws()
		if c.i >= len(c.b) {
			return c.errf("unexpected end of line in [")
		}
		switch c.b[c.i] {
		case ',':
			c.i++
		case ']':
			c.i++
			return nil
		default:
			return c.errf("unexpected %q in [", c.b[c.i])
		}
	}
}

// parseTime reads the RFC 3339 time slog writes
// ("2026-06-18T10:11:12.345+09:00"), keeping the line's UTC offset. It is
// written out by hand because it runs once per line.
func (d *Decoder) parseTime(b []byte) (time.Time, error) {
	bad := func() (time.Time, error) { return time.Time{}, fmt.Errorf("time %q is not RFC 3339", b) }
	if len(b) < len("2006-01-02T15:04:05Z") || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return bad()
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(b[0:4])
	month, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hour, ok4 := num(b[11:13])
	minute, ok5 := num(b[14:16])
	sec, ok6 := num(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return bad()
	}
	rest := b[19:]
	nsec := 0
	if len(rest) > 0 && rest[0] == '.' {
		j := 1
		scale := 100_000_000
		for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
			nsec += int(rest[j]-'0') * scale
			scale /= 10
		}
		if j == 1 {
			return bad()
		}
		rest = rest[j:]
	}
	offset := 0
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := num(rest[1:3])
		om, ok2 := num(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return bad()
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return bad()
	}
	unix := daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec) - int64(offset)
	return time.Unix(unix, int64(nsec)).In(d.zone(offset)), nil
}

// zone returns a shared fixed zone for a UTC offset.
func (d *Decoder) zone(offset int) *time.Location {
	if offset == 0 {
		return time.UTC
	}
	if z, ok := d.zones[offset]; ok {
		return z
	}
	z := time.FixedZone("", offset)
	d.zones[offset] = z
	return z
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is days since 1970-01-01 of a proleptic Gregorian date
// (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// LineError is a line that could not be decoded: the caller counts it and
// reads on.
type LineError struct {
	Line int // 1-based line number in the (decompressed) input
	Err  error
}

// Error says which line and what is wrong with it.
func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the SyntaxError (or other cause).
func (e *LineError) Unwrap() error { return e.Err }

// Reader reads audit lines from a stream: a log file, a rotated file
// compressed with gzip (recognised by its magic bytes, whatever its name),
// or standard input.
type Reader struct {
	*Decoder
	br         *bufio.Reader
	gzip       bool
	inflate    *inflater
	line       int
	long       []byte
	pendingErr error
}

// NewReader starts reading r. It fails only when r starts like gzip but is
// not (a corrupt header) or cannot be read at all.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	rd := &Reader{Decoder: NewDecoder(), br: br}
	magic, err := br.Peek(2)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		// Several gzip members (a file appended to after compression) are
		// one stream, as with zcat.
		rd.inflate = newInflater(zr)
		rd.br = bufio.NewReaderSize(rd.inflate, 256<<10)
		rd.gzip = true
	}
	return rd, nil
}

// Close stops the decompression of a gzip input that was not read to its
// end. It does not close the underlying reader.
func (r *Reader) Close() error {
	if r.inflate != nil {
		r.inflate.close()
	}
	return nil
}

// inflater decompresses on a goroutine of its own, a few chunks ahead of
// the decoder: on a two-core machine, reading a rotated log then takes the
// time of the slower of the two, not of both. Its memory is a fixed
// handful of chunks.
type inflater struct {
	full    chan chunk
	free    chan []byte
	cur     []byte
	curBuf  []byte
	err     error
	done    chan struct{}
	stopped sync.Once
}

type chunk struct {
	b   []byte
	err error
}

const inflateChunks, inflateChunkBytes = 4, 256 << 10

func newInflater(zr io.Reader) *inflater {
	in := &inflater{full: make(chan chunk, inflateChunks), free: make(chan []byte, inflateChunks), done: make(chan struct{})}
	for range inflateChunks {
		in.free <- make([]byte, inflateChunkBytes)
	}
	go in.run(zr)
	return in
}

func (in *inflater) run(zr io.Reader) {
	for {
		var buf []byte
		select {
		case buf = <-in.free:
		case <-in.done:
			return
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var k int
			k, err = zr.Read(buf[n:])
			n += k
		}
		select {
		case in.full <- chunk{buf[:n], err}:
		case <-in.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read hands out the decompressed chunks in order.
func (in *inflater) Read(p []byte) (int, error) {
	for len(in.cur) == 0 {
		if in.err != nil {
			return 0, in.err
		}
		if in.curBuf != nil {
			in.free <- in.curBuf[:cap(in.curBuf)]
			in.curBuf = nil
		}
		c := <-in.full
		in.cur, in.curBuf, in.err = c.b, c.b, c.err
	}
	n := copy(p, in.cur)
	in.cur = in.cur[n:]
	return n, nil
}

func (in *inflater) close() { in.stopped.Do(func() { close(in.done) }) }

// Gzip reports whether the input is gzip-compressed.
func (r *Reader) Gzip() bool { return r.gzip }

// Line is the number of the last line read (1-based).
func (r *Reader) Line() int { return r.line }

// Next decodes the next non-blank line into e. It returns io.EOF at the
// end, a *LineError for a malformed line (read on: the next call continues
// with the line after it), and any other error when the input itself
// cannot be read further (a truncated gzip file).
func (r *Reader) Next(e *Entry) error {
	for {
		if r.pendingErr != nil {
			return r.pendingErr
		}
		line, tooLong, err := r.readLine()
		if err != nil {
			if err != io.EOF {
				err = fmt.Errorf("after line %d: %w", r.line, err)
			}
			// Return what was read first; the error comes with the next call.
			r.pendingErr = err
			if len(line) == 0 && !tooLong {
				return err
			}
		}
		r.line++
		if tooLong {
			return &LineError{Line: r.line, Err: fmt.Errorf("longer than %d bytes", MaxLineBytes)}
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := r.Decode(line, e); err != nil {
			return &LineError{Line: r.line, Err: err}
		}
		return nil
	}
}

// readLine returns the next line without its line ending. A line longer
// than MaxLineBytes is skipped to its end and reported as tooLong.
func (r *Reader) readLine() (line []byte, tooLong bool, err error) {
	line, err = r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = r.br.ReadSlice('\n')
			if !tooLong {
				r.long = append(r.long, line...)
				if len(r.long) > MaxLineBytes {
					tooLong, r.long = true, r.long[:0]
				}
			}
		}
		if !tooLong {
			line = r.long
		} else {
			line = nil
		}
	}
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	return line, tooLong, err
}
