// Package upload classifies the upload a request carries and, when the
// rules need to see into the body, holds back a bounded prefix of it.
//
// Most decisions are made on the headers alone: a POST with a body to a
// foreign address is an upload whatever it contains. Some rules ask more —
// "does this multipart form carry a file?", "is any file an image?", "is the
// body at least 10 MiB?" when it has no Content-Length — and those can only
// be answered from the body. The proxy then reads at most a fixed number of
// bytes (64 KiB by default) before anything is connected upstream, decides,
// and either sends the held prefix followed by the rest, or answers 403 with
// nothing sent. Memory per request is bounded by that limit, whatever the
// body's size.
//
// Non-goals: upload does not decompress bodies (a Content-Encoding makes the
// structure opaque, and the rules then treat it as unknown), and it does not
// dial or decide.
package upload

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/sekisho/sekisho/rules"
)

// Classify fills b from the request's headers. contentLength and
// transferEncoding are http.Request's fields (net/http has already
// validated and removed the raw headers).
func Classify(h http.Header, contentLength int64, transferEncoding []string, b *rules.Body) {
	*b = rules.Body{PartTypes: b.PartTypes[:0]}
	switch {
	case contentLength > 0:
		b.Present, b.Size, b.SizeExact = true, contentLength, true
	case contentLength == 0 && len(transferEncoding) == 0:
		b.SizeExact = true
	default: // chunked, or a length only EOF will tell
		b.Present = true
	}
	if ct := h.Get("Content-Type"); ct != "" {
		b.ContentType = mediaType(ct)
	}
	// Every Content-Encoding value counts (several headers are one list).
	for _, v := range h["Content-Encoding"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "identity") {
				b.Encoded = true
			}
		}
	}
	if !b.Present {
		b.FileParts, b.PartsComplete = rules.TriNo, true
		return
	}
	if strings.HasPrefix(b.ContentType, "multipart/") {
		b.FileParts = rules.TriUnknown // only the body tells
		return
	}
	b.FileParts, b.PartsComplete = rules.TriNo, true
}

// mediaType lower-cases a Content-Type and drops its parameters, without
// allocating for the common already-lower-case case.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// Boundary returns the multipart boundary of a Content-Type, or "".
func Boundary(contentType string) string {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return params["boundary"]
}

// Held is a body prefix read before deciding. Release returns its buffer.
type Held struct {
	buf  *[]byte
	Data []byte // the bytes read
	EOF  bool   // the body ended within the limit: Data is all of it
}

var pools sync.Map // buffer size → *sync.Pool of *[]byte

func getBuf(size int) *[]byte {
	p, _ := pools.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool).Get().(*[]byte)
}

// Hold reads up to limit bytes of body (and one more, to learn whether the
// body goes on). Reading a request body is what makes net/http send
// "100 Continue" to a client that asked for it, so this is only called once
// the headers alone could not decide.
func Hold(body io.Reader, limit int) (*Held, error) {
	h := &Held{buf: getBuf(limit + 1)}
	buf := *h.buf
	n := 0
	for n < len(buf) {
		k, err := body.Read(buf[n:])
		n += k
		if n == len(buf) {
			break // more than limit: whether it ends here does not matter
		}
		if err == io.EOF {
			h.Data, h.EOF = buf[:n], true
			return h, nil
		}
		if err != nil {
			// Including io.ErrUnexpectedEOF: a client that broke off in
			// the middle of its body has not sent a body to decide on.
			h.Data = buf[:n]
			return h, err
		}
	}
	h.Data = buf[:n]
	return h, nil // the body goes on beyond the limit
}

// Release returns the buffer to its pool. Data must not be used after.
func (h *Held) Release() {
	if h.buf == nil {
		return
	}
	if p, ok := pools.Load(len(*h.buf)); ok {
		p.(*sync.Pool).Put(h.buf)
	}
	h.buf, h.Data = nil, nil
}

// Update completes the body facts from a held prefix: the exact size when
// the body ended, and for multipart bodies the file parts seen in it.
// partTypes receives the media types of the file parts (it is b.PartTypes'
// backing store, so that classification does not allocate per request).
func Update(b *rules.Body, h *Held, boundary string) {
	if h.EOF {
		b.Size, b.SizeExact = int64(len(h.Data)), true
		b.Present = len(h.Data) > 0
		if !b.Present {
			b.FileParts, b.PartsComplete = rules.TriNo, true
			return
		}
	} else if int64(len(h.Data)) > b.Size {
		b.Size = int64(len(h.Data))
	}
	if !strings.HasPrefix(b.ContentType, "multipart/") || b.Encoded || boundary == "" {
		return
	}
	files, types, complete := SniffMultipart(h.Data, boundary, h.EOF, b.PartTypes[:0])
	b.PartTypes = types
	switch {
	case files:
		b.FileParts = rules.TriYes
	case complete:
		b.FileParts = rules.TriNo
	}
	b.PartsComplete = complete
}

// maxPartTypes bounds the file part types recorded per request.
const maxPartTypes = 16

