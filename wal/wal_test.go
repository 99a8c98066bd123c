package wal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func decide(idx uint64, id string, o Outcome) Entry {
	return Entry{Index: idx, Term: 1, Data: Command{Type: CmdDecide, Decision: &Record{TxID: id, Outcome: o, Participants: []string{"a", "b"}}}.Encode()}
}

func TestDecideFirstWinsAndIsIdempotentByIndex(t *testing.T) {
	s := open(t)
	res := s.ApplyBatch([]Entry{decide(1, "tx1", OutcomeCommit), decide(2, "tx1", OutcomeAbort)})
	if res[0].Record == nil || res[0].Record.Outcome != OutcomeCommit || res[0].Conflict {
		t.Fatalf("first decision: %+v", res[0])
	}
	if !res[1].Conflict || res[1].Record.Outcome != OutcomeCommit {
		t.Fatalf("second, different decision must lose: %+v", res[1])
	}
	if s.AppliedIndex() != 2 {
		t.Fatalf("applied index %d", s.AppliedIndex())
	}
	// Replay of the same indexes is skipped entirely.
	res = s.ApplyBatch([]Entry{decide(1, "tx2", OutcomeCommit), decide(2, "tx2", OutcomeCommit)})
	if res[0].Record != nil || res[1].Record != nil {
		t.Fatalf("replayed entries were applied: %+v", res)
	}
	if r, _ := s.Get("tx2"); r != nil {
		t.Fatal("replay created a record")
	}
	r, _ := s.Get("tx1")
	if r.Term != 1 || r.Index != 1 {
		t.Fatalf("record not stamped with its term/index: %+v", r)
	}
}

// ApplyBatchNotify hands over the batch's results once every entry is
// applied and before the write transaction commits: a reader then still
// sees the store without them, and with them once the call returns.
func TestApplyBatchNotifyBeforeCommit(t *testing.T) {
	s := open(t)
	var notified []ApplyResult
	var seenDuring *Record
	res := s.ApplyBatchNotify([]Entry{decide(1, "tx1", OutcomeCommit), decide(2, "tx1", OutcomeAbort)}, func(results []ApplyResult) {
		notified = append(notified, results...)
		read := make(chan *Record, 1)
		go func() { // another goroutine: a read transaction beside the open write
			r, _ := s.Get("tx1")
			read <- r
		}()
		seenDuring = <-read
	})
	if len(notified) != 2 || notified[0].Record == nil || notified[0].Record.Outcome != OutcomeCommit || !notified[1].Conflict {
		t.Fatalf("notified results: %+v", notified)
	}
	if res[0].Record != notified[0].Record || res[1].Conflict != notified[1].Conflict {
		t.Fatalf("returned results %+v differ from the notified ones %+v", res, notified)
	}
	if seenDuring != nil {
		t.Fatalf("the decision was readable before the batch committed: %+v", seenDuring)
	}
	if r, _ := s.Get("tx1"); r == nil || r.Outcome != OutcomeCommit {
		t.Fatalf("after the call: %+v", r)
	}
	// A replayed batch is skipped and notifies empty results.
	s.ApplyBatchNotify([]Entry{decide(2, "tx2", OutcomeCommit)}, func(results []ApplyResult) {
		if len(results) != 1 || results[0].Record != nil {
			t.Fatalf("replayed entry notified as applied: %+v", results)
		}
	})
}

func TestDoneAndForget(t *testing.T) {
	s := open(t)
	s.ApplyBatch([]Entry{decide(1, "tx1", OutcomeCommit), decide(2, "tx10", OutcomeCommit)})
	// Forget of a not-done record does nothing.
	s.ApplyBatch([]Entry{{Index: 3, Data: Command{Type: CmdForget, TxIDs: []string{"tx1"}}.Encode()}})
	if r, _ := s.Get("tx1"); r == nil {
		t.Fatal("forgot a record that is not done")
	}
	s.ApplyBatch([]Entry{{Index: 4, Data: Command{Type: CmdDone, TxIDs: []string{"tx1"}, AtMs: 1000}.Encode()}})
	notDone, _ := s.List(Filter{NotDone: true})
	if len(notDone) != 1 || notDone[0].TxID != "tx10" {
		t.Fatalf("not-done list: %+v", notDone)
	}
	old, _ := s.List(Filter{DoneBeforeMs: 2000})
	if len(old) != 1 || old[0].TxID != "tx1" {
		t.Fatalf("done-before list: %+v", old)
	}
	s.ApplyBatch([]Entry{{Index: 5, Data: Command{Type: CmdForget, TxIDs: []string{"tx1"}}.Encode()}})
	if r, _ := s.Get("tx1"); r != nil {
		t.Fatal("done record not forgotten")
	}
	if r, _ := s.Get("tx10"); r == nil {
		t.Fatal("forgetting tx1 touched tx10")
	}
}

