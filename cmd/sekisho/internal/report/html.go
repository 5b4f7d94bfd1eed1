package report

import (
	_ "embed"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// The HTML report is one self-contained file (no scripts, fonts, images or
// style sheets from elsewhere: it is attached to a submission and opened
// years later, maybe offline), with inline SVG charts, Japanese and English
// labels, and print rules for A4.
//
//go:embed report.html.tmpl
var htmlSource string

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"count": FormatCount,
	"bytes": FormatBytes,
	"named": named,
	"dest":  destLabel,
	"join":  strings.Join,
	"rfc3339": func(t time.Time) string {
		return t.Format(time.RFC3339)
	},
}).Parse(htmlSource))

// destLabel names a destination class in Japanese and English.
func destLabel(d string) string {
	switch d {
	case "domestic":
		return "国内 domestic"
	case "foreign":
		return "国外 foreign"
	case "unknown":
		return "不明 unknown"
	case "internal":
		return "内部 internal"
	}
	return d
}

type htmlData struct {
	R         *Report
	ByService template.HTML
	ByCountry template.HTML
	Timeline  template.HTML
	UnitJA    string
}

// WriteHTML writes the self-contained HTML report.
func WriteHTML(w io.Writer, r *Report) error {
	var svc, ctry []bar
	for _, s := range r.Services {
		if s.SentAbroadBytes > 0 {
			svc = append(svc, bar{label: named(s.Service, s.Title), value: s.SentAbroadBytes})
		}
	}
	byCountry := map[string]int64{}
	for _, c := range r.Countries {
		if isAbroad(c.Destination) && c.UploadBytes > 0 {
			byCountry[c.Country] += c.UploadBytes
		}
	}
	for c, v := range byCountry {
		ctry = append(ctry, bar{label: c, value: v})
	}
	d := htmlData{
		R:         r,
		ByService: barChart("海外への送信量（サービス別） Data sent abroad by service", svc),
		ByCountry: barChart("海外への送信量（国別） Data sent abroad by country", ctry),
		Timeline:  timelineChart(r.Timeline),
		UnitJA:    map[string]string{"hour": "時間", "day": "日", "week": "週"}[r.Timeline.Unit],
	}
	return htmlTemplate.Execute(w, d)
}

type bar struct {
	label string
	value int64
}

// maxBars bounds a bar chart; the rest are summed into one bar.
const maxBars = 12

func esc(s string) string { return html.EscapeString(s) }