// SniffMultipart walks the part headers of a multipart body prefix the way
// mime/multipart (and the servers that share its reading) does, so that
// what the rules see is what the server will see. It reports whether a part
// with a filename was seen, appends the media types of file parts
// (application/octet-stream when a file part has none) to types, and
// whether the closing delimiter was reached so that the list is complete.
//
// Delimiters are whole lines ("--boundary" and optional blanks), the first
// one found at the start of a line; later ones are searched for after the
// line ending the first one used, as mime/multipart does. Folded header
// lines are joined. Anything cut off by the end of data leaves the answer
// incomplete, and the rules then fail closed; atEOF says data is the whole
// body, so that a closing delimiter without a line ending at its very end
// counts (in a prefix, "--boundary--" might go on as "--boundary--x", which
// is part content). An empty file input (filename="" and no content) is not
// a file.
func SniffMultipart(data []byte, boundary string, atEOF bool, types []string) (files bool, out []string, complete bool) {
	out = types
	dash := []byte("--" + boundary)
	// Preamble: skip lines until a delimiter line.
	pos := 0
	var nl []byte
	for {
		line, term, next, ok := readLine(data, pos)
		if !ok {
			if atEOF && delimiterKind(data[pos:], dash) == closeDelimiter {
				return files, out, true
			}
			return files, out, false
		}
		pos = next
		if k := delimiterKind(line, dash); k != notDelimiter {
			if k == closeDelimiter {
				return files, out, true
			}
			nl = term
			break
		}
	}
	nlDash := append(append([]byte{}, nl...), dash...)
	overflow := false
	for {
		// Part headers, up to an empty line.
		var headers [][]byte
		ownLast := false // the last header is a copy (folded), safe to append to
		for {
			line, _, next, ok := readLine(data, pos)
			if !ok {
				return files, out, false // headers cut off
			}
			pos = next
			if len(line) == 0 {
				break
			}
			if (line[0] == ' ' || line[0] == '\t') && len(headers) > 0 {
				// An obsolete folded line: joined to the header before it,
				// copied once and then appended to (not copied per fold,
				// which is quadratic in a prefix of folds).
				last := headers[len(headers)-1]
				if !ownLast {
					last = append([]byte(nil), last...)
					ownLast = true
				}
				headers[len(headers)-1] = append(append(last, ' '), bytes.TrimLeft(line, " \t")...)
				continue
			}
			headers = append(headers, line)
			ownLast = false
		}
		isFile, emptyName, ct := partHeaders(headers)
		record := func() {
			files = true
			if ct == "" {
				ct = "application/octet-stream"
			}
			if len(out) < maxPartTypes {
				out = append(out, ct)
			} else {
				overflow = true
			}
		}
		if isFile && !emptyName {
			record() // known as soon as its headers are
		}
		// Part content, up to the next delimiter line.
		end, after, kind := nextDelimiter(data, pos, nlDash, atEOF)
		if isFile && emptyName && (kind == notDelimiter || end > pos) {
			record() // an unnamed file with content, or content not seen: a file
		}
		if kind == notDelimiter {
			return files, out, false // content cut off
		}
		if kind == closeDelimiter {
			return files, out, !overflow
		}
		pos = after
	}
}

const (
	notDelimiter = iota
	partDelimiter
	closeDelimiter
)

// readLine returns the line at pos without its terminator ("\r\n" or "\n"),
// the terminator, and where the next line starts; ok is false when the line
// is not terminated within data.
func readLine(data []byte, pos int) (line, term []byte, next int, ok bool) {
	i := bytes.IndexByte(data[pos:], '\n')
	if i < 0 {
		return nil, nil, 0, false
	}
	line = data[pos : pos+i]
	term = data[pos+i : pos+i+1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line, term = line[:len(line)-1], data[pos+i-1:pos+i+1]
	}
	return line, term, pos + i + 1, true
}

// delimiterKind classifies a whole line: "--boundary" or "--boundary--",
// each optionally followed by blanks.
func delimiterKind(line, dash []byte) int {
	if !bytes.HasPrefix(line, dash) {
		return notDelimiter
	}
	rest := line[len(dash):]
	if bytes.HasPrefix(rest, []byte("--")) {
		if len(bytes.TrimRight(rest[2:], " \t")) == 0 {
			return closeDelimiter
		}
		return notDelimiter
	}
	if len(bytes.TrimRight(rest, " \t")) == 0 {
		return partDelimiter
	}
	return notDelimiter
}

// nextDelimiter finds the delimiter that ends the part content starting at
// pos: nlDash followed by the rest of a delimiter line. It returns where the
// content ends, where the next part's headers start, and the delimiter's
// kind (notDelimiter when data ends first).
func nextDelimiter(data []byte, pos int, nlDash []byte, atEOF bool) (end, after, kind int) {
	dash := nlDash[bytes.IndexByte(nlDash, '-'):]
	for search := pos; ; {
		i := bytes.Index(data[search:], nlDash)
		if i < 0 {
			return 0, 0, notDelimiter
		}
		start := search + i
		lineStart := start + len(nlDash) - len(dash)
		line, _, next, ok := readLine(data, lineStart)
		if !ok {
			if atEOF && delimiterKind(data[lineStart:], dash) == closeDelimiter {
				return start, len(data), closeDelimiter
			}
			return 0, 0, notDelimiter // the delimiter line is cut off
		}
		if k := delimiterKind(line, dash); k != notDelimiter {
			return start, next, k
		}
		search = start + 1
	}
}

func partHeaders(lines [][]byte) (isFile, emptyName bool, contentType string) {
	for _, line := range lines {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Disposition")):
			_, params, err := mime.ParseMediaType(string(value))
			if err == nil {
				fn, plain := params["filename"]
				_, ext := params["filename*"]
				if plain || ext {
					isFile = true
					emptyName = plain && fn == "" && !ext
				}
			} else if bytes.Contains(bytes.ToLower(value), []byte("filename")) {
				isFile = true // unparsable but names a file: count it (fail closed)
			}
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Type")):
			contentType = mediaType(string(value))
		}
	}
	return isFile, emptyName, contentType
}
