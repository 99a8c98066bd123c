package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Stats summarize one measured run (txcoord or baseline) of one workload at
// one concurrency. Latencies are of successful operations only.
type Stats struct {
	Ops     int     `json:"ops"`    // successful operations (committed transactions)
	Aborts  int     `json:"aborts"` // transactions that rolled back (conflicts, NO votes)
	Errors  int     `json:"errors"` // anything else, unknown outcomes included
	Seconds float64 `json:"seconds"`
	TPS     float64 `json:"tps"`
	P50Ms   float64 `json:"p50_ms"`
	P95Ms   float64 `json:"p95_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// FirstError is the first error seen, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// Result is one workload at one concurrency: txcoord against the baseline.
type Result struct {
	Workload    string `json:"workload"`
	Concurrency int    `json:"concurrency"`
	Txcoord     Stats  `json:"txcoord"`
	Baseline    *Stats `json:"baseline,omitempty"` // nil with --baseline=false
	// Ratio is txcoord TPS / baseline TPS (0 without a baseline).
	Ratio float64 `json:"ratio"`
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted latencies; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize computes Stats from the successful operations' latencies
// (sorted in place), the abort and error counts, and the measured time.
func summarize(lat []time.Duration, aborts, errs int, elapsed time.Duration) Stats {
	slices.Sort(lat)
	s := Stats{Ops: len(lat), Aborts: aborts, Errors: errs, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		s.TPS = float64(len(lat)) / elapsed.Seconds()
	}
	if len(lat) > 0 {
		s.P50Ms = ms(Percentile(lat, 50))
		s.P95Ms = ms(Percentile(lat, 95))
		s.P99Ms = ms(Percentile(lat, 99))
		s.MaxMs = ms(lat[len(lat)-1])
	}
	return s
}

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Line is the one-line result per workload and concurrency.
func (r Result) Line() string {
	base := 0.0
	if r.Baseline != nil {
		base = r.Baseline.TPS
	}
	return fmt.Sprintf("bench: workload=%s c=%d txcoord_tps=%.1f baseline_tps=%.1f ratio=%.3f p50_ms=%.2f p99_ms=%.2f",
		r.Workload, r.Concurrency, r.Txcoord.TPS, base, r.Ratio, r.Txcoord.P50Ms, r.Txcoord.P99Ms)
}

// detail is a human line for one side of a result.
func (s Stats) detail(side string) string {
	d := fmt.Sprintf("%-8s %8.1f tps  ops=%d aborts=%d errors=%d  p50=%.2fms p95=%.2fms p99=%.2fms max=%.2fms",
		side, s.TPS, s.Ops, s.Aborts, s.Errors, s.P50Ms, s.P95Ms, s.P99Ms, s.MaxMs)
	if s.FirstError != "" {
		d += "\n           first error: " + s.FirstError
	}
	return d
}
