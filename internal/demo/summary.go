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

// KillEvent describes the mid-run SIGKILL of the leader, the election that
// followed and the killed node's restart. Durations after At count from the
// kill.
type KillEvent struct {
	Node       string        // the leader killed
	Term       uint64        // the term it led
	DoneAtKill int           // transfers finished when the kill was sent
	At         time.Duration // since the transfers started
	ExitAfter  time.Duration // SIGKILL → process reaped
	OldPid     int

	NewLeader    string        // the leader that serves after the kill
	NewTerm      uint64        // its term
	ElectedAfter time.Duration // → first node seen leading in a later term
	ServingAfter time.Duration // → NewLeader serves (it finished recovery)

	Restarted      bool          // the killed node was started again
	RestartedAfter time.Duration // → started again
	NewPid         int
	// Rejoined: the restarted node is a follower of NewLeader whose applied
	// index reached the leader's commit index (3/5 nodes only).
	Rejoined *catchUp
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

	Nodes int
	Kill  *KillEvent
	// Leaders: the leader seen in each term from the start to the end.
	Leaders []termLeader
	// Elections: terms after the kill's in which a leader was seen.
	Elections int
	// Failover: kill → the first commit of a transfer begun after it.
	Failover     time.Duration
	FailoverSeen bool
	// InDoubt: the polls of what the kill left in doubt; InDoubtCommitted
	// and InDoubtAborted: how those transfers ended.
	InDoubt                          *InDoubtWatch
	InDoubtCommitted, InDoubtAborted int
	// Digests: every node's StoreDigest at one applied index; DigestProblem
	// says how they differ ("" if equal).
	Digests       []NodeDigest
	DigestProblem string

	Elapsed  time.Duration // the transfers, start to end
	LogPaths []string      // one per node
}

// ms renders a duration as whole milliseconds for Line.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// Line is the one-line result the demo ends with (scripts grep it).
// The last four fields are 0 when there was no kill; failover_ms and
// in_doubt_clear_ms are also 0 when not measured (Problems says so).
func (s Summary) Line() string {
	var clear time.Duration
	if s.InDoubt != nil && s.InDoubt.Cleared {
		clear = s.InDoubt.ClearAfter
	}
	return fmt.Sprintf("demo: transfers=%d committed=%d aborted=%d unknown_resolved=%d total_before=%d total_after=%d pg_prepared_left=%d surreal_intents_left=%d nodes=%d elections=%d failover_ms=%d in_doubt_clear_ms=%d",
		s.Transfers, s.Committed, s.Aborted, s.UnknownResolved, s.TotalBefore, s.TotalAfter,
		s.PGPreparedLeft, s.SurrealIntentsLeft, s.Nodes, s.Elections, ms(s.Failover), ms(clear))
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
	if s.Kill != nil {
		if !s.FailoverSeen {
			p = append(p, "no transfer begun after the kill committed: failover not shown (more --transfers, or a lower --kill-at)")
		}
		if s.InDoubt == nil || !s.InDoubt.Cleared {
			p = append(p, "what the kill left in doubt was never seen cleared (see the in-doubt line)")
		}
	}
	if s.DigestProblem != "" {
		p = append(p, "store digests: "+s.DigestProblem)
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
	s.reportCluster(p)
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
	if len(s.LogPaths) > 0 {
		p("node logs           %s", strings.Join(s.LogPaths, " "))
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

// reportCluster writes the cluster lines of the report.
func (s Summary) reportCluster(p func(string, ...any)) {
	p("nodes               %d", s.Nodes)
	k := s.Kill
	if k == nil {
		p("kill                none")
	} else {
		p("kill                SIGKILL of leader %s (term %d, pid %d) at %.1fs after %d transfers",
			k.Node, k.Term, k.OldPid, k.At.Seconds(), k.DoneAtKill)
		if k.NewLeader != "" {
			p("election            %s leads term %d: seen leading %dms after the kill, serving (recovered) after %dms",
				k.NewLeader, k.NewTerm, ms(k.ElectedAfter), ms(k.ServingAfter))
		}
		var terms []string
		for _, l := range s.Leaders {
			if l.Term > k.Term {
				terms = append(terms, fmt.Sprintf("%d:%s", l.Term, l.ID))
			}
		}
		p("elections           %d after the kill (term:leader %s; term %d → %d)", s.Elections, strings.Join(terms, " "),
			k.Term, k.NewTerm)
		if s.FailoverSeen {
			p("failover            first commit of a transfer begun after the kill: %dms after the kill", ms(s.Failover))
		} else {
			p("failover            no transfer begun after the kill committed")
		}
		if w := s.InDoubt; w != nil {
			a := w.AtKill
			p("in doubt at kill    %d transfer(s) begun before the kill: %d prepared PostgreSQL branch(es), %d SurrealDB intent(s), %d outcome(s) not yet known to the client",
				len(a.TxIDs), a.PG, a.Surreal, a.Open)
			if w.Cleared {
				p("                    all resolved %dms after the kill (%d committed, %d rolled back)",
					ms(w.ClearAfter), s.InDoubtCommitted, s.InDoubtAborted)
			} else {
				p("                    NOT cleared: last poll %d PostgreSQL, %d SurrealDB, %d open (err %v)",
					w.Last.PG, w.Last.Surreal, w.Last.Open, w.Err)
			}
		}
		switch {
		case k.Rejoined != nil:
			r := k.Rejoined
			p("rejoin              %s restarted %dms after the kill (pid %d); follower of %s in term %d, applied index %d ≥ %d (leader's commit at its restart) %dms after its restart",
				k.Node, ms(k.RestartedAfter), k.NewPid, r.Leader, r.Term, r.Applied, r.Target, ms(r.Took))
		case k.Restarted:
			p("restart             %s restarted %dms after the kill (pid %d)", k.Node, ms(k.RestartedAfter), k.NewPid)
		}
	}
	switch {
	case s.DigestProblem != "":
		p("store digests       DIFFER: %s", s.DigestProblem)
	case len(s.Digests) > 0:
		d := s.Digests[0]
		names := make([]string, len(s.Digests))
		for i, x := range s.Digests {
			names[i] = x.Node
		}
		p("store digests       equal on %s at applied index %d: sha256 %s, %d records", strings.Join(names, ","), d.Applied, d.SHA256, d.Records)
	}
}
