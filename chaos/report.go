package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Elections counts leadership changes seen while the workload ran.
type Elections struct {
	LeaderChanges int    `json:"leader_changes"`
	FirstTerm     uint64 `json:"first_term"`
	LastTerm      uint64 `json:"last_term"`
}

// Percentiles summarise recovery times in milliseconds.
type Percentiles struct {
	Count       int   `json:"count"`
	P50         int64 `json:"p50"`
	P99         int64 `json:"p99"`
	Max         int64 `json:"max"`
	Unrecovered int   `json:"unrecovered"`
}

// Report is the outcome of a run: the JSON report and the final line.
type Report struct {
	Seed      uint64  `json:"seed"`
	DurationS int     `json:"duration_s"`
	WindowS   float64 `json:"window_s"` // the workload window as it ran
	Command   string  `json:"command"`
	Passed    bool    `json:"passed"`

	History    Counts            `json:"history"`
	ByWorkload map[string]Counts `json:"history_by_workload"`
	Resolved   ResolveStats      `json:"unknown_resolution"`

	Faults          int            `json:"faults"`
	FaultKinds      int            `json:"fault_kinds"`
	FaultsByKind    map[string]int `json:"faults_by_kind"`
	FailpointsFired map[string]int `json:"failpoints_fired"`
	FaultList       []Fault        `json:"fault_list"`

	Anomalies       int            `json:"anomalies"`
	AnomaliesByKind map[string]int `json:"anomalies_by_kind"`
	AnomalyList     []Anomaly      `json:"anomaly_list"` // the first 50 of each kind

	InDoubtLeft int     `json:"in_doubt_left"`
	InDoubt     InDoubt `json:"in_doubt"`

	Recovery  Percentiles `json:"recovery_ms"`
	Elections Elections   `json:"elections"`
	Digests   []Digest    `json:"decision_store_digests"`

	UnexpectedExits []string `json:"unexpected_exits,omitempty"`
	Injected        int      `json:"injected_bug_actions,omitempty"`
	Inject          string   `json:"inject,omitempty"`

	HistoryPath string `json:"history_path,omitempty"`
	LogsDir     string `json:"logs_dir,omitempty"`
}

// maxListedPerKind bounds the anomalies listed per kind in the report, so
// that a flood of one kind does not hide a rare one.
const maxListedPerKind = 50

func newReport(o Options, ops []Operation, faults []Fault, anomalies []Anomaly, inDoubt InDoubt, digests []Digest,
	el Elections, resolved ResolveStats, window time.Duration) *Report {
	total, byF := Count(ops)
	rep := &Report{
		Seed: o.Seed, DurationS: int(o.Duration.Round(time.Second).Seconds()), WindowS: window.Round(100 * time.Millisecond).Seconds(),
		Command: o.Command, History: total, ByWorkload: byF, Resolved: resolved,
		Faults: len(faults), FaultsByKind: map[string]int{}, FaultList: faults,
		Anomalies: len(anomalies), AnomaliesByKind: CountAnomalies(anomalies),
		InDoubtLeft: inDoubt.Total(), InDoubt: inDoubt, Elections: el, Digests: digests, Inject: o.Inject,
	}
	perKind := map[string]int{}
	for _, a := range anomalies {
		if perKind[a.Kind]++; perKind[a.Kind] <= maxListedPerKind {
			rep.AnomalyList = append(rep.AnomalyList, a)
		}
	}
	var rec []int64
	for _, f := range faults {
		rep.FaultsByKind[f.Kind]++
		if f.RecoveryMs >= 0 {
			rec = append(rec, f.RecoveryMs)
		} else {
			rep.Recovery.Unrecovered++
		}
	}
	rep.FaultKinds = len(rep.FaultsByKind)
	rep.Recovery.Count = len(rec)
	if len(rec) > 0 {
		sort.Slice(rec, func(i, j int) bool { return rec[i] < rec[j] })
		rep.Recovery.P50 = percentile(rec, 0.50)
		rep.Recovery.P99 = percentile(rec, 0.99)
		rep.Recovery.Max = rec[len(rec)-1]
	}
	rep.Passed = rep.Anomalies == 0 && rep.InDoubtLeft == 0
	return rep
}