// barChart draws horizontal bars of byte counts, largest first.
func barChart(title string, bars []bar) template.HTML {
	if len(bars) == 0 {
		return template.HTML(`<p class="empty">期間中、海外への送信はありません。 <span class="en">Nothing was sent abroad in this period.</span></p>`)
	}
	sort.Slice(bars, func(i, j int) bool {
		if bars[i].value != bars[j].value {
			return bars[i].value > bars[j].value
		}
		return bars[i].label < bars[j].label
	})
	if len(bars) > maxBars {
		var rest int64
		for _, b := range bars[maxBars-1:] {
			rest += b.value
		}
		n := len(bars) - (maxBars - 1)
		bars = append(bars[:maxBars-1:maxBars-1], bar{label: fmt.Sprintf("その他 %d others", n), value: rest})
	}
	const width, labelW, valueW, rowH = 720, 200, 90, 24
	height := len(bars)*rowH + 8
	maxV := bars[0].value
	for _, b := range bars {
		maxV = max(maxV, b.value)
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" role="img" aria-label="%s" viewBox="0 0 %d %d" width="100%%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">`,
		esc(title), width, height)
	fmt.Fprintf(&s, `<title>%s</title>`, esc(title))
	plotW := float64(width - labelW - valueW)
	for i, b := range bars {
		y := 4 + i*rowH
		bw := plotW * float64(b.value) / float64(maxV)
		if b.value > 0 && bw < 1 {
			bw = 1
		}
		label := b.label
		if DisplayWidth(label) > 30 {
			label = truncate(label, 29) + "…"
		}
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end" class="lbl">%s</text>`, labelW-8, y+16, esc(label))
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" class="bar"><title>%s: %s</title></rect>`,
			labelW, y+3, bw, rowH-8, esc(b.label), esc(FormatBytes(b.value)))
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" class="val">%s</text>`, float64(labelW)+bw+6, y+16, esc(FormatBytes(b.value)))
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

// truncate cuts s to at most w display columns.
func truncate(s string, w int) string {
	n := 0
	for i, r := range s {
		n += runeWidth(r)
		if n > w {
			return s[:i]
		}
	}
	return s
}

// niceCeil rounds a chart's maximum up to 1, 2 or 5 × 10^n.
func niceCeil(v int64) int64 {
	if v <= 0 {
		return 1
	}
	p := int64(math.Pow(10, math.Floor(math.Log10(float64(v)))))
	for _, m := range []int64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// timelineChart draws stacked columns of blocked, would-block and
// over-budget counts per bucket.
func timelineChart(tl Timeline) template.HTML {
	var maxV int64
	for _, p := range tl.Points {
		maxV = max(maxV, p.Blocked+p.WouldBlock+p.OverBudget)
	}
	if maxV == 0 {
		return template.HTML(`<p class="empty">期間中、ブロックはありません。 <span class="en">Nothing was blocked in this period.</span></p>`)
	}
	top := niceCeil(maxV)
	const width, height, left, right, topPad, bottom = 720, 260, 48, 8, 26, 46
	plotW, plotH := float64(width-left-right), float64(height-topPad-bottom)
	n := len(tl.Points)
	slot := plotW / float64(n)
	barW := math.Max(slot*0.75, 0.5)
	layout, unit := "01-02", tl.Unit
	switch unit {
	case "hour":
		layout = "01-02 15:00"
	case "week":
		layout = "2006-01-02"
	}
	title := "ブロックされた送信の推移 Blocked uploads over time"
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" role="img" aria-label="%s" viewBox="0 0 %d %d" width="100%%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">`,
		esc(title), width, height)
	fmt.Fprintf(&s, `<title>%s</title>`, esc(title))
	// Legend.
	legend := []struct{ class, label string }{
		{"blk", "ブロック blocked"}, {"wb", "検知のみ would block"}, {"ob", "予算超過 over budget"},
	}
	for i, l := range legend {
		x := left + i*190
		fmt.Fprintf(&s, `<rect x="%d" y="4" width="12" height="12" class="%s"/><text x="%d" y="15" class="lbl">%s</text>`, x, l.class, x+17, esc(l.label))
	}
	// Grid and y axis.
	for i := 0; i <= 4; i++ {
		v := top * int64(i) / 4
		y := float64(topPad) + plotH - plotH*float64(v)/float64(top)
		fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/>`, left, width-right, y, y)
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end" class="tick">%s</text>`, left-6, y+4, esc(FormatCount(v)))
	}
	labelEvery := max(1, int(math.Ceil(float64(n)/12)))
	for i, p := range tl.Points {
		x := float64(left) + slot*float64(i) + (slot-barW)/2
		y := float64(topPad) + plotH
		for _, seg := range []struct {
			v     int64
			class string
		}{{p.Blocked, "blk"}, {p.WouldBlock, "wb"}, {p.OverBudget, "ob"}} {
			if seg.v == 0 {
				continue
			}
			h := plotH * float64(seg.v) / float64(top)
			y -= h
			fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="%s"><title>%s: %s</title></rect>`,
				x, y, barW, h, seg.class, esc(p.Start.Format(layout)), esc(FormatCount(seg.v)))
		}
		if i%labelEvery == 0 {
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s</text>`,
				x+barW/2, height-bottom+16, esc(p.Start.Format(layout)))
		}
	}
	fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="axis"/>`, left, width-right, float64(topPad)+plotH, float64(topPad)+plotH)
	if n > 0 {
		fmt.Fprintf(&s, `<text x="%d" y="%d" class="tick">%s</text>`, left, height-6, esc("("+zoneName(tl.Points[0].Start)+")"))
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}
