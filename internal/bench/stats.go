package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Stats summarize one measured run (txcoord or baseline) of one workload at
// one concurrency. Latencies are of successful operations only (a transfer
// that was retried after an abort counts once, with its retries).
type Stats struct {
	Ops     int     `json:"ops"`     // successful operations (committed transactions)
	Aborts  int     `json:"aborts"`  // aborted attempts (conflicts, NO votes), retried or not
	Retries int     `json:"retries"` // attempts run again after an abort
	Failed  int     `json:"failed"`  // operations that aborted on every attempt
	Errors  int     `json:"errors"`  // anything else, unknown outcomes included
	Seconds float64 `json:"seconds"`
	TPS     float64 `json:"tps"`
	P50Ms   float64 `json:"p50_ms"`
	P95Ms   float64 `json:"p95_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`

	// Resources per 1,000 successful operations, from /proc: CPU seconds of
	// all coordinator nodes, of the leader alone, of the PostgreSQL server
	// (all its processes) and of the SurrealDB server. Database figures
	// include anything else using the same servers meanwhile.
	CoordCPUPer1k   float64 `json:"coord_cpu_s_per_1k"`
	LeaderCPUPer1k  float64 `json:"leader_cpu_s_per_1k"`
	PGCPUPer1k      float64 `json:"pg_cpu_s_per_1k"`
	SurrealCPUPer1k float64 `json:"surreal_cpu_s_per_1k"`
	// ClientCPUPer1k: the benchmark process itself (the clients).
	ClientCPUPer1k float64 `json:"client_cpu_s_per_1k"`
	// LeaderPeakRSSMiB: the leader's highest resident set during the run.
	LeaderPeakRSSMiB float64 `json:"leader_peak_rss_mib"`
	// MachineBusy: the fraction of all CPUs' time spent not idle during the
	// run (1.0 = every core saturated), by anything on the machine.
	MachineBusy float64 `json:"machine_busy"`

	// FirstError is the first error seen, for the report.
	FirstError string `json:"first_error,omitempty"`

	// Phases: where the time of a sample of committed two-phase
	// transactions went on the leader (txcoord side, --phases).
	Phases *Phases `json:"phases,omitempty"`
}

// setUsage fills the resource fields from a monitor's reading.
func (s *Stats) setUsage(u Usage, cpus int) {
	if s.Ops > 0 {
		k := float64(s.Ops) / 1000
		s.CoordCPUPer1k = u.CoordCPUSec / k
		s.LeaderCPUPer1k = u.LeaderCPUSec / k
		s.PGCPUPer1k = u.PGCPUSec / k
		s.SurrealCPUPer1k = u.SurrealCPUSec / k
		s.ClientCPUPer1k = u.ClientCPUSec / k
	}
	s.LeaderPeakRSSMiB = u.LeaderPeakRSSMiB
	if s.Seconds > 0 && cpus > 0 {
		s.MachineBusy = u.MachineCPUSec / (s.Seconds * float64(cpus))
	}
}

// Round is one A/B pair: txcoord and the baseline measured back to back
// (and the floor after them, or before in B A rounds).
type Round struct {
	Txcoord  Stats   `json:"txcoord"`
	Baseline *Stats  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio"`
	// Floor: the same transactions committed through the adapters with no
	// coordinator (floor.go).
	Floor *Stats `json:"floor,omitempty"`
}

// Result is one workload, acknowledgement mode and concurrency: txcoord
// against the baseline, every round, and their medians.
type Result struct {
	Workload    string `json:"workload"`
	Ack         string `json:"ack"`
	Concurrency int    `json:"concurrency"`
	// Txcoord and Baseline hold the per-field medians over the rounds.
	Txcoord  Stats  `json:"txcoord"`
	Baseline *Stats `json:"baseline,omitempty"` // nil with --baseline=false
	// Ratio is the median of the rounds' txcoord TPS / baseline TPS (0
	// without a baseline); RatioMin and RatioMax show the spread.
	Ratio    float64 `json:"ratio"`
	RatioMin float64 `json:"ratio_min"`
	RatioMax float64 `json:"ratio_max"`
	// Floor holds the floor's medians (nil without --floor); Ceiling is
	// the median of the rounds' floor TPS / baseline TPS: the best ratio
	// a coordinator using these adapters could reach here. OfFloor is the
	// median of txcoord TPS / floor TPS: the share of the participants'
	// own throughput txcoord keeps.
	Floor   *Stats  `json:"floor,omitempty"`
	Ceiling float64 `json:"ceiling,omitempty"`
	OfFloor float64 `json:"of_floor,omitempty"`
	Rounds  []Round `json:"rounds"`
}

