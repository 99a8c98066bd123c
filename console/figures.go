package console

import (
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The charts come from the node's own figures: every second the sampler
// gathers the in-process metrics registry (no scraping over HTTP) and keeps
// a ring of samples, from which the pages draw inline SVG.

// ringSize is how many one-second samples are kept (5 minutes); a chart
// spans at least minWindow samples.
const (
	ringSize  = 300
	minWindow = 60
)

// sample is one second of the coordinator's figures. Rates are per second
// over the interval; P50/P99 are commit latencies in milliseconds over the
// commits of the interval (NaN when there were none).
type sample struct {
	At        time.Time
	Committed float64
	Aborted   float64
	Unknown   float64
	P50, P99  float64
	InDoubt   float64
	Active    float64
}

// counters are the raw cumulative figures of one gathering.
type counters struct {
	at       time.Time
	outcomes map[string]float64
	buckets  []float64 // cumulative counts at bounds (commit latency, all outcomes)
	bounds   []float64 // upper bounds, seconds
	count    float64
	inDoubt  float64
	active   float64
}

// figures samples a Gatherer into a ring. Safe for concurrent use.
type figures struct {
	g prometheus.Gatherer

	mu   sync.Mutex
	last *counters
	ring []sample
}

func newFigures(g prometheus.Gatherer) *figures { return &figures{g: g} }

// run samples every second until stop closes.
func (f *figures) run(stop <-chan struct{}) {
	if f.g == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	f.tick(time.Now())
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			f.tick(now)
		}
	}
}

// tick gathers once and appends a sample (from the second gathering on).
func (f *figures) tick(now time.Time) {
	mfs, err := f.g.Gather()
	if err != nil && len(mfs) == 0 {
		return
	}
	f.add(read(mfs, now))
}

func read(mfs []*dto.MetricFamily, now time.Time) *counters {
	c := &counters{at: now, outcomes: map[string]float64{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "txcoord_transactions_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						c.outcomes[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		case "txcoord_commit_seconds":
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				c.count += float64(h.GetSampleCount())
				bs := h.GetBucket()
				if c.bounds == nil {
					c.bounds = make([]float64, len(bs))
					c.buckets = make([]float64, len(bs))
					for i, b := range bs {
						c.bounds[i] = b.GetUpperBound()
					}
				}
				for i, b := range bs {
					if i < len(c.buckets) {
						c.buckets[i] += float64(b.GetCumulativeCount())
					}
				}
			}
		case "txcoord_in_doubt_branches":
			for _, m := range mf.GetMetric() {
				c.inDoubt += m.GetGauge().GetValue()
			}
		case "txcoord_active_transactions":
			for _, m := range mf.GetMetric() {
				c.active += m.GetGauge().GetValue()
			}
		}
	}
	return c
}

func (f *figures) add(c *counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.last
	f.last = c
	if prev == nil {
		return
	}
	secs := c.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		return
	}
	rate := func(k string) float64 { return math.Max(0, c.outcomes[k]-prev.outcomes[k]) / secs }
	s := sample{At: c.at, Committed: rate("committed"), Aborted: rate("aborted"), Unknown: rate("unknown"),
		InDoubt: c.inDoubt, Active: c.active, P50: math.NaN(), P99: math.NaN()}
	// A histogram appears with its first observation: before that, its
	// previous counts are zeros.
	if n := c.count - prev.count; n > 0 && (len(prev.buckets) == 0 || len(c.buckets) == len(prev.buckets)) {
		delta := make([]float64, len(c.buckets))
		for i := range delta {
			delta[i] = c.buckets[i]
			if len(prev.buckets) > 0 {
				delta[i] -= prev.buckets[i]
			}
		}
		s.P50 = quantile(0.50, c.bounds, delta, n) * 1000
		s.P99 = quantile(0.99, c.bounds, delta, n) * 1000
	}
	f.ring = append(f.ring, s)
	if len(f.ring) > ringSize {
		f.ring = f.ring[len(f.ring)-ringSize:]
	}
}

// quantile estimates the q-quantile from cumulative bucket counts (upper
// bounds in bounds, n observations in all, the rest above the last bound),
// interpolating linearly inside the bucket, as Prometheus does.
func quantile(q float64, bounds, cum []float64, n float64) float64 {
	rank := q * n
	i := sort.Search(len(cum), func(i int) bool { return cum[i] >= rank })
	if i == len(cum) {
		return bounds[len(bounds)-1] // above the last bound: report that bound
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = bounds[i-1], cum[i-1]
	}
	in := cum[i] - below
	if in <= 0 {
		return bounds[i]
	}
	return lo + (bounds[i]-lo)*(rank-below)/in
}

// samples returns a copy of the ring, oldest first.
func (f *figures) samples() []sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sample(nil), f.ring...)
}