// percentile of sorted values, nearest rank.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Line is the final single line of a run.
func (r *Report) Line() string {
	return fmt.Sprintf("chaos: seed=%d duration_s=%d txns=%d ok=%d failed=%d unknown=%d faults=%d anomalies=%d in_doubt_left=%d recovery_p99_ms=%d",
		r.Seed, r.DurationS, r.History.Txns, r.History.OK, r.History.Failed, r.History.Unknown, r.Faults, r.Anomalies, r.InDoubtLeft, r.Recovery.P99)
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteSummary writes the human summary (the final line is printed
// separately, last).
func (r *Report) WriteSummary(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	p("")
	p("== chaos run %s (seed %d, %ds window) ==", verdict, r.Seed, r.DurationS)
	p("operations: %d  ok %d  failed %d  unknown %d", r.History.Txns, r.History.OK, r.History.Failed, r.History.Unknown)
	for _, f := range sortedKeys(r.ByWorkload) {
		c := r.ByWorkload[f]
		p("  %-9s %6d  ok %6d  failed %6d  unknown %5d", f, c.Txns, c.OK, c.Failed, c.Unknown)
	}
	p("unknown outcomes resolved by GetTransaction: %d committed, %d aborted, %d still unknown",
		r.Resolved.UnknownCommitted, r.Resolved.UnknownAborted, r.Resolved.UnknownUnresolved)
	for i, u := range r.Resolved.StillUnknown {
		if i == 5 {
			p("  ... (%d in the JSON report)", len(r.Resolved.StillUnknown))
			break
		}
		p("  still unknown: %s", u)
	}
	p("faults: %d of %d kinds", r.Faults, r.FaultKinds)
	for _, k := range sortedKeys(r.FaultsByKind) {
		p("  %-22s %3d", k, r.FaultsByKind[k])
	}
	if len(r.FailpointsFired) > 0 {
		var fs []string
		for _, k := range sortedKeys(r.FailpointsFired) {
			fs = append(fs, fmt.Sprintf("%s×%d", k, r.FailpointsFired[k]))
		}
		p("failpoints that killed a leader: %s", strings.Join(fs, ", "))
	}
	p("recovery after heal (ms): p50 %d  p99 %d  max %d  (%d measured, %d never recovered)",
		r.Recovery.P50, r.Recovery.P99, r.Recovery.Max, r.Recovery.Count, r.Recovery.Unrecovered)
	p("elections: %d leader changes, term %d → %d", r.Elections.LeaderChanges, r.Elections.FirstTerm, r.Elections.LastTerm)
	var ds []string
	for _, d := range r.Digests {
		ds = append(ds, fmt.Sprintf("%s@%d %.12s", d.Node, d.Applied, d.SHA256))
	}
	p("decision stores: %s", strings.Join(ds, ", "))
	p("in doubt left: %d (pg prepared %d, surreal intents %d, surreal locks %d, log not done %d, unreadable %d)",
		r.InDoubtLeft, r.InDoubt.PGPrepared, r.InDoubt.SurrealIntents, r.InDoubt.SurrealLocks, r.InDoubt.LogNotDone, r.InDoubt.Unreadable)
	if len(r.InDoubt.Samples) > 0 && r.InDoubtLeft > 0 {
		p("  e.g. %s", strings.Join(r.InDoubt.Samples, ", "))
	}
	if r.Inject != "" {
		p("injected bug %q: %d actions", r.Inject, r.Injected)
	}
	if len(r.UnexpectedExits) > 0 {
		p("coordinator exits not caused by the run (restarted): %d", len(r.UnexpectedExits))
		for i, e := range r.UnexpectedExits {
			if i == 5 {
				p("  ...")
				break
			}
			p("  %s", e)
		}
	}
	p("anomalies: %d", r.Anomalies)
	for _, k := range sortedKeys(r.AnomaliesByKind) {
		p("  %-30s %d", k, r.AnomaliesByKind[k])
	}
	shown := map[string]int{}
	for _, a := range r.AnomalyList {
		if shown[a.Kind]++; shown[a.Kind] <= 5 {
			p("  - %s", a)
		} else if shown[a.Kind] == 6 {
			p("  - ... (more %s in the JSON report)", a.Kind)
		}
	}
	if r.HistoryPath != "" {
		p("history: %s", r.HistoryPath)
	}
	if r.LogsDir != "" {
		p("coordinator logs: %s", r.LogsDir)
	}
	if !r.Passed {
		p("")
		p("FAILED with seed %d. Reproduce with:", r.Seed)
		p("  %s", r.Command)
	}
}
