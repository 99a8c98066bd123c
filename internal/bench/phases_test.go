package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// timeline builds a transaction begun at t0 with events at the given
// offsets in milliseconds.
func timeline(t0 time.Time, events ...any) *client.Transaction {
	tx := &pb.Transaction{CreatedAt: timestamppb.New(t0)}
	for i := 0; i < len(events); i += 2 {
		at := t0.Add(time.Duration(events[i+1].(float64) * float64(time.Millisecond)))
		tx.Timeline = append(tx.Timeline, &pb.TransactionEvent{At: timestamppb.New(at), Event: events[i].(string)})
	}
	return tx
}

func TestPhasesOf(t *testing.T) {
	t0 := time.Now()
	two := timeline(t0,
		"BRANCH_OPENED", 0.1, "BRANCH_OPENED", 0.2, "COMMIT_REQUESTED", 0.5,
		"VOTE", 1.5, "VOTE", 2.0, "DECISION", 4.5, "COMMITTED", 5.0, "COMMITTED", 5.5)
	p, ok := phasesOf(two)
	if !ok {
		t.Fatal("a complete two-phase timeline was refused")
	}
	want := Phases{Sampled: 1, StatementsMs: 0.5, PrepareMs: 1.5, DecisionMs: 2.5, CommitMs: 1, ServerMs: 5.5}
	if *p != want {
		t.Fatalf("phases %+v, want %+v (last vote, first decision, last commit)", p, want)
	}
	// A one-phase commit (no vote, no decision), a read-only one, and a
	// timeline out of order are left out, not counted as zero.
	for name, tx := range map[string]*client.Transaction{
		"one-phase":    timeline(t0, "BRANCH_OPENED", 0.1, "COMMIT_REQUESTED", 0.2, "COMMITTED", 1.0),
		"no decision":  timeline(t0, "COMMIT_REQUESTED", 0.2, "VOTE", 1.0),
		"out of order": timeline(t0, "COMMIT_REQUESTED", 2.0, "VOTE", 1.0, "DECISION", 3.0, "COMMITTED", 4.0),
		"no begin":     {Timeline: two.Timeline},
	} {
		if _, ok := phasesOf(tx); ok {
			t.Errorf("%s: timeline accepted", name)
		}
	}
}

func TestTxidSampleKeepsTheLast(t *testing.T) {
	var none *txidSample // --phases 0
	none.add("x")
	if none.txids() != nil || newTxidSample(0) != nil {
		t.Fatal("a disabled sample kept something")
	}
	s := newTxidSample(3)
	for _, id := range []string{"a", "b", "c", "d", "", "e"} {
		s.add(id)
	}
	got := strings.Join(s.txids(), ",")
	if len(s.txids()) != 3 || strings.Contains(got, "a") || strings.Contains(got, "b") || !strings.Contains(got, "d") || !strings.Contains(got, "e") {
		t.Fatalf("sample %q, want the last three committed (c, d, e)", got)
	}
}

func TestMedianPhasesAndReport(t *testing.T) {
	if medianOfPhases(nil) != nil || medianOfPhases([]*Phases{nil, nil}) != nil {
		t.Fatal("no timelines must give no phases")
	}
	p := medianOfPhases([]*Phases{
		{Sampled: 1, PrepareMs: 1, DecisionMs: 3, CommitMs: 1, ServerMs: 5},
		{Sampled: 1, PrepareMs: 2, DecisionMs: 5, CommitMs: 2, ServerMs: 9},
		{Sampled: 1, PrepareMs: 9, DecisionMs: 4, CommitMs: 1, ServerMs: 14},
	})
	if p.Sampled != 3 || p.PrepareMs != 2 || p.DecisionMs != 4 || p.CommitMs != 1 || p.ServerMs != 9 {
		t.Fatalf("medians %+v", p)
	}
	rounds := medianOfPhases([]*Phases{p, nil, {Sampled: 2, PrepareMs: 4, DecisionMs: 2, CommitMs: 3, ServerMs: 11}})
	if rounds.Sampled != 5 || rounds.PrepareMs != 3 || rounds.ServerMs != 10 {
		t.Fatalf("over rounds %+v", rounds)
	}
	r := &Report{Results: []Result{
		{Workload: "pg-pg", Ack: AckApplied, Concurrency: 1, Txcoord: Stats{P50Ms: 12.5, Phases: rounds}},
		{Workload: "single", Ack: AckApplied, Concurrency: 1, Txcoord: Stats{P50Ms: 1}},
	}}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	if !strings.Contains(out, "phases:") || !strings.Contains(out, "pg-pg") || strings.Count(out, "single") != 1 {
		t.Fatalf("phases table:\n%s", out)
	}
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 11 && f[0] == "pg-pg" {
			row = f
		}
	}
	if row == nil {
		t.Fatalf("no pg-pg phases row:\n%s", out)
	}
	// sampled, statements, prepare, decision, commit, server, client p50, outside
	if want := []string{"5", "0.00", "3.00", "3.00", "2.00", "10.00", "12.50", "2.50"}; strings.Join(row[3:], " ") != strings.Join(want, " ") {
		t.Fatalf("phases row %q, want %q:\n%s", row, want, out)
	}
}
