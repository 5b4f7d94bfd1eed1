package whatif

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/sekisho/sekisho/cmd/sekisho/internal/report"
)

// WriteJSON writes the Result as one indented JSON document, for a CI job
// that gates a rules change and keeps the evidence.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// section picks the groups of one kind of change.
func section(groups []Group, keep func(g *Group) bool) (out []Group, total int64) {
	for i := range groups {
		if keep(&groups[i]) {
			out = append(out, groups[i])
			total += groups[i].Count
		}
	}
	return out, total
}

// WriteText writes what would change for a terminal or a review: a
// summary of the transitions, then the requests that would now be stopped,
// those that would now go through, other changes, and rule-only changes,
// each grouped by rule, service and department with examples.
func WriteText(w io.Writer, r *Result, strict bool) error {
	var b strings.Builder
	against := "the decisions logged"
	if len(r.Baseline) > 0 && r.Baseline[0] != "logged" {
		against = "the rules " + strings.Join(r.Baseline, ", ") + " (baseline), on the same facts"
	}
	fmt.Fprintf(&b, "sekisho whatif — rules %s (hash %s) against %s\n", strings.Join(r.Rules, ", "), r.RulesHash, against)
	var ins []string
	for _, in := range r.Inputs {
		s := in.Name + " (" + report.FormatCount(in.Lines) + " lines"
		if in.Gzip {
			s += ", gzip"
		}
		if in.Error != "" {
			s += ", UNREADABLE PAST THAT: " + in.Error
		}
		ins = append(ins, s+")")
	}
	fmt.Fprintf(&b, "Inputs    %s\n", strings.Join(ins, ", "))
	l := r.Lines
	fmt.Fprintf(&b, "Lines     %s read: %s replayed", report.FormatCount(l.Read), report.FormatCount(l.Replayed))
	if l.NoDecision > 0 {
		fmt.Fprintf(&b, ", %s without a decision (refusals, sekisho's own pages)", report.FormatCount(l.NoDecision))
	}
	if l.InspectedSessions > 0 {
		fmt.Fprintf(&b, ", %s inspected sessions (their requests are replayed)", report.FormatCount(l.InspectedSessions))
	}
	if l.OutsidePeriod > 0 {
		fmt.Fprintf(&b, ", %s outside the period", report.FormatCount(l.OutsidePeriod))
	}
	if l.Malformed > 0 {
		fmt.Fprintf(&b, ", %s malformed", report.FormatCount(l.Malformed))
	}
	b.WriteString("\n")
	for _, m := range r.MalformedExamples {
		fmt.Fprintf(&b, "          malformed %s:%d: %s\n", m.File, m.Line, m.Error)
	}
	b.WriteString("\n")
	switch {
	case r.Changed == 0 && strict && r.RuleOnlyCount > 0:
		fmt.Fprintf(&b, "CHANGES   no outcome changes, but %s requests would be decided by another rule (--strict counts them)\n",
			report.FormatCount(r.RuleOnlyCount))
	case r.Changed == 0:
		fmt.Fprintf(&b, "NO CHANGE: all %s requests would be handled as before.\n", report.FormatCount(l.Replayed))
	default:
		fmt.Fprintf(&b, "CHANGES   %s of %s requests would be handled differently", report.FormatCount(r.Changed), report.FormatCount(l.Replayed))
		if r.Uncertain > 0 {
			fmt.Fprintf(&b, " (%s uncertain: see the notes)", report.FormatCount(r.Uncertain))
		}
		b.WriteString("\n")
		t := report.Table{Header: []string{"WAS", "", "NOW", "REQUESTS"}, Right: map[int]bool{3: true}, Indent: "          "}
		for _, tr := range r.Transitions {
			t.Rows = append(t.Rows, []string{tr.From.String(), "→", tr.To.String(), report.FormatCount(tr.Count)})
		}
		if err := writeString(w, b.String()); err != nil {
			return err
		}
		b.Reset()
		if err := t.Write(w); err != nil {
			return err
		}
	}
	if err := writeString(w, b.String()); err != nil {
		return err
	}
	b.Reset()

	stopped, n := section(r.Changes, func(g *Group) bool { return g.To.Stops() && !g.From.Stops() })
	if err := writeGroups(w, fmt.Sprintf("Would now be STOPPED (blocked, or cut at the upload budget): %s", report.FormatCount(n)), stopped, true); err != nil {
		return err
	}
	released, n := section(r.Changes, func(g *Group) bool { return g.From.Stops() && !g.To.Stops() })
	if err := writeGroups(w, fmt.Sprintf("Would now GO THROUGH (no longer blocked or cut): %s", report.FormatCount(n)), released, true); err != nil {
		return err
	}
	other, n := section(r.Changes, func(g *Group) bool { return g.From.Stops() == g.To.Stops() })
	if err := writeGroups(w, fmt.Sprintf("Other changes (between allow, log and would-block, or block and cut): %s", report.FormatCount(n)), other, true); err != nil {
		return err
	}
	if r.RuleOnlyCount > 0 {
		note := "not a change of outcome; --strict counts them"
		if strict {
			note = "counted as changes (--strict)"
		}
		if err := writeGroups(w, fmt.Sprintf("Same outcome, another rule: %s (%s)", report.FormatCount(r.RuleOnlyCount), note), r.RuleOnly, false); err != nil {
			return err
		}
	}
	return nil
}