// series is one line of a chart.
type series struct {
	Name  string
	Class string // CSS class of the line (colour and dash)
	Unit  string // in the summary, when not the chart's
	Vals  []float64
}

// chart is one rendered chart and the figures a reader needs in text.
type chart struct {
	ID      string
	Title   string
	Unit    string
	SVG     template.HTML
	Summary string
}

// Chart geometry (the SVG scales to its container; 1280x800 fits two across).
const (
	chartW, chartH = 560, 170
	padL, padR     = 52, 12
	padT, padB     = 12, 24
)

// drawChart renders series (sampled a second apart, the last one now) as an
// inline SVG: axes, a max label, one polyline per series, and a title and
// description for screen readers. Only numbers and fixed names go into the
// markup.
func drawChart(id, title, unit string, ss []series, n int) chart {
	maxV := 0.0
	for _, s := range ss {
		for _, v := range s.Vals {
			if !math.IsNaN(v) && v > maxV {
				maxV = v
			}
		}
	}
	top := niceCeil(maxV)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-t %s-d" preserveAspectRatio="xMidYMid meet">`, chartW, chartH, id, id)
	var desc []string
	for _, s := range ss {
		last := "no data"
		for i := len(s.Vals) - 1; i >= 0; i-- {
			if !math.IsNaN(s.Vals[i]) {
				u := unit
				if s.Unit != "" {
					u = s.Unit
				}
				last = fmt.Sprintf("%s %s", num(s.Vals[i]), u)
				break
			}
		}
		desc = append(desc, s.Name+": "+last)
	}
	summary := "latest: " + strings.Join(desc, "; ")
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s, last %d seconds; %s</desc>`, id, template.HTMLEscapeString(title), id, template.HTMLEscapeString(title), n, template.HTMLEscapeString(summary))
	x0, x1, y0, y1 := float64(padL), float64(chartW-padR), float64(chartH-padB), float64(padT)
	// Grid: 0, half, top.
	for _, frac := range []float64{0, 0.5, 1} {
		y := y0 - (y0-y1)*frac
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y, x1, y)
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, x0-6, y+4, num(top*frac))
	}
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="start">-%ds</text>`, x0, chartH-6, n)
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="end">now</text>`, x1, chartH-6)
	fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>`, (x0+x1)/2, chartH-6, template.HTMLEscapeString(unit))
	for _, s := range ss {
		// A polyline per run of known values (NaN breaks the line); a run
		// of one value is a dot.
		var pts []string
		flush := func() {
			if len(pts) == 1 {
				var x, y float64
				fmt.Sscanf(pts[0], "%f,%f", &x, &y)
				fmt.Fprintf(&b, `<circle class="dot %s" cx="%.1f" cy="%.1f" r="3"/>`, s.Class, x, y)
			} else if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline class="line %s" points="%s"/>`, s.Class, strings.Join(pts, " "))
			}
			pts = nil
		}
		off := n - len(s.Vals)
		for i, v := range s.Vals {
			if math.IsNaN(v) {
				flush()
				continue
			}
			x := x0 + (x1-x0)*float64(off+i)/float64(max(n-1, 1))
			y := y0
			if top > 0 {
				y = y0 - (y0-y1)*v/top
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		flush()
	}
	b.WriteString(`</svg>`)
	return chart{ID: id, Title: title, Unit: unit, SVG: template.HTML(b.String()), Summary: summary}
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// charts draws the three charts from the ring.
func (f *figures) charts() []chart {
	ss := f.samples()
	col := func(get func(sample) float64) []float64 {
		out := make([]float64, len(ss))
		for i, s := range ss {
			out[i] = get(s)
		}
		return out
	}
	// The x axis spans the samples there are, at least a minute.
	n := min(ringSize, max(minWindow, len(ss)))
	return []chart{
		drawChart("throughput", "Throughput", "transactions/s", []series{
			{Name: "committed", Class: "s1", Vals: col(func(s sample) float64 { return s.Committed })},
			{Name: "aborted", Class: "s2", Vals: col(func(s sample) float64 { return s.Aborted })},
			{Name: "unknown", Class: "s3", Vals: col(func(s sample) float64 { return s.Unknown })},
		}, n),
		drawChart("latency", "Commit latency", "ms", []series{
			{Name: "p50", Class: "s1", Vals: col(func(s sample) float64 { return s.P50 })},
			{Name: "p99", Class: "s2", Vals: col(func(s sample) float64 { return s.P99 })},
		}, n),
		drawChart("indoubt", "In doubt and active", "count", []series{
			{Name: "in doubt (last recovery scan)", Class: "s3", Unit: "branches", Vals: col(func(s sample) float64 { return s.InDoubt })},
			{Name: "active", Class: "s1", Unit: "transactions", Vals: col(func(s sample) float64 { return s.Active })},
		}, n),
	}
}