func TestUnknownCommandPanics(t *testing.T) {
	s := open(t)
	defer func() {
		if recover() == nil {
			t.Fatal("unknown command type must panic (replicas would diverge)")
		}
	}()
	s.ApplyBatch([]Entry{{Index: 1, Data: []byte(`{"t":99}`)}})
}

func TestSnapshotRestoreAndEqual(t *testing.T) {
	a := open(t)
	a.ApplyBatch([]Entry{decide(1, "tx1", OutcomeCommit), decide(2, "tx2", OutcomeAbort)})
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	b := open(t)
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	eq, err := Equal(a, b)
	if err != nil || !eq {
		t.Fatalf("restored store differs: %v", err)
	}
	if b.AppliedIndex() != 2 {
		t.Fatalf("applied index not restored: %d", b.AppliedIndex())
	}
	b.ApplyBatch([]Entry{decide(3, "tx3", OutcomeCommit)})
	if eq, _ := Equal(a, b); eq {
		t.Fatal("Equal missed a difference")
	}
}

func TestCorruptFileRefusesToOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.db")
	if err := os.WriteFile(p, bytes.Repeat([]byte("garbage!"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
	var buf bytes.Buffer
	buf.WriteString("not a snapshot")
	s := open(t)
	if err := s.Restore(&buf); err == nil {
		t.Fatal("restore accepted garbage")
	}
}

func BenchmarkApplyBatch(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "d.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 64
	idx := uint64(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		entries := make([]Entry, batch)
		for j := range entries {
			idx++
			entries[j] = decide(idx, string(rune('a'+j%26))+string(rune(i)), OutcomeCommit)
		}
		s.ApplyBatch(entries)
	}
}

func TestMembersAndDigest(t *testing.T) {
	a, b := open(t), open(t)
	member := func(idx uint64, id, addr string) Entry {
		return Entry{Index: idx, Data: Command{Type: CmdMember, NodeID: id, Addr: addr}.Encode()}
	}
	for _, s := range []*Store{a, b} {
		s.ApplyBatch([]Entry{member(1, "n1", "127.0.0.1:7401"), member(2, "n2", "127.0.0.1:7402"), decide(3, "tx1", OutcomeCommit)})
	}
	m, err := a.Members()
	if err != nil || len(m) != 2 || m["n2"] != "127.0.0.1:7402" {
		t.Fatalf("members: %v %v", m, err)
	}
	ia, da, na, _ := a.Digest()
	ib, db, _, _ := b.Digest()
	if ia != 3 || ia != ib || da != db || na != 1 {
		t.Fatalf("equal replicas differ: %d %s / %d %s", ia, da, ib, db)
	}
	b.ApplyBatch([]Entry{member(4, "n2", "")})
	if m, _ := b.Members(); len(m) != 1 {
		t.Fatalf("member not removed: %v", m)
	}
	if _, db2, _, _ := b.Digest(); db2 == da {
		t.Fatal("digest did not change with the content")
	}
}

// Under steady load with forgetting, the store stays bounded: what the
// leader forgets (done before the retention cutoff) leaves the file's
// records and both indexes.
func TestForgettingBoundsTheStore(t *testing.T) {
	s := open(t)
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	const perRound, rounds = 200, 20
	for round := 0; round < rounds; round++ {
		var entries []Entry
		var ids []string
		for i := 0; i < perRound; i++ {
			id := fmt.Sprintf("r%03dtx%05d", round, i)
			ids = append(ids, id)
			entries = append(entries, decide(next(), id, OutcomeCommit))
		}
		entries = append(entries, Entry{Index: next(), Data: Command{Type: CmdDone, TxIDs: ids, AtMs: int64(round * 1000)}.Encode()})
		s.ApplyBatch(entries)
		// Retention of two rounds: forget what was done before round-2.
		old, err := s.List(Filter{DoneBeforeMs: int64((round - 1) * 1000), Limit: 10 * perRound})
		if err != nil {
			t.Fatal(err)
		}
		var forget []string
		for _, r := range old {
			forget = append(forget, r.TxID)
		}
		s.ApplyBatch([]Entry{{Index: next(), Data: Command{Type: CmdForget, TxIDs: forget}.Encode()}})
		all, _ := s.List(Filter{})
		if len(all) > 2*perRound {
			t.Fatalf("round %d: %d records kept; retention should bound it to %d", round, len(all), 2*perRound)
		}
	}
	pending, _ := s.List(Filter{NotDone: true})
	if len(pending) != 0 {
		t.Fatalf("%d records still pending", len(pending))
	}
	s.ApplyBatch([]Entry{decide(next(), "late", OutcomeCommit)})
	pending, _ = s.List(Filter{NotDone: true})
	if len(pending) != 1 || pending[0].TxID != "late" {
		t.Fatalf("pending index: %+v", pending)
	}
}

func TestResolveAndAuditChain(t *testing.T) {
	s := open(t)
	s.ApplyBatch([]Entry{decide(1, "tx1", OutcomeCommit)})
	resolve := func(idx uint64, id string, o Outcome, force bool) ApplyResult {
		return s.ApplyBatch([]Entry{{Index: idx, Data: Command{Type: CmdResolve, Force: force,
			Decision: &Record{TxID: id, Outcome: o, Participants: []string{"a"}, Reason: "restored from backup"},
			Audit:    &AuditEntry{AtMs: int64(idx), Actor: "ops@host", Action: "RESOLVE", TxID: id, Reason: "restored from backup"}}.Encode()}})[0]
	}
	// Contradicting a logged decision without force is refused, and not audited.
	if r := resolve(2, "tx1", OutcomeAbort, false); !r.Conflict || r.Record.Outcome != OutcomeCommit {
		t.Fatalf("unforced contradiction: %+v", r)
	}
	if a, _, _, _, _ := s.Audit(0); len(a) != 1 || a[0].Action != ActionDecision {
		t.Fatalf("refused resolve was audited (only tx1's decision must be): %+v", a)
	}
	if r := resolve(3, "tx2", OutcomeAbort, false); r.Conflict || !r.Record.Heuristic {
		t.Fatalf("resolve of an undecided txid: %+v", r)
	}
	if r := resolve(4, "tx1", OutcomeAbort, true); r.Record.Outcome != OutcomeAbort || !r.Record.Heuristic || r.Record.Done {
		t.Fatalf("forced resolve: %+v", r)
	}
	s.ApplyBatch([]Entry{{Index: 5, Data: Command{Type: CmdAudit, Audit: &AuditEntry{AtMs: 5, Action: "MEMBER_ADD", Detail: "n4"}}.Encode()}})
	entries, ok, _, _, err := s.Audit(0)
	if err != nil || !ok || len(entries) != 4 || entries[3].PrevHash != entries[2].Hash || entries[0].Seq != 1 {
		t.Fatalf("audit chain: ok=%v %+v %v", ok, entries, err)
	}
	// Edit a stored entry behind the store's back: verification names it.
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		k, v := b.Cursor().First()
		k, v = b.Cursor().Seek(k)
		var a AuditEntry
		json.Unmarshal(v, &a)
		a.Reason = "nothing to see here"
		nv, _ := json.Marshal(a)
		return b.Put(k, nv)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, ok, at, problem, _ := s.Audit(0)
	if ok || at != 1 || problem == "" { // the first entry: tx1's decision
		t.Fatalf("tampering not detected: ok=%v at=%d %q", ok, at, problem)
	}
}

// A store is stamped with its cluster at first use and refuses another
// cluster's id; a snapshot of another cluster is refused for restore and an
// unstamped one is stamped.
func TestClusterStamp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.db")
	s, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s.ClusterID(); err != nil || id != "" {
		t.Fatalf("new store: cluster %q %v, want none", id, err)
	}
	if err := s.StampCluster("alpha"); err != nil {
		t.Fatal(err)
	}
	if err := s.StampCluster("alpha"); err != nil {
		t.Fatalf("same id again: %v", err)
	}
	if err := s.StampCluster("beta"); !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), `"alpha"`) {
		t.Fatalf("another id: want ErrOtherCluster naming alpha, got %v", err)
	}
	snap := filepath.Join(dir, "snap.db")
	f, err := os.Create(snap)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.Close()
	if _, err := PrepareRestore(snap, "beta"); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("restore of alpha's snapshot into beta: want ErrOtherCluster, got %v", err)
	}
	if _, err := PrepareRestore(snap, "alpha"); err != nil {
		t.Fatalf("restore of alpha's snapshot into alpha: %v", err)
	}
	old := filepath.Join(dir, "old.db")
	o, err := Open(old, Options{})
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
	if _, err := PrepareRestore(old, "beta"); err != nil {
		t.Fatalf("an unstamped snapshot: %v", err)
	}
	o, err = Open(old, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if id, _ := o.ClusterID(); id != "beta" {
		t.Fatalf("an unstamped snapshot is stamped by PrepareRestore: got %q", id)
	}
}

