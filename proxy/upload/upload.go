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
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(strings.TrimSpace(ce), "identity") {
		b.Encoded = true
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
	n, err := io.ReadFull(body, *h.buf)
	h.Data = (*h.buf)[:n]
	switch err {
	case nil:
		return h, nil // the body goes on beyond the limit
	case io.EOF, io.ErrUnexpectedEOF:
		h.EOF = true
		return h, nil
	}
	return h, err
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
	files, types, complete := SniffMultipart(h.Data, boundary, b.PartTypes[:0])
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

// SniffMultipart walks the part headers of a multipart body prefix. It
// reports whether a part with a filename was seen, appends the media types
// of file parts (application/octet-stream when a file part has none) to
// types, and whether the closing delimiter was reached so that the list is
// complete. A part whose headers are cut off by the end of data is not
// counted; more than maxPartTypes file parts leave the list incomplete.
func SniffMultipart(data []byte, boundary string, types []string) (files bool, out []string, complete bool) {
	out = types
	delim := "--" + boundary
	nlDelim := "\n" + delim
	i := bytes.Index(data, []byte(delim)) // the first may follow a preamble
	if i < 0 {
		return false, out, false
	}
	data = data[i:]
	overflow := false
	for {
		rest := data[len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			return files, out, !overflow
		}
		eol := bytes.IndexByte(rest, '\n') // skip transport padding
		if eol < 0 {
			return files, out, false
		}
		rest = rest[eol+1:]
		end, sepLen := bytes.Index(rest, []byte("\r\n\r\n")), 4
		if e2 := bytes.Index(rest, []byte("\n\n")); e2 >= 0 && (end < 0 || e2 < end) {
			end, sepLen = e2, 2
		}
		if end < 0 {
			return files, out, false // headers cut off
		}
		if isFile, ct := partHeaders(rest[:end]); isFile {
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
		body := rest[end+sepLen:]
		next := bytes.Index(body, []byte(nlDelim))
		if next < 0 {
			return files, out, false
		}
		data = body[next+1:]
	}
}

func partHeaders(block []byte) (isFile bool, contentType string) {
	for len(block) > 0 {
		line := block
		if k := bytes.IndexByte(block, '\n'); k >= 0 {
			line, block = block[:k], block[k+1:]
		} else {
			block = nil
		}
		line = bytes.TrimRight(line, "\r")
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Disposition")):
			_, params, err := mime.ParseMediaType(string(value))
			if err == nil {
				if _, ok := params["filename"]; ok {
					isFile = true
				}
			} else if bytes.Contains(bytes.ToLower(value), []byte("filename")) {
				isFile = true // unparsable but names a file: count it (fail closed)
			}
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Type")):
			contentType = mediaType(string(value))
		}
	}
	return isFile, contentType
}
