package demo

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Abort reasons counted in Summary.AbortReasons.
const (
	reasonOverdraft   = "overdraft"        // the source balance was too small: rolled back by the demo
	reasonConflict    = "conflict"         // the coordinator aborted it (a NO vote, a lock timeout...)
	reasonCoordinator = "coordinator-lost" // the coordinator died before Commit was sent
	reasonError       = "error"            // anything else; see Summary.Errors
)

// KillEvent describes the mid-run SIGKILL and restart.
type KillEvent struct {
	DoneAtKill int           // transfers finished when the kill was sent
	At         time.Duration // since the transfers started
	ExitAfter  time.Duration // SIGKILL → process reaped
	DownFor    time.Duration // SIGKILL → the restarted coordinator is healthy
	OldPid     int
	NewPid     int
}

// Summary is what a demo run found. Committed, Aborted and UnknownResolved
// partition the transfers whose outcome is known: a transfer whose Commit
// answered "outcome unknown" counts only in UnknownResolved (split into
// UnknownCommitted and UnknownAborted) once WaitOutcome resolved it.
type Summary struct {
	Transfers        int
	Committed        int // Commit answered committed
	Aborted          int // rolled back, with the reason known at once
	UnknownResolved  int // Commit's outcome was unknown, then resolved
	UnknownCommitted int
	UnknownAborted   int
	Unresolved       int // outcome still unknown after ResolveTimeout
	NotRun           int // never begun: the coordinator did not come back
	ToSurreal        int // transfers planned PostgreSQL → SurrealDB
	AbortReasons     map[string]int
	Errors           []string // a few unexpected errors, for the report
	// ConflictSamples are a few abort messages of conflicts, for the report.
	ConflictSamples []string

	PGBefore, SurrealBefore int64
	PGAfter, SurrealAfter   int64
	TotalBefore, TotalAfter int64

	AccountsChecked    int
	AccountsMismatched []string // "<store>:<id> have X want Y"

	PGPreparedLeft     int
	SurrealIntentsLeft int
	SettledAfter       time.Duration // end of transfers → nothing in doubt

	Kill    *KillEvent
	Elapsed time.Duration // the transfers, start to end
	LogPath string
}

// Line is the one-line result the demo ends with (scripts grep it).
func (s Summary) Line() string {
	return fmt.Sprintf("demo: transfers=%d committed=%d aborted=%d unknown_resolved=%d total_before=%d total_after=%d pg_prepared_left=%d surreal_intents_left=%d",
		s.Transfers, s.Committed, s.Aborted, s.UnknownResolved, s.TotalBefore, s.TotalAfter,
		s.PGPreparedLeft, s.SurrealIntentsLeft)
}

// Problems lists why the run failed; empty means it passed.
func (s Summary) Problems() []string {
	var p []string
	if s.TotalBefore != s.TotalAfter {
		p = append(p, fmt.Sprintf("total balance changed: %d before, %d after (a transfer was not atomic)", s.TotalBefore, s.TotalAfter))
	}
	if n := len(s.AccountsMismatched); n > 0 {
		p = append(p, fmt.Sprintf("%d account(s) differ from their committed transfers", n))
	}
	if s.PGPreparedLeft > 0 {
		p = append(p, fmt.Sprintf("%d prepared PostgreSQL transaction(s) left in doubt", s.PGPreparedLeft))
	}
	if s.SurrealIntentsLeft > 0 {
		p = append(p, fmt.Sprintf("%d SurrealDB intent(s) left in doubt", s.SurrealIntentsLeft))
	}
	if s.Unresolved > 0 {
		p = append(p, fmt.Sprintf("%d transfer(s) with an outcome still unknown", s.Unresolved))
	}
	if s.NotRun > 0 {
		p = append(p, fmt.Sprintf("%d transfer(s) never ran: the coordinator stayed unavailable", s.NotRun))
	}
	if got := s.Committed + s.Aborted + s.UnknownResolved + s.Unresolved + s.NotRun; got != s.Transfers {
		p = append(p, fmt.Sprintf("accounting: %d transfers but %d outcomes", s.Transfers, got))
	}
	return p
}

// OK reports whether the run passed.
func (s Summary) OK() bool { return len(s.Problems()) == 0 }

// formatReasons renders reason counts in a stable order: "overdraft 30, conflict 2".
func formatReasons(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	order := map[string]int{reasonOverdraft: 0, reasonConflict: 1, reasonCoordinator: 2, reasonError: 3}
	base := func(k string) string { b, _, _ := strings.Cut(k, "@"); return b }
	sort.Slice(keys, func(i, j int) bool {
		oi, iok := order[base(keys[i])]
		oj, jok := order[base(keys[j])]
		if iok != jok {
			return iok
		}
		if oi != oj {
			return oi < oj
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Report writes the human summary, ending with Line.
func (s Summary) Report(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "demo: "+format+"\n", args...) }
	p("---- summary ----")
	p("transfers           %d in %.1fs (pg→surreal %d, surreal→pg %d)", s.Transfers, s.Elapsed.Seconds(),
		s.ToSurreal, s.Transfers-s.ToSurreal)
	p("committed           %d", s.Committed)
	if r := formatReasons(s.AbortReasons); r != "" {
		p("aborted             %d (%s)", s.Aborted, r)
	} else {
		p("aborted             %d", s.Aborted)
	}
	for _, c := range s.ConflictSamples {
		p("  e.g. %s", c)
	}
	p("unknown → resolved  %d (committed %d, aborted %d); still unknown %d", s.UnknownResolved,
		s.UnknownCommitted, s.UnknownAborted, s.Unresolved)
	if s.NotRun > 0 {
		p("never run           %d", s.NotRun)
	}
	if k := s.Kill; k != nil {
		p("coordinator kill    SIGKILL at %.1fs after %d transfers (pid %d); back serving after %.1fs (pid %d)",
			k.At.Seconds(), k.DoneAtKill, k.OldPid, k.DownFor.Seconds(), k.NewPid)
	}
	p("total balance       before %d (pg %d + surreal %d), after %d (pg %d + surreal %d)",
		s.TotalBefore, s.PGBefore, s.SurrealBefore, s.TotalAfter, s.PGAfter, s.SurrealAfter)
	p("accounts            %d/%d equal start + committed transfers", s.AccountsChecked-len(s.AccountsMismatched), s.AccountsChecked)
	for i, m := range s.AccountsMismatched {
		if i == 10 {
			p("  ... and %d more", len(s.AccountsMismatched)-10)
			break
		}
		p("  mismatch %s", m)
	}
	p("in doubt            pg prepared %d, surreal intents %d (settled %.1fs after the last transfer)",
		s.PGPreparedLeft, s.SurrealIntentsLeft, s.SettledAfter.Seconds())
	for _, e := range s.Errors {
		p("  error: %s", e)
	}
	if s.LogPath != "" {
		p("coordinator log     %s", s.LogPath)
	}
	if probs := s.Problems(); len(probs) > 0 {
		for _, pr := range probs {
			p("FAIL: %s", pr)
		}
	} else {
		p("PASS: every transfer was all-or-nothing and nothing is left in doubt")
	}
	fmt.Fprintln(w, s.Line())
}