// Receipts are stored with the decision; a forced resolution keeps the
// logged ones and adds those of branches found since, without replacing any.
func TestReceiptsKeptAndMerged(t *testing.T) {
	s := open(t)
	s.ApplyBatch([]Entry{{Index: 1, Term: 1, Data: Command{Type: CmdDecide, Decision: &Record{TxID: "tx1", Outcome: OutcomeCommit,
		Participants: []string{"a"}, Receipts: map[string]string{"a": "101"}}}.Encode()}})
	if r, _ := s.Get("tx1"); r == nil || r.Receipts["a"] != "101" {
		t.Fatalf("receipt not stored: %+v", r)
	}
	res := s.ApplyBatch([]Entry{{Index: 2, Term: 1, Data: Command{Type: CmdResolve, Force: true,
		Decision: &Record{TxID: "tx1", Outcome: OutcomeCommit, Participants: []string{"a", "b"}, Receipts: map[string]string{"a": "999", "b": "202"}},
		Audit:    &AuditEntry{AtMs: 2, Actor: "ops", Action: "RESOLVE", TxID: "tx1"}}.Encode()}})[0]
	if res.Err != nil || res.Record.Receipts["a"] != "101" || res.Record.Receipts["b"] != "202" {
		t.Fatalf("resolve receipts = %+v, %v; want a's logged receipt kept and b's added", res.Record, res.Err)
	}
}