// summarize recomputes the medians from the rounds.
func (r *Result) summarize() {
	var tx, base, floor []Stats
	var ratios, ceilings, ofFloor []float64
	for _, rr := range r.Rounds {
		tx = append(tx, rr.Txcoord)
		if rr.Baseline != nil {
			base = append(base, *rr.Baseline)
			ratios = append(ratios, rr.Ratio)
		}
		if rr.Floor != nil {
			floor = append(floor, *rr.Floor)
			ofFloor = append(ofFloor, ratio(rr.Txcoord.TPS, rr.Floor.TPS))
			if rr.Baseline != nil {
				ceilings = append(ceilings, ratio(rr.Floor.TPS, rr.Baseline.TPS))
			}
		}
	}
	r.Floor = nil
	if len(floor) > 0 {
		f := medianStats(floor)
		r.Floor = &f
		r.Ceiling, r.OfFloor = median(ceilings), median(ofFloor)
	}
	r.Txcoord = medianStats(tx)
	r.Baseline = nil
	if len(base) > 0 {
		b := medianStats(base)
		r.Baseline = &b
		r.Ratio = median(ratios)
		r.RatioMin, r.RatioMax = slices.Min(ratios), slices.Max(ratios)
	}
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianStats takes the median of every numeric field separately (so the
// result need not be any one round); counts are medians too.
func medianStats(ss []Stats) Stats {
	if len(ss) == 0 {
		return Stats{}
	}
	f := func(get func(Stats) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = get(s)
		}
		return median(xs)
	}
	i := func(get func(Stats) int) int {
		return int(math.Round(f(func(s Stats) float64 { return float64(get(s)) })))
	}
	out := Stats{
		Ops:              i(func(s Stats) int { return s.Ops }),
		Aborts:           i(func(s Stats) int { return s.Aborts }),
		Retries:          i(func(s Stats) int { return s.Retries }),
		Failed:           i(func(s Stats) int { return s.Failed }),
		Errors:           i(func(s Stats) int { return s.Errors }),
		Seconds:          f(func(s Stats) float64 { return s.Seconds }),
		TPS:              f(func(s Stats) float64 { return s.TPS }),
		P50Ms:            f(func(s Stats) float64 { return s.P50Ms }),
		P95Ms:            f(func(s Stats) float64 { return s.P95Ms }),
		P99Ms:            f(func(s Stats) float64 { return s.P99Ms }),
		MaxMs:            f(func(s Stats) float64 { return s.MaxMs }),
		CoordCPUPer1k:    f(func(s Stats) float64 { return s.CoordCPUPer1k }),
		LeaderCPUPer1k:   f(func(s Stats) float64 { return s.LeaderCPUPer1k }),
		PGCPUPer1k:       f(func(s Stats) float64 { return s.PGCPUPer1k }),
		SurrealCPUPer1k:  f(func(s Stats) float64 { return s.SurrealCPUPer1k }),
		ClientCPUPer1k:   f(func(s Stats) float64 { return s.ClientCPUPer1k }),
		LeaderPeakRSSMiB: f(func(s Stats) float64 { return s.LeaderPeakRSSMiB }),
		MachineBusy:      f(func(s Stats) float64 { return s.MachineBusy }),
	}
	for _, s := range ss {
		if s.FirstError != "" {
			out.FirstError = s.FirstError
			break
		}
	}
	phases := make([]*Phases, len(ss))
	for i, s := range ss {
		phases[i] = s.Phases
	}
	out.Phases = medianOfPhases(phases)
	return out
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

// Line is the one-line result of a workload at a concurrency (medians).
func (r Result) Line() string {
	base := 0.0
	if r.Baseline != nil {
		base = r.Baseline.TPS
	}
	return fmt.Sprintf("bench: workload=%s c=%d txcoord_tps=%.1f baseline_tps=%.1f ratio=%.3f p50_ms=%.2f p99_ms=%.2f",
		r.Workload, r.Concurrency, r.Txcoord.TPS, base, r.Ratio, r.Txcoord.P50Ms, r.Txcoord.P99Ms)
}

// FloorLine is the floor's one-line result (medians), "" without one.
func (r Result) FloorLine() string {
	if r.Floor == nil {
		return ""
	}
	return fmt.Sprintf("floor: workload=%s c=%d floor_tps=%.1f ceiling=%.3f txcoord_of_floor=%.3f",
		r.Workload, r.Concurrency, r.Floor.TPS, r.Ceiling, r.OfFloor)
}

// detail is a human line for one side of a result.
func (s Stats) detail(side string) string {
	d := fmt.Sprintf("%-8s %8.1f tps  ops=%d aborts=%d retries=%d errors=%d  p50=%.2fms p95=%.2fms p99=%.2fms max=%.2fms  coord_cpu=%.2fs/1k pg_cpu=%.2fs/1k client_cpu=%.2fs/1k rss=%.0fMiB busy=%.0f%%",
		side, s.TPS, s.Ops, s.Aborts, s.Retries, s.Errors, s.P50Ms, s.P95Ms, s.P99Ms, s.MaxMs,
		s.CoordCPUPer1k, s.PGCPUPer1k, s.ClientCPUPer1k, s.LeaderPeakRSSMiB, 100*s.MachineBusy)
	if s.FirstError != "" {
		d += "\n           first error: " + s.FirstError
	}
	return d
}
