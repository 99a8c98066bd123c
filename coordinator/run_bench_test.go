package coordinator

import (
	"context"
	"testing"
)

// BenchmarkTransition is the state machine alone: every legal transition
// of a committed two-phase transaction, per op. It must not allocate.
func BenchmarkTransition(b *testing.B) {
	path := []struct {
		s State
		e Event
	}{
		{StateActive, EvExecute}, {StateActive, EvCommit}, {StatePreparing, EvAllVoted},
		{StatePreparing, EvDecisionLogged}, {StateCommitting, EvPhaseTwoDone},
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range path {
			if _, _, err := Transition(p.s, p.e); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRun is the coordinator's own work per transaction — one-shot
// Run, state machine, bookkeeping, and for two participants the decision
// through a flight of a single-node Raft (log in memory, decision store
// on disk with fsync) — against in-memory fake participants, so no
// database time hides it. With -benchmem it shows the allocations per
// transaction; "parallel" runs 8 callers per core, as a loaded leader
// does, so flights carry several decisions.
func BenchmarkRun(b *testing.B) {
	for _, bc := range []struct {
		name  string
		stmts []Statement
	}{
		{"one-phase", []Statement{write("a")}},
		{"two-phase", []Statement{write("a"), write("b")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, TestingKnobs{}, nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := h.c.Run(ctx, TxOptions{}, bc.stmts); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			h := newHarness(b, TestingKnobs{}, nil)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := h.c.Run(ctx, TxOptions{}, bc.stmts); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
