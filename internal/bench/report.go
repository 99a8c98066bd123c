package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Report is everything a run measured.
type Report struct {
	Started  string      `json:"started"`
	Machine  Machine     `json:"machine"`
	Settings Settings    `json:"settings"`
	Results  []Result    `json:"results"`
	Hold     *HoldResult `json:"hold,omitempty"`
}

// Settings records how the run was made.
type Settings struct {
	Nodes       int      `json:"nodes"` // 0: a running cluster at Addr
	Workloads   []string `json:"workloads"`
	Concurrency []int    `json:"concurrency"`
	Acks        []string `json:"acks"`
	DecisionAt  []int    `json:"decision_concurrency,omitempty"`
	Rounds      int      `json:"rounds"`
	DurationSec float64  `json:"duration_s"`
	WarmupSec   float64  `json:"warmup_s"`
	Accounts    int      `json:"accounts"`
	Retries     int      `json:"retries"`
	MaxConns    int      `json:"max_conns,omitempty"`
	Floor       bool     `json:"floor,omitempty"`
	Phases      int      `json:"phases,omitempty"`
}

func settingsOf(c Config) Settings {
	s := Settings{Workloads: c.Workloads, Concurrency: c.Concurrency, Acks: c.Acks, DecisionAt: c.DecisionAt, Rounds: c.Rounds,
		DurationSec: c.Duration.Seconds(), WarmupSec: c.Warmup.Seconds(), Accounts: c.Accounts, Retries: c.Retries, MaxConns: c.MaxConns, Floor: c.Floor, Phases: c.Phases}
	if c.Start {
		s.Nodes = c.Nodes
	}
	return s
}

// WriteTable writes the human report: one row per workload, ack and
// concurrency with the medians over the rounds, then the hold measurement.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "txbench: %d CPUs (%s), %d MiB, load %.2f at start; %d rounds of %gs (+%gs warm-up) per side, medians\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemoryMiB, r.Machine.Load1, r.Settings.Rounds, r.Settings.DurationSec, r.Settings.WarmupSec)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tack\tc\ttxcoord tps\tbaseline tps\tratio\t(min-max)\tp50 ms\tp95 ms\tp99 ms\tmax ms\tbase p50\tbase p99\taborts\tretries\terrors\tcoord cpu s/1k\tleader cpu s/1k\tpg cpu s/1k (base)\tsurreal cpu s/1k\tclient cpu s/1k (base)\tleader rss MiB\tbusy\t")
	for _, x := range r.Results {
		t := x.Txcoord
		b := Stats{}
		if x.Baseline != nil {
			b = *x.Baseline
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%.3f\t%.2f-%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%.2f\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f (%.2f)\t%.2f\t%.2f (%.2f)\t%.0f\t%.0f%%\t\n",
			x.Workload, x.Ack, x.Concurrency, t.TPS, b.TPS, x.Ratio, x.RatioMin, x.RatioMax,
			t.P50Ms, t.P95Ms, t.P99Ms, t.MaxMs, b.P50Ms, b.P99Ms, t.Aborts, t.Retries, t.Errors,
			t.CoordCPUPer1k, t.LeaderCPUPer1k, t.PGCPUPer1k, b.PGCPUPer1k, t.SurrealCPUPer1k, t.ClientCPUPer1k, b.ClientCPUPer1k, t.LeaderPeakRSSMiB, 100*t.MachineBusy)
	}
	tw.Flush()
	if r.Settings.Floor {
		fmt.Fprintln(w, "floor: the same transactions committed by txbench through the participant adapters, no coordinator; ceiling = floor/baseline, the best ratio any coordinator using them could reach here")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "workload\tc\tfloor tps\tceiling\ttxcoord/floor\tfloor p50 ms\tfloor p99 ms\tpg cpu s/1k\tsurreal cpu s/1k\tclient cpu s/1k\t")
		for _, x := range r.Results {
			if f := x.Floor; f != nil {
				fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
					x.Workload, x.Concurrency, f.TPS, x.Ceiling, x.OfFloor, f.P50Ms, f.P99Ms, f.PGCPUPer1k, f.SurrealCPUPer1k, f.ClientCPUPer1k)
			}
		}
		tw.Flush()
	}
	r.writePhases(w)
	for _, x := range r.Results {
		if x.Floor != nil && x.Floor.FirstError != "" {
			fmt.Fprintf(w, "first floor error, %s c=%d: %s\n", x.Workload, x.Concurrency, x.Floor.FirstError)
		}
		if x.Txcoord.FirstError != "" {
			fmt.Fprintf(w, "first error, %s ack=%s c=%d: %s\n", x.Workload, x.Ack, x.Concurrency, x.Txcoord.FirstError)
		}
		if x.Baseline != nil && x.Baseline.FirstError != "" {
			fmt.Fprintf(w, "first baseline error, %s c=%d: %s\n", x.Workload, x.Concurrency, x.Baseline.FirstError)
		}
	}
	if h := r.Hold; h != nil {
		fmt.Fprintf(w, "hold: %d transactions held (%s): leader RSS %.0f MiB (idle %.0f MiB; %.1f KiB each; high-water %.0f MiB); Begin number %d: %s\n",
			h.Held, h.Op, h.LeaderRSSHeldMiB, h.LeaderRSSIdleMiB, h.PerTxKiB, h.LeaderHWMMiB, h.Held+1, h.RejectError)
	}
}

