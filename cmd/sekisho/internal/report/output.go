package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Formats are the output formats, by the name --format takes.
var Formats = []string{"table", "csv", "json", "html"}

// Write writes r in one of Formats.
func Write(w io.Writer, r *Report, format string) error {
	switch format {
	case "table", "":
		return WriteTable(w, r)
	case "csv":
		return WriteCSV(w, r)
	case "json":
		return WriteJSON(w, r)
	case "html":
		return WriteHTML(w, r)
	}
	return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(Formats, ", "))
}

// WriteJSON writes the Report as one indented JSON document: for scripts,
// dashboards and archiving the figures behind a submitted report.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// csvHeader names the CSV columns as the JSON fields are named, so that a
// script reads either.
var csvHeader = []string{
	"client_group", "client_group_title", "service", "service_title", "country", "destination",
	"requests", "uploads", "upload_bytes", "blocked", "would_block", "over_budget", "download_bytes",
}

// WriteCSV writes the department × service × country rows with exact
// counts. It starts with a UTF-8 byte order mark: without one, Excel in a
// Japanese locale reads the file as Shift_JIS and garbles every title.
func WriteCSV(w io.Writer, r *Report) error {
	if _, err := io.WriteString(w, "\uFEFF"); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	n := strconv.FormatInt
	for _, row := range r.Rows {
		c := row.Counts
		t := cellText
		if err := cw.Write([]string{
			t(row.Group), t(row.GroupTitle), t(row.Service), t(row.ServiceTitle), t(row.Country), t(row.Destination),
			n(c.Requests, 10), n(c.Uploads, 10), n(c.UploadBytes, 10), n(c.Blocked, 10),
			n(c.WouldBlock, 10), n(c.OverBudget, 10), n(c.DownloadBytes, 10),
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// cellText keeps a text cell from being read as a formula by Excel or
// LibreOffice (OWASP's CSV injection advice): titles are free text in the
// rules, and every value comes from a log file that clients' requests
// shape. A leading apostrophe shows the text as it is.
func cellText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// named joins a name and its title for display: "welfare 福祉課".
func named(name, title string) string {
	if title == "" || strings.EqualFold(title, name) {
		return name
	}
	return name + " " + title
}

const timeLayout = "2006-01-02 15:04"

// zoneName writes a UTC offset as "UTC+09:00".
func zoneName(t time.Time) string {
	_, off := t.Zone()
	sign := '+'
	if off < 0 {
		sign, off = '-', -off
	}
	return fmt.Sprintf("UTC%c%02d:%02d", sign, off/3600, off%3600/60)
}

// PeriodText describes the period the report covers.
func (r *Report) PeriodText() string {
	if r.First.IsZero() {
		return "no lines in the period"
	}
	s := fmt.Sprintf("%s – %s (%s)", r.First.Format(timeLayout), r.Last.In(r.First.Location()).Format(timeLayout), zoneName(r.First))
	var req []string
	if !r.Since.IsZero() {
		req = append(req, "since "+r.Since.Format(time.RFC3339))
	}
	if !r.Until.IsZero() {
		req = append(req, "until "+r.Until.Format(time.RFC3339))
	}
	if len(req) > 0 {
		s += "; asked for " + strings.Join(req, ", ")
	}
	return s
}

// InputsText lists the inputs with their line counts.
func (r *Report) InputsText() string {
	var parts []string
	for _, in := range r.Inputs {
		p := in.Name + " (" + FormatCount(in.Lines) + " lines"
		if in.Gzip {
			p += ", gzip"
		}
		if in.Error != "" {
			p += ", UNREADABLE PAST THAT: " + in.Error
		}
		parts = append(parts, p+")")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// LinesText accounts for every line read.
func (r *Report) LinesText() string {
	l := r.Lines
	s := FormatCount(l.Read) + " read: " + FormatCount(l.Counted) + " counted"
	add := func(n int64, what string) {
		if n > 0 {
			s += ", " + FormatCount(n) + " " + what
		}
	}
	add(l.NotProxied, "not proxied")
	add(l.InspectedSessions, "inspected sessions (their requests are counted)")
	add(l.OutsidePeriod, "outside the period")
	add(l.Malformed, "malformed")
	return s
}

// MalformedText lists where the first malformed lines are.
func (r *Report) MalformedText() []string {
	var out []string
	for _, m := range r.MalformedExamples {
		out = append(out, fmt.Sprintf("%s:%d: %s", m.File, m.Line, m.Error))
	}
	if n := r.Lines.Malformed - int64(len(r.MalformedExamples)); n > 0 {
		out = append(out, fmt.Sprintf("... and %s more", FormatCount(n)))
	}
	return out
}

// CountsText is a one-line summary of counts.
func CountsText(c Counts) string {
	return fmt.Sprintf("requests %s · uploads %s (%s) · blocked %s · would-block %s · over budget %s · downloaded %s",
		FormatCount(c.Requests), FormatCount(c.Uploads), FormatBytes(c.UploadBytes), FormatCount(c.Blocked),
		FormatCount(c.WouldBlock), FormatCount(c.OverBudget), FormatBytes(c.DownloadBytes))
}

// DialedText lists a service's dialed countries: "JP 1,200, KR 3".
func (s *Service) DialedText() string {
	var parts []string
	for _, d := range s.Dialed {
		parts = append(parts, d.Country+" "+FormatCount(d.Requests))
	}
	return strings.Join(parts, ", ")
}

// WriteTable writes the report for a terminal: a header that accounts for
// every line, the totals, the department × service × country table, the
// services' dialed against declared countries, and what was not proxied.
func WriteTable(w io.Writer, r *Report) error {
	var b strings.Builder
	b.WriteString("sekisho report — 外部送信レポート\n")
	if !r.GeneratedAt.IsZero() {
		fmt.Fprintf(&b, "Generated  %s\n", r.GeneratedAt.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "Period     %s\n", r.PeriodText())
	fmt.Fprintf(&b, "Inputs     %s\n", r.InputsText())
	fmt.Fprintf(&b, "Lines      %s\n", r.LinesText())
	for _, m := range r.MalformedText() {
		fmt.Fprintf(&b, "           malformed %s\n", m)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "Totals       %s\n", CountsText(r.Totals))
	fmt.Fprintf(&b, "Sent abroad  %s (%s uploads, and what tunnels and WebSockets sent) · blocked %s · would-block %s — to foreign and unknown destinations\n",
		FormatBytes(r.Abroad.UploadBytes), FormatCount(r.Abroad.Uploads), FormatCount(r.Abroad.Blocked), FormatCount(r.Abroad.WouldBlock))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}

	if len(r.Rows) > 0 {
		io.WriteString(w, "\nBy department, service and country (部署・サービス・国別)\n")
		t := Table{
			Header: []string{"DEPARTMENT", "SERVICE", "COUNTRY", "DEST", "REQUESTS", "UPLOADS", "SENT", "BLOCKED", "WOULD-BLOCK", "OVER BUDGET", "RECEIVED"},
			Right:  map[int]bool{4: true, 5: true, 6: true, 7: true, 8: true, 9: true, 10: true},
		}
		for _, row := range r.Rows {
			c := row.Counts
			t.Rows = append(t.Rows, []string{
				named(row.Group, row.GroupTitle), named(row.Service, row.ServiceTitle), row.Country, row.Destination,
				FormatCount(c.Requests), FormatCount(c.Uploads), FormatBytes(c.UploadBytes), FormatCount(c.Blocked),
				FormatCount(c.WouldBlock), FormatCount(c.OverBudget), FormatBytes(c.DownloadBytes),
			})
		}
		if err := t.Write(w); err != nil {
			return err
		}
	}

	if len(r.Services) > 0 {
		io.WriteString(w, "\nServices: where the traffic went, and where the data is declared to be stored (接続先の国と保存国)\n")
		t := Table{
			Header: []string{"SERVICE", "REQUESTS", "SENT", "SENT ABROAD", "BLOCKED", "DIALED (requests)", "DECLARED STORAGE", ""},
			Right:  map[int]bool{1: true, 2: true, 3: true, 4: true},
		}
		for _, s := range r.Services {
			note := ""
			if s.Mismatch {
				note = "≠ traffic went elsewhere than the declared storage"
			}
			t.Rows = append(t.Rows, []string{
				named(s.Service, s.Title), FormatCount(s.Requests), FormatBytes(s.UploadBytes), FormatBytes(s.SentAbroadBytes),
				FormatCount(s.Blocked), s.DialedText(), strings.Join(s.Declared, ", "), note,
			})
		}
		if err := t.Write(w); err != nil {
			return err
		}
	}

	if len(r.NotProxied) > 0 {
		io.WriteString(w, "\nNot proxied (no decision: refused or sekisho's own pages)\n")
		t := Table{Header: []string{"REASON", "LINES"}, Right: map[int]bool{1: true}}
		for _, n := range r.NotProxied {
			t.Rows = append(t.Rows, []string{n.Reason, FormatCount(n.Count)})
		}
		return t.Write(w)
	}
	return nil
}