// named joins a name and its title: "welfare 福祉課".
func named(name, title string) string {
	if title == "" || strings.EqualFold(title, name) {
		return name
	}
	return name + " " + title
}

func writeString(w io.Writer, s string) error {
	_, err := io.WriteString(w, s)
	return err
}

func writeGroups(w io.Writer, title string, groups []Group, examples bool) error {
	if len(groups) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("\n" + title + "\n")
	t := report.Table{
		Header: []string{"NOW", "BY RULE", "WAS", "BY RULE", "SERVICE", "DEPARTMENT", "REQUESTS", "UNCERTAIN"},
		Right:  map[int]bool{6: true, 7: true},
		Indent: "  ",
	}
	for _, g := range groups {
		unc := ""
		if g.Uncertain > 0 {
			unc = report.FormatCount(g.Uncertain)
		}
		t.Rows = append(t.Rows, []string{g.To.String(), g.ToRule, g.From.String(), g.FromRule,
			named(g.Service, g.ServiceTitle), named(g.ClientGroup, g.ClientGroupTitle), report.FormatCount(g.Count), unc})
	}
	if err := writeString(w, b.String()); err != nil {
		return err
	}
	b.Reset()
	if err := t.Write(w); err != nil {
		return err
	}
	if !examples {
		return nil
	}
	b.WriteString("  examples:\n")
	for _, g := range groups {
		fmt.Fprintf(&b, "  - %s → %s by %s · %s · %s\n", g.From, g.To, g.ToRule, named(g.Service, g.ServiceTitle), named(g.ClientGroup, g.ClientGroupTitle))
		for _, x := range g.Examples {
			fmt.Fprintf(&b, "      %s  %s:%d", x.Time.Format("2006-01-02 15:04:05"), x.File, x.Line)
			if x.ID != "" {
				fmt.Fprintf(&b, "  id %s", x.ID)
			}
			if x.Client != "" {
				fmt.Fprintf(&b, "  client %s", x.Client)
			}
			fmt.Fprintf(&b, "\n        %s  [%s]", printable(x.Request), x.Country)
			if x.Body != "" {
				fmt.Fprintf(&b, "  %s", x.Body)
			}
			b.WriteString("\n")
			if x.Note != "" {
				fmt.Fprintf(&b, "        note: %s\n", x.Note)
			}
		}
	}
	return writeString(w, b.String())
}

// printable escapes control characters: a logged path is the decoded URL
// path a client sent, and escape sequences in it must not reach the
// admin's terminal.
func printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
