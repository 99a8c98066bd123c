package wal

import (
	"fmt"
	"path/filepath"
	"testing"
)

// benchRecord is a decision as the coordinator logs it for a transfer
// between two participants.
func benchDecision(i int) Command {
	return Command{Type: CmdDecide, Decision: &Record{
		TxID: fmt.Sprintf("%012x%08x", 0x19a2b3c4d5e+i, i), Outcome: OutcomeCommit,
		Participants: []string{"pg-a", "pg-b"}, CreatedMs: 1_760_000_000_000, DecidedMs: 1_760_000_000_007,
	}}
}

// BenchmarkApplyBatchSizes: the cost of applying decisions to the store (one
// bbolt transaction, fsynced, per batch), per decision, by batch size. The
// group-commit gain is the fall of ns/op with the batch size.
func BenchmarkApplyBatchSizes(b *testing.B) {
	for _, size := range []int{1, 8, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "d.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			idx := uint64(0)
			batch := make([]Entry, 0, size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				idx++
				batch = append(batch, Entry{Index: idx, Term: 1, Data: benchDecision(i).Encode()})
				if len(batch) == size || i == b.N-1 {
					for _, r := range s.ApplyBatch(batch) {
						if r.Err != nil {
							b.Fatal(r.Err)
						}
					}
					batch = batch[:0]
				}
			}
		})
	}
}

// BenchmarkApplyBatchNoSync: as BenchmarkApplyBatchSizes without fsync, to show
// what the store's own fsync costs (the FSM may skip it only with the
// crash test invariant 7 asks for).
func BenchmarkApplyBatchNoSync(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "d.db"), Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			idx := uint64(0)
			batch := make([]Entry, 0, size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				idx++
				batch = append(batch, Entry{Index: idx, Term: 1, Data: benchDecision(i).Encode()})
				if len(batch) == size || i == b.N-1 {
					s.ApplyBatch(batch)
					batch = batch[:0]
				}
			}
		})
	}
}

// BenchmarkEncodeDecide: building a decision's log entry (JSON).
func BenchmarkEncodeDecide(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = benchDecision(i).Encode()
	}
}

// BenchmarkGet: reading one record (GetTransaction, idempotency checks)
// from a store of 100,000 decisions.
func BenchmarkGet(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "d.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 100_000
	batch := make([]Entry, 0, 1000)
	for i := 0; i < n; i++ {
		batch = append(batch, Entry{Index: uint64(i + 1), Term: 1, Data: benchDecision(i).Encode()})
		if len(batch) == cap(batch) {
			s.ApplyBatch(batch)
			batch = batch[:0]
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := benchDecision(i % n).Decision.TxID
		if r, err := s.Get(id); err != nil || r == nil {
			b.Fatalf("get %s: %v, %v", id, r, err)
		}
	}
}

// BenchmarkDecisionAuditEntry: building and sealing a decision's audit entry
// (detail, JSON encoding, sha256), the CPU part of auditing a decision; the
// rest is one bbolt Put in the same transaction.
func BenchmarkDecisionAuditEntry(b *testing.B) {
	r := benchDecision(0).Decision
	r.Term, r.Index = 7, 123456
	prev := "9f2c1a7e5b3d4f6a8c0e1b2d3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6"
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a := decisionAudit(r)
		a.Seq, a.PrevHash = uint64(i), prev
		_, _ = a.sealed()
	}
}