// A CmdDecideMany entry applies its decisions in order, as CmdDecide
// entries would be: first decision wins, each is audited, each result is
// in Batch; replaying the entry changes nothing.
func TestDecideMany(t *testing.T) {
	s := open(t)
	e := Entry{Index: 1, Term: 2, Data: Command{Type: CmdDecideMany, Decisions: []*Record{
		{TxID: "tx1", Outcome: OutcomeCommit, Participants: []string{"a"}},
		{TxID: "tx2", Outcome: OutcomeCommit, Participants: []string{"a", "b"}},
		{TxID: "tx1", Outcome: OutcomeAbort},
		{TxID: ""},
	}}.Encode()}
	res := s.ApplyBatch([]Entry{e})[0]
	if res.Err != nil || len(res.Batch) != 4 {
		t.Fatalf("result %+v", res)
	}
	b := res.Batch
	if b[0].Record.TxID != "tx1" || b[0].Conflict || b[1].Record.TxID != "tx2" || b[1].Record.Index != 1 || b[1].Record.Term != 2 {
		t.Fatalf("first two decisions: %+v %+v", b[0], b[1])
	}
	if !b[2].Conflict || b[2].Record.Outcome != OutcomeCommit || b[3].Err == nil {
		t.Fatalf("conflict and malformed decision: %+v %+v", b[2], b[3])
	}
	if a, _, _, _, _ := s.Audit(0); len(a) != 2 || a[0].TxID != "tx1" || a[1].TxID != "tx2" {
		t.Fatalf("audit entries: %+v", a)
	}
	if again := s.ApplyBatch([]Entry{e})[0]; again.Batch != nil {
		t.Fatalf("replayed entry was applied: %+v", again)
	}
	if empty := (Command{Type: CmdDecideMany}); s.ApplyBatch([]Entry{{Index: 2, Data: empty.Encode()}})[0].Err == nil {
		t.Fatal("an empty CmdDecideMany was accepted")
	}
}
