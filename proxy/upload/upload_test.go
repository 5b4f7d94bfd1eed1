package upload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"

	"github.com/sekisho/sekisho/rules"
)

func TestClassify(t *testing.T) {
	const mp = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"
	tests := []struct {
		name string
		hdr  map[string]string
		cl   int64
		te   []string
		ce2  []string // further Content-Encoding header lines
		want rules.Body
	}{
		{
			name: "Content-Length > 0",
			hdr:  map[string]string{"Content-Type": "application/octet-stream"},
			cl:   1234,
			want: rules.Body{Present: true, Size: 1234, SizeExact: true, ContentType: "application/octet-stream", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "Content-Length 0",
			hdr:  map[string]string{"Content-Type": "application/json"},
			cl:   0,
			want: rules.Body{SizeExact: true, ContentType: "application/json", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "Content-Length 0 multipart has no file parts",
			hdr:  map[string]string{"Content-Type": mp},
			cl:   0,
			want: rules.Body{SizeExact: true, ContentType: "multipart/form-data", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "no body, no headers",
			want: rules.Body{SizeExact: true, FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "chunked",
			hdr:  map[string]string{"Content-Type": "text/plain"},
			cl:   -1, te: []string{"chunked"},
			want: rules.Body{Present: true, ContentType: "text/plain", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "unknown length without Transfer-Encoding (HTTP/2)",
			cl:   -1,
			want: rules.Body{Present: true, FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "chunked multipart: only the body tells",
			hdr:  map[string]string{"Content-Type": mp},
			cl:   -1, te: []string{"chunked"},
			want: rules.Body{Present: true, ContentType: "multipart/form-data", FileParts: rules.TriUnknown},
		},
		{
			name: "multipart with length: only the body tells",
			hdr:  map[string]string{"Content-Type": mp},
			cl:   10 << 20,
			want: rules.Body{Present: true, Size: 10 << 20, SizeExact: true, ContentType: "multipart/form-data", FileParts: rules.TriUnknown},
		},
		{
			name: "multipart/mixed",
			hdr:  map[string]string{"Content-Type": "multipart/mixed; boundary=x"},
			cl:   10,
			want: rules.Body{Present: true, Size: 10, SizeExact: true, ContentType: "multipart/mixed", FileParts: rules.TriUnknown},
		},
		{
			name: "Content-Type upper case with parameters",
			hdr:  map[string]string{"Content-Type": "Multipart/Form-Data; Boundary=ABC"},
			cl:   10,
			want: rules.Body{Present: true, Size: 10, SizeExact: true, ContentType: "multipart/form-data", FileParts: rules.TriUnknown},
		},
		{
			name: "Content-Type with parameters and spaces",
			hdr:  map[string]string{"Content-Type": "  application/json ; charset=utf-8"},
			cl:   2,
			want: rules.Body{Present: true, Size: 2, SizeExact: true, ContentType: "application/json", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "Content-Type upper case without parameters",
			hdr:  map[string]string{"Content-Type": "IMAGE/PNG"},
			cl:   2,
			want: rules.Body{Present: true, Size: 2, SizeExact: true, ContentType: "image/png", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "gzip",
			hdr:  map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"},
			cl:   100,
			want: rules.Body{Present: true, Size: 100, SizeExact: true, ContentType: "application/json", Encoded: true, FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "gzip multipart stays unknown",
			hdr:  map[string]string{"Content-Type": mp, "Content-Encoding": "gzip"},
			cl:   -1, te: []string{"chunked"},
			want: rules.Body{Present: true, ContentType: "multipart/form-data", Encoded: true, FileParts: rules.TriUnknown},
		},
		{
			name: "identity is not an encoding",
			hdr:  map[string]string{"Content-Type": "text/plain", "Content-Encoding": "identity"},
			cl:   5,
			want: rules.Body{Present: true, Size: 5, SizeExact: true, ContentType: "text/plain", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "Identity with spaces and capitals",
			hdr:  map[string]string{"Content-Encoding": " Identity "},
			cl:   5,
			want: rules.Body{Present: true, Size: 5, SizeExact: true, FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "Content-Encoding list",
			hdr:  map[string]string{"Content-Encoding": "identity, gzip"},
			cl:   5,
			want: rules.Body{Present: true, Size: 5, SizeExact: true, Encoded: true, FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "second Content-Encoding header",
			hdr:  map[string]string{"Content-Type": "multipart/form-data; boundary=x", "Content-Encoding": "identity"},
			ce2:  []string{"gzip"},
			cl:   5,
			want: rules.Body{Present: true, Size: 5, SizeExact: true, ContentType: "multipart/form-data", Encoded: true, FileParts: rules.TriUnknown},
		},
		{
			name: "encoding on an empty body",
			hdr:  map[string]string{"Content-Encoding": "br"},
			cl:   0,
			want: rules.Body{SizeExact: true, Encoded: true, FileParts: rules.TriNo, PartsComplete: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.hdr {
				h.Set(k, v)
			}
			h["Content-Encoding"] = append(h["Content-Encoding"], tt.ce2...)
			// Start from a dirty Body: Classify must reset every field.
			backing := make([]string, 1, 4)
			backing[0] = "stale/type"
			b := rules.Body{Present: true, Size: 99, SizeExact: true, ContentType: "stale/x", Encoded: true,
				FileParts: rules.TriYes, PartTypes: backing, PartsComplete: true}
			Classify(h, tt.cl, tt.te, &b)
			if len(b.PartTypes) != 0 {
				t.Errorf("PartTypes = %q, want empty", b.PartTypes)
			}
			if cap(b.PartTypes) != 4 || unsafe.SliceData(b.PartTypes) != unsafe.SliceData(backing) {
				t.Errorf("PartTypes lost its backing array (cap %d): Classify should reuse it", cap(b.PartTypes))
			}
			b.PartTypes = nil
			if !equalBody(b, tt.want) {
				t.Errorf("Classify =\n  %+v\nwant\n  %+v", b, tt.want)
			}
		})
	}
}

// equalBody compares Bodies; a nil and an empty PartTypes are equal.
func equalBody(a, b rules.Body) bool {
	return a.Present == b.Present && a.Size == b.Size && a.SizeExact == b.SizeExact &&
		a.ContentType == b.ContentType && a.Encoded == b.Encoded && a.FileParts == b.FileParts &&
		a.PartsComplete == b.PartsComplete && slices.Equal(a.PartTypes, b.PartTypes)
}

// browserHeaders are the headers of a typical browser multipart POST.
func browserHeaders() http.Header {
	h := http.Header{}
	for _, kv := range [][2]string{
		{"Host", "drive.example"},
		{"User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"},
		{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"},
		{"Accept-Language", "ja,en-US;q=0.9,en;q=0.8"},
		{"Accept-Encoding", "gzip, deflate, br, zstd"},
		{"Content-Type", "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"},
		{"Content-Length", "2483145"},
		{"Origin", "https://drive.example"},
		{"Referer", "https://drive.example/upload"},
		{"Cookie", "session=0123456789abcdef; theme=dark"},
		{"Sec-Fetch-Mode", "navigate"},
		{"Sec-Fetch-Site", "same-origin"},
		{"Upgrade-Insecure-Requests", "1"},
	} {
		h.Set(kv[0], kv[1])
	}
	return h
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	h := browserHeaders()
	b := rules.Body{PartTypes: make([]string, 0, 16)}
	allocs := testing.AllocsPerRun(100, func() { Classify(h, 2483145, nil, &b) })
	if allocs != 0 {
		t.Errorf("Classify allocates %.1f times per request, want 0", allocs)
	}
	if b.ContentType != "multipart/form-data" || b.FileParts != rules.TriUnknown {
		t.Errorf("Classify = %+v", b)
	}
}

func BenchmarkClassify(b *testing.B) {
	h := browserHeaders()
	body := rules.Body{PartTypes: make([]string, 0, 16)}
	b.ReportAllocs()
	for b.Loop() {
		Classify(h, 2483145, nil, &body)
	}
	if body.FileParts != rules.TriUnknown {
		b.Fatal("not classified as multipart")
	}
}

func TestBoundary(t *testing.T) {
	tests := []struct{ ct, want string }{
		{"multipart/form-data; boundary=abc", "abc"},
		{`multipart/form-data; boundary="a b:c"`, "a b:c"},
		{"Multipart/Form-Data; BOUNDARY=XyZ", "XyZ"},
		{"multipart/form-data", ""},
		{"multipart/form-data; boundary=", ""},
		{"", ""},
		{"not a media type;;", ""},
	}
	for _, tt := range tests {
		t.Run(tt.ct, func(t *testing.T) {
			if got := Boundary(tt.ct); got != tt.want {
				t.Errorf("Boundary(%q) = %q, want %q", tt.ct, got, tt.want)
			}
		})
	}
}

// part is one part of a test multipart body.
type part struct {
	name     string
	filename string // adds filename="..."
	extended string // adds filename*=UTF-8''... (already percent-encoded)
	ctype    string // Content-Type header, if any
	data     string
}

const testBoundary = "sekishoTestBoundary0123456789"

// build writes parts with mime/multipart, as a browser would send them.
func build(t testing.TB, parts ...part) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(testBoundary); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		if p.extended != "" {
			cd += "; filename*=UTF-8''" + p.extended
		}
		h.Set("Content-Disposition", cd)
		if p.ctype != "" {
			h.Set("Content-Type", p.ctype)
		}
		pw, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(pw, p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var (
	textField = part{name: "comment", data: "相談内容です。\r\nよろしくお願いします。"}
	pngFile   = part{name: "file", filename: "photo.png", ctype: "image/png", data: "\x89PNG\r\n\x1a\nIHDR...."}
	pdfFile   = part{name: "doc", filename: "申請書.pdf", ctype: "application/pdf", data: strings.Repeat("%PDF-1.7 ", 200)}
)

func TestSniffMultipart(t *testing.T) {
	full := build(t, textField, pngFile, textField, pdfFile)
	tests := []struct {
		name      string
		body      []byte
		wantFiles bool
		wantTypes []string
		complete  bool
	}{
		{name: "one file", body: build(t, pngFile), wantFiles: true, wantTypes: []string{"image/png"}, complete: true},
		{name: "file without Content-Type", body: build(t, part{name: "f", filename: "a.bin", data: "xyz"}),
			wantFiles: true, wantTypes: []string{"application/octet-stream"}, complete: true},
		{name: "file Content-Type upper case with parameters", body: build(t, part{name: "f", filename: "a.txt", ctype: "Text/Plain; charset=Shift_JIS", data: "x"}),
			wantFiles: true, wantTypes: []string{"text/plain"}, complete: true},
		{name: "filename* (RFC 5987)", body: build(t, part{name: "f", extended: "%E5%86%99%E7%9C%9F.jpg", ctype: "image/jpeg", data: "jpeg"}),
			wantFiles: true, wantTypes: []string{"image/jpeg"}, complete: true},
		{name: "text fields are not files", body: build(t, textField, part{name: "n", ctype: "application/json", data: `{"a":1}`}),
			wantTypes: []string{}, complete: true},
		{name: "text and file parts mixed", body: full, wantFiles: true, wantTypes: []string{"image/png", "application/pdf"}, complete: true},
		{name: "empty form", body: build(t), wantTypes: []string{}, complete: true},
		{name: "preamble", body: append([]byte("This is the preamble.\r\nIt is ignored.\r\n"), full...),
			wantFiles: true, wantTypes: []string{"image/png", "application/pdf"}, complete: true},
		{name: "preamble and epilogue", body: append(append([]byte("preamble\r\n"), build(t, pngFile)...), "epilogue\r\n"...),
			wantFiles: true, wantTypes: []string{"image/png"}, complete: true},
		{name: "LF-only line endings", body: []byte(strings.ReplaceAll(string(build(t,
			part{name: "a", data: "text"},
			part{name: "f", filename: "x.gif", ctype: "image/gif", data: "GIF89a"},
		)), "\r\n", "\n")), wantFiles: true, wantTypes: []string{"image/gif"}, complete: true},
		{name: "transport padding after delimiter", body: []byte(
			"--" + testBoundary + "  \r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--" + testBoundary + "--\r\n"),
			wantFiles: true, wantTypes: []string{"image/png"}, complete: true},
		{name: "header names in any case", body: []byte(
			"--" + testBoundary + "\r\ncontent-disposition: form-data; name=\"f\"; FILENAME=\"a.png\"\r\nCONTENT-TYPE: image/png\r\n\r\nPNG\r\n--" + testBoundary + "--\r\n"),
			wantFiles: true, wantTypes: []string{"image/png"}, complete: true},
		{name: "unparsable disposition naming a file counts", body: []byte(
			"--" + testBoundary + "\r\nContent-Disposition: form-data; name=f; filename=a b.png\r\n\r\nPNG\r\n--" + testBoundary + "--\r\n"),
			wantFiles: true, wantTypes: []string{"application/octet-stream"}, complete: true},
		{name: "boundary inside data without a preceding newline", body: build(t,
			part{name: "t", data: "look: --" + testBoundary + "-- is not the end, nor --" + testBoundary + "\r\n"},
			pngFile,
		), wantFiles: true, wantTypes: []string{"image/png"}, complete: true},
		{name: "boundary prefix of a longer word is not a delimiter", body: build(t,
			part{name: "t", data: "x--" + testBoundary + "--"},
			pdfFile,
		), wantFiles: true, wantTypes: []string{"application/pdf"}, complete: true},
		{name: "no closing delimiter", body: full[:bytes.LastIndex(full, []byte("--"+testBoundary+"--"))],
			wantFiles: true, wantTypes: []string{"image/png", "application/pdf"}, complete: false},
		{name: "no delimiter at all", body: []byte("just some bytes"), wantTypes: []string{}, complete: false},
		{name: "empty", body: nil, wantTypes: []string{}, complete: false},
		{name: "other boundary", body: bytes.ReplaceAll(full, []byte(testBoundary), []byte("somethingElse")), wantTypes: []string{}, complete: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, types, complete := SniffMultipart(tt.body, testBoundary, true, nil)
			if files != tt.wantFiles || complete != tt.complete || !slices.Equal(types, tt.wantTypes) {
				t.Errorf("SniffMultipart = files %v, types %q, complete %v; want %v, %q, %v",
					files, types, complete, tt.wantFiles, tt.wantTypes, tt.complete)
			}
		})
	}
}

// TestSniffMultipartCut cuts a body at every length: a part counts only once
// its headers are complete, the list never grows beyond the parts seen, and
// the body is complete only once the closing delimiter is there.
func TestSniffMultipartCut(t *testing.T) {
	body := build(t, textField, pngFile, part{name: "f2", filename: "b.bin", data: "0123456789"}, textField, pdfFile)
	wantAll := []string{"image/png", "application/octet-stream", "application/pdf"}
	closeAt := bytes.LastIndex(body, []byte("--"+testBoundary+"--")) + len(testBoundary) + 4
	// headersEnd[i] is where the i-th file part's header block ends.
	var headersEnd []int
	for off := 0; ; {
		i := bytes.Index(body[off:], []byte("filename="))
		if i < 0 {
			break
		}
		off += i
		off += bytes.Index(body[off:], []byte("\r\n\r\n")) + 4
		headersEnd = append(headersEnd, off)
	}
	if len(headersEnd) != len(wantAll) {
		t.Fatalf("test body has %d file parts, want %d", len(headersEnd), len(wantAll))
	}
	for n := 0; n <= len(body); n++ {
		files, types, complete := SniffMultipart(body[:n], testBoundary, n == len(body), nil)
		seen := 0
		for _, e := range headersEnd {
			if n >= e {
				seen++
			}
		}
		// A file part is counted exactly when its header block is complete.
		if len(types) > seen || !slices.Equal(types, wantAll[:len(types)]) {
			t.Fatalf("cut at %d: types %q, want a prefix of %q with at most %d entries", n, types, wantAll, seen)
		}
		if len(types) < seen {
			t.Fatalf("cut at %d (%q…): types %q, want the %d file parts whose headers are complete", n, body[max(0, n-20):n], types, seen)
		}
		if files != (len(types) > 0) {
			t.Fatalf("cut at %d: files %v with types %q", n, files, types)
		}
		// In a prefix, the closing delimiter counts once its line ends (it
		// could still go on as part content); at the end of the body, at once.
		if want := n >= closeAt+2 || (n == len(body) && n >= closeAt); complete != want {
			t.Fatalf("cut at %d (closing delimiter ends at %d): complete = %v, want %v", n, closeAt, complete, want)
		}
	}
}

func TestSniffMultipartCutCases(t *testing.T) {
	body := build(t, textField, pngFile, pdfFile)
	pdfHeader := bytes.Index(body, []byte(`name="doc"`))
	pdfData := bytes.Index(body, []byte("%PDF-1.7"))
	tests := []struct {
		name      string
		n         int
		wantTypes []string
	}{
		{name: "in the first delimiter", n: 5, wantTypes: []string{}},
		{name: "in the middle of part headers", n: pdfHeader + 3, wantTypes: []string{"image/png"}},
		{name: "between header lines", n: bytes.Index(body[pdfHeader:], []byte("\r\n")) + pdfHeader + 2, wantTypes: []string{"image/png"}},
		{name: "in the middle of part data", n: pdfData + 100, wantTypes: []string{"image/png", "application/pdf"}},
		{name: "just before the closing dashes", n: len(body) - 4, wantTypes: []string{"image/png", "application/pdf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, types, complete := SniffMultipart(body[:tt.n], testBoundary, false, nil)
			if complete {
				t.Errorf("cut body reported complete")
			}
			if files != (len(tt.wantTypes) > 0) || !slices.Equal(types, tt.wantTypes) {
				t.Errorf("files %v, types %q; want %q", files, types, tt.wantTypes)
			}
		})
	}
}

func TestSniffMultipartManyFiles(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		complete bool
	}{
		{name: "16 file parts", n: 16, complete: true},
		{name: "17 file parts: fail closed", n: 17, complete: false},
		{name: "100 file parts: fail closed", n: 100, complete: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var parts []part
			for i := range tt.n {
				parts = append(parts, part{name: fmt.Sprint("f", i), filename: fmt.Sprint(i, ".png"), ctype: "image/png", data: "x"})
			}
			files, types, complete := SniffMultipart(build(t, parts...), testBoundary, true, nil)
			if !files || complete != tt.complete {
				t.Errorf("files %v, complete %v; want true, %v", files, complete, tt.complete)
			}
			if want := min(tt.n, 16); len(types) != want {
				t.Errorf("recorded %d types, want %d", len(types), want)
			}
		})
	}
}

func TestSniffMultipartAppendsToTypes(t *testing.T) {
	backing := make([]string, 0, 4)
	_, types, _ := SniffMultipart(build(t, pngFile, pdfFile), testBoundary, true, backing)
	if !slices.Equal(types, []string{"image/png", "application/pdf"}) {
		t.Fatalf("types = %q", types)
	}
	if unsafe.SliceData(types) != unsafe.SliceData(backing) {
		t.Error("SniffMultipart did not append into the slice it was given")
	}
}

// TestSniffMultipartFailsClosed: whenever Go's own multipart reader (what
// net/http's ParseMultipartForm uses) finds a file part, the sniffer must
// either see a file too or say that its view is incomplete. Saying
// "complete, no files" lets a body with a file pass a "no file uploads" rule.
func TestSniffMultipartFailsClosed(t *testing.T) {
	const b = testBoundary
	file := "Content-Disposition: form-data; name=\"f\"; filename=\"secret.pdf\"\r\nContent-Type: application/pdf\r\n\r\nDATA\r\n"
	tests := []struct {
		name string
		body string
	}{
		{
			name: "LF-only fake closing delimiter inside CRLF data",
			body: "--" + b + "\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nx\n--" + b + "--\r\n--" + b + "\r\n" + file + "--" + b + "--\r\n",
		},
		{
			name: "fake closing delimiter in the middle of a preamble line",
			body: "preamble x--" + b + "--\r\n--" + b + "\r\n" + file + "--" + b + "--\r\n",
		},
		{
			name: "folded Content-Disposition",
			body: "--" + b + "\r\nContent-Disposition: form-data; name=\"f\";\r\n filename=\"secret.pdf\"\r\n\r\nDATA\r\n--" + b + "--\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			goFiles := goFileParts(t, tt.body)
			if len(goFiles) == 0 {
				t.Fatalf("test body: mime/multipart finds no file part")
			}
			files, types, complete := SniffMultipart([]byte(tt.body), b, true, nil)
			if !files && complete {
				t.Errorf("BUG: SniffMultipart = no files, complete; mime/multipart reads file part(s) %q: a rule on file parts is bypassed (types %q)", goFiles, types)
			}
		})
	}
}

// goFileParts parses body with mime/multipart and returns the file names.
func goFileParts(t *testing.T, body string) []string {
	t.Helper()
	r := multipart.NewReader(strings.NewReader(body), testBoundary)
	var names []string
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("mime/multipart: %v", err)
		}
		if p.FileName() != "" {
			names = append(names, p.FileName())
		}
	}
}

func TestHold(t *testing.T) {
	const limit = 100
	tests := []struct {
		name    string
		size    int
		wantEOF bool
		wantLen int
	}{
		{name: "empty", size: 0, wantEOF: true, wantLen: 0},
		{name: "shorter than limit", size: 10, wantEOF: true, wantLen: 10},
		{name: "one under limit", size: limit - 1, wantEOF: true, wantLen: limit - 1},
		{name: "exactly limit", size: limit, wantEOF: true, wantLen: limit},
		{name: "one over limit", size: limit + 1, wantEOF: false, wantLen: limit + 1},
		{name: "far over limit", size: 10 * limit, wantEOF: false, wantLen: limit + 1},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"plain", func(r io.Reader) io.Reader { return r }},
		{"one byte at a time", iotest.OneByteReader},
		{"EOF with data", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				body := bytes.Repeat([]byte("0123456789"), tt.size/10+1)[:tt.size]
				src := bytes.NewReader(body)
				h, err := Hold(rd.wrap(src), limit)
				if err != nil {
					t.Fatalf("Hold: %v", err)
				}
				defer h.Release()
				if h.EOF != tt.wantEOF {
					t.Errorf("EOF = %v, want %v", h.EOF, tt.wantEOF)
				}
				if len(h.Data) != tt.wantLen || !bytes.Equal(h.Data, body[:tt.wantLen]) {
					t.Errorf("Data = %d bytes, want the first %d of the body", len(h.Data), tt.wantLen)
				}
				// Hold reads no more than limit+1: the rest is left for the
				// upstream copy (DataErrReader reads ahead, so not for it).
				if rest := src.Len(); rd.name != "EOF with data" && rest != tt.size-tt.wantLen {
					t.Errorf("%d bytes left in the body, want %d", rest, tt.size-tt.wantLen)
				}
			})
		}
	}
}

func TestHoldError(t *testing.T) {
	boom := errors.New("connection reset")
	tests := []struct {
		name   string
		reader io.Reader
	}{
		{name: "immediate", reader: iotest.ErrReader(boom)},
		{name: "after some bytes", reader: io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom))},
		{name: "timeout", reader: iotest.TimeoutReader(iotest.OneByteReader(strings.NewReader(strings.Repeat("x", 1000))))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Hold(tt.reader, 64)
			if err == nil {
				t.Fatalf("Hold = nil error, want the reader's error (EOF %v, %d bytes)", h.EOF, len(h.Data))
			}
			if tt.name != "timeout" && !errors.Is(err, boom) {
				t.Errorf("Hold error = %v, want %v", err, boom)
			}
			if tt.name == "timeout" && !errors.Is(err, iotest.ErrTimeout) {
				t.Errorf("Hold error = %v, want %v", err, iotest.ErrTimeout)
			}
			if h == nil {
				t.Fatal("Hold returned no *Held with its error; the caller cannot Release it")
			}
			if h.EOF {
				t.Error("EOF = true on a read error: the body did not end")
			}
			h.Release()
		})
	}
}

func TestHoldRelease(t *testing.T) {
	const limit = 4096
	t.Run("release clears", func(t *testing.T) {
		h, err := Hold(strings.NewReader("abc"), limit)
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		if h.Data != nil {
			t.Errorf("Data = %q after Release, want nil", h.Data)
		}
		h.Release() // a second Release is harmless
	})
	t.Run("no data bleeds into a reused buffer", func(t *testing.T) {
		long := bytes.Repeat([]byte("SECRET-"), 2*limit/7)
		for i := range 50 {
			h1, err := Hold(bytes.NewReader(long), limit)
			if err != nil || h1.EOF {
				t.Fatalf("Hold(long) = EOF %v, %v", h1.EOF, err)
			}
			h1.Release()
			short := fmt.Sprintf("short body %d", i)
			h2, err := Hold(strings.NewReader(short), limit)
			if err != nil {
				t.Fatal(err)
			}
			if string(h2.Data) != short || !h2.EOF {
				t.Fatalf("after reuse, Data = %q (EOF %v), want %q", h2.Data, h2.EOF, short)
			}
			h2.Release()
		}
	})
	t.Run("a released buffer is reused", func(t *testing.T) {
		// sync.Pool may drop an item (it does so at random under the
		// race detector), so look for reuse over several rounds.
		for range 100 {
			h1, err := Hold(strings.NewReader("first"), limit)
			if err != nil {
				t.Fatal(err)
			}
			p1 := unsafe.SliceData(h1.Data)
			h1.Release()
			h2, err := Hold(strings.NewReader("second"), limit)
			if err != nil {
				t.Fatal(err)
			}
			p2 := unsafe.SliceData(h2.Data)
			h2.Release()
			if p1 == p2 {
				return
			}
		}
		t.Error("100 Hold/Release rounds never reused a buffer")
	})
	t.Run("limits do not share buffers", func(t *testing.T) {
		h1, err := Hold(bytes.NewReader(make([]byte, 1000)), 10)
		if err != nil {
			t.Fatal(err)
		}
		h1.Release()
		h2, err := Hold(bytes.NewReader(make([]byte, 1000)), 500)
		if err != nil {
			t.Fatal(err)
		}
		defer h2.Release()
		if len(h2.Data) != 501 || h2.EOF {
			t.Errorf("Hold with limit 500 after limit 10: %d bytes, EOF %v; want 501, false", len(h2.Data), h2.EOF)
		}
	})
}

func TestUpdate(t *testing.T) {
	const limit = 1024
	mpCT := "multipart/form-data; boundary=" + testBoundary
	withFile := build(t, textField, pngFile)
	noFile := build(t, textField, textField)
	// A body larger than the limit whose file part starts after it.
	lateFile := build(t, part{name: "big", data: strings.Repeat("a", 2*limit)}, pdfFile)
	// A body larger than the limit whose file part is inside it.
	earlyFile := build(t, pngFile, part{name: "big", data: strings.Repeat("a", 2*limit)})
	tests := []struct {
		name string
		ct   string
		ce   string
		cl   int64 // -1: chunked
		body []byte
		want rules.Body
	}{
		{
			name: "chunked, ended within limit: exact size",
			ct:   "application/json", cl: -1, body: []byte(`{"a":1}`),
			want: rules.Body{Present: true, Size: 7, SizeExact: true, ContentType: "application/json", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "chunked, longer than limit: lower bound",
			ct:   "application/json", cl: -1, body: make([]byte, 5*limit),
			want: rules.Body{Present: true, Size: limit + 1, ContentType: "application/json", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "chunked, empty: no body",
			ct:   "application/json", cl: -1, body: nil,
			want: rules.Body{Size: 0, SizeExact: true, ContentType: "application/json", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "chunked multipart, empty: no file parts",
			ct:   mpCT, cl: -1, body: nil,
			want: rules.Body{Size: 0, SizeExact: true, ContentType: "multipart/form-data", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "declared length is not lowered by the held prefix",
			ct:   "application/octet-stream", cl: 10 << 20, body: make([]byte, 3*limit),
			want: rules.Body{Present: true, Size: 10 << 20, SizeExact: true, ContentType: "application/octet-stream", FileParts: rules.TriNo, PartsComplete: true},
		},
		{
			name: "multipart with a file, complete",
			ct:   mpCT, cl: -1, body: withFile,
			want: rules.Body{Present: true, Size: int64(len(withFile)), SizeExact: true, ContentType: "multipart/form-data",
				FileParts: rules.TriYes, PartTypes: []string{"image/png"}, PartsComplete: true},
		},
		{
			name: "multipart with Content-Length, no file, complete",
			ct:   mpCT, cl: int64(len(noFile)), body: noFile,
			want: rules.Body{Present: true, Size: int64(len(noFile)), SizeExact: true, ContentType: "multipart/form-data",
				FileParts: rules.TriNo, PartTypes: []string{}, PartsComplete: true},
		},
		{
			name: "multipart, file after the limit: unknown",
			ct:   mpCT, cl: -1, body: lateFile,
			want: rules.Body{Present: true, Size: limit + 1, ContentType: "multipart/form-data",
				FileParts: rules.TriUnknown, PartTypes: []string{}},
		},
		{
			name: "multipart, file within the limit, body goes on: yes, incomplete",
			ct:   mpCT, cl: -1, body: earlyFile,
			want: rules.Body{Present: true, Size: limit + 1, ContentType: "multipart/form-data",
				FileParts: rules.TriYes, PartTypes: []string{"image/png"}},
		},
		{
			name: "compressed multipart stays unknown",
			ct:   mpCT, ce: "gzip", cl: -1, body: withFile,
			want: rules.Body{Present: true, Size: int64(len(withFile)), SizeExact: true, ContentType: "multipart/form-data",
				Encoded: true, FileParts: rules.TriUnknown},
		},
		{
			name: "multipart without a boundary stays unknown",
			ct:   "multipart/form-data", cl: -1, body: withFile,
			want: rules.Body{Present: true, Size: int64(len(withFile)), SizeExact: true, ContentType: "multipart/form-data",
				FileParts: rules.TriUnknown},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tt.ct}}
			if tt.ce != "" {
				h.Set("Content-Encoding", tt.ce)
			}
			var te []string
			if tt.cl < 0 {
				te = []string{"chunked"}
			}
			var b rules.Body
			Classify(h, tt.cl, te, &b)
			held, err := Hold(bytes.NewReader(tt.body), limit)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Release()
			Update(&b, held, Boundary(tt.ct))
			if !equalBody(b, tt.want) {
				t.Errorf("Update =\n  %+v\nwant\n  %+v", b, tt.want)
			}
		})
	}
}

// TestSniffMultipartPrefixEndingInCloseDelimiter: a prefix that ends exactly
// after "--boundary--" is not complete — the body may go on "--boundary--x",
// which is part content, followed by more parts — unless it is the whole body.
func TestSniffMultipartPrefixEndingInCloseDelimiter(t *testing.T) {
	b := "B"
	body := "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ntext\r\n--B--x still text\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--B--\r\n"
	cut := strings.Index(body, "--B--x") + len("--B--")
	if _, _, complete := SniffMultipart([]byte(body[:cut]), b, false, nil); complete {
		t.Fatal("a prefix ending in the closing dashes was reported complete")
	}
	files, types, complete := SniffMultipart([]byte(body), b, true, nil)
	if !files || !complete || !slices.Equal(types, []string{"image/png"}) {
		t.Fatalf("whole body: files %v types %q complete %v", files, types, complete)
	}
	files, _, complete = SniffMultipart([]byte(body[:cut]), b, true, nil)
	if !complete || files {
		t.Fatalf("whole body ending in the closing delimiter: files %v complete %v", files, complete)
	}
}

func TestHoldUnexpectedEOF(t *testing.T) {
	h, err := Hold(io.MultiReader(strings.NewReader("part"), iotest.ErrReader(io.ErrUnexpectedEOF)), 1024)
	if !errors.Is(err, io.ErrUnexpectedEOF) || h.EOF {
		t.Fatalf("err %v EOF %v: a body broken off must not look complete", err, h.EOF)
	}
	h.Release()
}

// TestSniffMultipartFoldsLinear: a held prefix full of folded header lines
// costs memory in proportion to its size, not to its square (each fold
// used to copy the whole header so far: 270 MiB for 64 KiB).
func TestSniffMultipartFoldsLinear(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("--B\r\nContent-Disposition: form-data; name=x\r\n")
	for b.Len() < 64<<10-8 {
		b.WriteString(" a\r\n")
	}
	data := b.Bytes()
	allocs := testing.Benchmark(func(tb *testing.B) {
		for range tb.N {
			SniffMultipart(data, "B", false, nil)
		}
	}).AllocedBytesPerOp()
	if allocs > 1<<20 {
		t.Errorf("sniffing a 64 KiB prefix of folded lines allocated %d KiB", allocs>>10)
	}
}