// FinalLines are the `bench:` lines, one per workload: at concurrency 32
// (or the highest measured below it), acknowledgement mode applied (or
// the first measured).
func (r *Report) FinalLines() []string {
	var out []string
	for _, x := range r.finalResults() {
		out = append(out, x.Line())
	}
	return out
}

// FloorLines are the `floor:` lines of the same results as FinalLines,
// for the workloads whose floor was measured.
func (r *Report) FloorLines() []string {
	var out []string
	for _, x := range r.finalResults() {
		if l := x.FloorLine(); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// finalResults picks, per workload, the result the final lines report.
func (r *Report) finalResults() []Result {
	var out []Result
	if len(r.Settings.Acks) == 0 {
		return nil
	}
	ack := r.Settings.Acks[0]
	if containsAck(r.Settings.Acks, AckApplied) {
		ack = AckApplied
	}
	for _, w := range r.Settings.Workloads {
		best := -1
		for i, x := range r.Results {
			if x.Workload != w || x.Ack != ack {
				continue
			}
			if best < 0 || closerTo32(x.Concurrency, r.Results[best].Concurrency) {
				best = i
			}
		}
		if best >= 0 {
			out = append(out, r.Results[best])
		}
	}
	return out
}

func containsAck(acks []string, a string) bool {
	for _, x := range acks {
		if x == a {
			return true
		}
	}
	return false
}

// closerTo32: 32 first, then the highest below it, then the lowest above.
func closerTo32(c, than int) bool {
	score := func(n int) int {
		if n <= 32 {
			return n
		}
		return -n
	}
	return score(c) > score(than)
}

// String is the table, for logs.
func (r *Report) String() string {
	var sb strings.Builder
	r.WriteTable(&sb)
	return sb.String()
}

// writePhases writes where sampled two-phase transactions spent their time
// on the leader (--phases), if any were sampled.
func (r *Report) writePhases(w io.Writer) {
	var tw *tabwriter.Writer
	for _, x := range r.Results {
		p := x.Txcoord.Phases
		if p == nil {
			continue
		}
		if tw == nil {
			fmt.Fprintln(w, "phases: medians over the last committed two-phase transactions of each txcoord side, from the leader's timelines (begin → commit request → last vote → decision applied → last commit); outside = client p50 − the server's part before its reply (server, less commit with ack=decision)")
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "workload\tack\tc\tsampled\tstatements ms\tprepare ms\tdecision ms\tcommit ms\tserver ms\tclient p50 ms\toutside ms\t")
		}
		reply := p.ServerMs
		if x.Ack == AckDecision { // the reply leaves once the decision is applied
			reply -= p.CommitMs
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			x.Workload, x.Ack, x.Concurrency, p.Sampled, p.StatementsMs, p.PrepareMs, p.DecisionMs, p.CommitMs, p.ServerMs, x.Txcoord.P50Ms, x.Txcoord.P50Ms-reply)
	}
	if tw != nil {
		tw.Flush()
	}
}
