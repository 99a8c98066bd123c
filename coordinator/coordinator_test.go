package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

// fakeParticipant is an in-memory participant for unit tests of the driver
// (integration tests use the real databases). It records the phase calls and
// can be told to vote NO, fail availability, or report ambiguity.
type fakeParticipant struct {
	name string
	kind participants.Kind

	mu        sync.Mutex
	prepared  map[string]bool
	committed map[string]bool
	rolled    map[string]bool
	calls     []string
	voteNo    bool
	commitErr int // fail this many CommitPrepared calls with ErrUnavailable
	onePhase  error
	// receipts: branches give "xid-<gid>" as their receipt with a YES vote;
	// gotReceipt records the receipt each commit came with.
	receipts   bool
	gotReceipt map[string]string
}

func newFake(name string) *fakeParticipant {
	return &fakeParticipant{name: name, kind: participants.KindPostgres, prepared: map[string]bool{},
		committed: map[string]bool{}, rolled: map[string]bool{}}
}

func (f *fakeParticipant) Name() string            { return f.name }
func (f *fakeParticipant) Kind() participants.Kind { return f.kind }
func (f *fakeParticipant) Close() error            { return nil }
func (f *fakeParticipant) Begin(_ context.Context, gid string, _ participants.BranchOptions) (participants.Branch, error) {
	return &fakeBranch{f: f, gid: gid}, nil
}

func (f *fakeParticipant) log(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeParticipant) CommitPreparedReceipt(ctx context.Context, gid, receipt string) error {
	f.mu.Lock()
	if f.gotReceipt == nil {
		f.gotReceipt = map[string]string{}
	}
	f.gotReceipt[gid] = receipt
	f.mu.Unlock()
	return f.CommitPrepared(ctx, gid)
}

func (f *fakeParticipant) CommitPrepared(_ context.Context, gid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "commit "+gid)
	if f.commitErr > 0 {
		f.commitErr--
		return fmt.Errorf("down: %w", participants.ErrUnavailable)
	}
	if f.committed[gid] {
		return nil
	}
	if !f.prepared[gid] {
		return participants.ErrNotPrepared
	}
	delete(f.prepared, gid)
	f.committed[gid] = true
	return nil
}

func (f *fakeParticipant) RollbackPrepared(_ context.Context, gid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "rollback "+gid)
	delete(f.prepared, gid)
	f.rolled[gid] = true
	return nil
}

func (f *fakeParticipant) Committed(_ context.Context, gid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed[gid], nil
}

func (f *fakeParticipant) InDoubt(_ context.Context, prefix string) ([]participants.InDoubtBranch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []participants.InDoubtBranch
	for gid := range f.prepared {
		if strings.HasPrefix(gid, prefix) {
			out = append(out, participants.InDoubtBranch{GID: gid})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GID < out[j].GID })
	return out, nil
}

type fakeBranch struct {
	f     *fakeParticipant
	gid   string
	wrote bool
}

func (b *fakeBranch) GID() string { return b.gid }
func (b *fakeBranch) Execute(_ context.Context, op participants.Operation) (participants.Result, error) {
	if op.SQL == "fail" {
		return participants.Result{}, fmt.Errorf("syntax: %w", participants.ErrBadOperation)
	}
	b.wrote = !strings.HasPrefix(op.SQL, "SELECT")
	return participants.Result{RowsAffected: 1}, nil
}
func (b *fakeBranch) Prepare(context.Context) (participants.Vote, error) {
	b.f.log("prepare " + b.gid)
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	if b.f.voteNo {
		return participants.VoteNo, fmt.Errorf("check failed: %w: %w", participants.ErrVoteNo, participants.ErrConstraint)
	}
	if !b.wrote {
		return participants.VoteReadOnly, nil
	}
	b.f.prepared[b.gid] = true
	return participants.VoteYes, nil
}

func (b *fakeBranch) Receipt() string {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	if !b.f.receipts || !b.f.prepared[b.gid] {
		return ""
	}
	return "xid-" + b.gid
}
func (b *fakeBranch) CommitOnePhase(context.Context) error {
	b.f.log("onephase " + b.gid)
	if b.f.onePhase != nil {
		return b.f.onePhase
	}
	b.f.mu.Lock()
	b.f.committed[b.gid] = true
	b.f.mu.Unlock()
	return nil
}
func (b *fakeBranch) Rollback(context.Context) error { return nil }

type harness struct {
	c     *Coordinator
	r     *raft.Raft
	store *wal.Store
	parts []*fakeParticipant
}

// settle waits until every entry logged so far is in the decision store:
// Commit may return before the leader's store has committed its decision
// (entryApplied), and a Raft barrier completes only after the entries
// before it are applied and stored.
func (h *harness) settle(t testing.TB) {
	t.Helper()
	if err := h.r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

func newHarness(t testing.TB, knobs TestingKnobs, mutate func(*Config)) *harness {
	t.Helper()
	store, err := wal.Open(filepath.Join(t.TempDir(), "d.db"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fsm := NewFSM(store)
	rc := raft.DefaultConfig()
	rc.LocalID = "n1"
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.Logger = hclog.NewNullLogger()
	logs := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	addr, trans := raft.NewInmemTransport("n1")
	if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, fsm, logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newFake("a"), newFake("b")
	cfg := DefaultConfig()
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	cfg.RecoveryInterval = time.Hour
	cfg.Knobs = knobs
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg, r, fsm, []participants.Participant{a, b}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	h := &harness{c: c, r: r, store: store, parts: []*fakeParticipant{a, b}}
	t.Cleanup(func() {
		c.Stop()
		r.Shutdown().Error()
		store.Close()
	})
	return h
}

func write(p string) Statement {
	return Statement{Participant: p, Op: participants.Operation{Kind: participants.OpSQL, SQL: "UPDATE t SET v = 1"}}
}

func (h *harness) begin(t *testing.T, stmts ...Statement) string {
	t.Helper()
	ctx := context.Background()
	txid, _, err := h.c.Begin(ctx, TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stmts {
		if _, err := h.c.Execute(ctx, txid, st); err != nil {
			t.Fatal(err)
		}
	}
	return txid
}

func TestTwoPhaseCommitLogsDecisionBeforeCommit(t *testing.T) {
	var decidedBeforeCommit bool
	var h *harness
	h = newHarness(t, TestingKnobs{Failpoint: func(name string) {
		if name == FailAfterDecision {
			a := h.parts[0]
			a.mu.Lock()
			decidedBeforeCommit = len(a.committed) == 0
			a.mu.Unlock()
		}
	}}, nil)
	txid := h.begin(t, write("a"), write("b"))
	active, err := h.c.GetTransaction(context.Background(), txid)
	if err != nil {
		t.Fatal(err)
	}
	created := active.CreatedAt
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	if !decidedBeforeCommit {
		t.Fatal("a COMMIT reached a participant before the decision was applied")
	}
	for _, p := range h.parts {
		if !p.committed[h.c.GID(txid, p.name)] {
			t.Fatalf("%s not committed: %v", p.name, p.calls)
		}
	}
	h.settle(t)
	rec, _ := h.store.Get(txid)
	if rec == nil || rec.Outcome != wal.OutcomeCommit {
		t.Fatalf("no commit record: %+v", rec)
	}
	// Phase two finished here: COMMITTED, whether or not the batched done
	// mark has reached the record yet; the start time is memory's exact one,
	// not the record's milliseconds.
	if info, err := h.c.GetTransaction(context.Background(), txid); err != nil || info.State != StateCommitted || !info.CreatedAt.Equal(created) {
		t.Fatalf("GetTransaction right after Commit (record done=%v, begun %s): %+v %v", rec.Done, created.Format(time.RFC3339Nano), info, err)
	}
	// The done mark is batched; it arrives shortly.
	deadline := time.Now().Add(2 * time.Second)
	for {
		rec, _ = h.store.Get(txid)
		if rec.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("decision never marked done")
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, err := h.c.GetTransaction(context.Background(), txid)
	if err != nil || info.Outcome != OutcomeCommitted {
		t.Fatalf("GetTransaction: %+v %v", info, err)
	}
}

func TestNoVoteAbortsAndRollsBackPrepared(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	h.parts[1].voteNo = true
	txid := h.begin(t, write("a"), write("b"))
	err := h.c.Commit(context.Background(), txid)
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Participant != "b" || !errors.Is(err, participants.ErrConstraint) {
		t.Fatalf("want AbortError naming b with ErrConstraint, got %v", err)
	}
	a := h.parts[0]
	if a.prepared[h.c.GID(txid, "a")] || !a.rolled[h.c.GID(txid, "a")] {
		t.Fatalf("a's prepared branch not rolled back: %v", a.calls)
	}
	if rec, _ := h.store.Get(txid); rec != nil {
		t.Fatalf("abort needs no log record (presumed abort), got %+v", rec)
	}
	info, err := h.c.GetTransaction(context.Background(), txid)
	if err != nil || info.Outcome != OutcomeAborted {
		t.Fatalf("GetTransaction: %+v %v", info, err)
	}
}

func TestOnePhaseAndReadOnly(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	txid := h.begin(t, write("a"))
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	if got := h.parts[0].calls; len(got) != 1 || !strings.HasPrefix(got[0], "onephase") {
		t.Fatalf("single participant must commit in one phase: %v", got)
	}
	if rec, _ := h.store.Get(txid); rec != nil {
		t.Fatal("one-phase commit logged a decision")
	}

	// Read-only on b: b leaves after its vote; a is committed.
	read := Statement{Participant: "b", Op: participants.Operation{Kind: participants.OpSQL, SQL: "SELECT 1"}}
	txid = h.begin(t, write("a"), read)
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	h.settle(t)
	rec, _ := h.store.Get(txid)
	if rec == nil || len(rec.Participants) != 1 || rec.Participants[0] != "a" {
		t.Fatalf("decision must list only YES voters: %+v", rec)
	}

	// One-phase ambiguity is an unknown outcome, never a failure.
	h.parts[0].onePhase = fmt.Errorf("conn lost: %w", participants.ErrAmbiguous)
	txid = h.begin(t, write("a"))
	if err := h.c.Commit(context.Background(), txid); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("want ErrOutcomeUnknown, got %v", err)
	}
}

func TestCommitRetriesUntilAcknowledged(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	h.parts[1].commitErr = 3
	txid := h.begin(t, write("a"), write("b"))
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	b := h.parts[1]
	n := 0
	for _, c := range b.calls {
		if strings.HasPrefix(c, "commit") {
			n++
		}
	}
	if n != 4 || !b.committed[h.c.GID(txid, "b")] {
		t.Fatalf("want 3 failed + 1 acknowledged commit, got %d calls: %v", n, b.calls)
	}
}

func TestTimeoutRollsBack(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	ctx := context.Background()
	txid, _, err := h.c.Begin(ctx, TxOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Execute(ctx, txid, write("a")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for h.c.inFlight(txid) {
		if time.Now().After(deadline) {
			t.Fatal("timed-out transaction still active")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.c.Commit(ctx, txid); !errors.Is(err, ErrAborted) {
		t.Fatalf("commit after timeout: want ErrAborted, got %v", err)
	}
	if _, err := h.c.Execute(ctx, txid, write("a")); !errors.Is(err, ErrNotActive) {
		t.Fatalf("execute after timeout: want ErrNotActive, got %v", err)
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, func(c *Config) { c.MaxStatements = 2 })
	ctx := context.Background()
	txid := h.begin(t)
	cases := []struct {
		st    Statement
		field string
	}{
		{Statement{Participant: "zz", Op: participants.Operation{Kind: participants.OpSQL, SQL: "x"}}, "statement.participant"},
		{Statement{Participant: "a", Op: participants.Operation{Kind: participants.OpSQL, SQL: " "}}, "statement.sql.sql"},
		{Statement{Participant: "a", Op: participants.Operation{Kind: participants.OpSQL, SQL: strings.Repeat("x", 2<<20)}}, "statement"},
		{Statement{Participant: "a", Op: participants.Operation{Kind: participants.OpUpsert}}, "statement.sql"},
	}
	for _, tc := range cases {
		_, err := h.c.Execute(ctx, txid, tc.st)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("want FieldError on %s, got %v", tc.field, err)
		}
	}
	if _, err := h.c.Execute(ctx, "zzz", write("a")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("malformed txid: %v", err)
	}
	if _, err := h.c.Execute(ctx, "0000000000000000beef", write("a")); !errors.Is(err, ErrNotActive) {
		t.Errorf("unknown txid: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := h.c.Execute(ctx, txid, write("a")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.c.Execute(ctx, txid, write("a")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("too many statements: %v", err)
	}
	// A statement the participant rejects aborts the transaction.
	txid2 := h.begin(t, write("b"))
	_, err := h.c.Execute(ctx, txid2, Statement{Participant: "a", Op: participants.Operation{Kind: participants.OpSQL, SQL: "fail"}})
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Participant != "a" || !errors.Is(err, participants.ErrBadOperation) {
		t.Errorf("failing statement: %v", err)
	}
}

// Recovery: a commit decision without done mark is re-driven; a prepared
// branch without decision is rolled back (presumed abort); branches of
// another cluster are left alone.
func TestRecovery(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	a, b := h.parts[0], h.parts[1]
	committedTx, abortedTx := h.c.newTxID(), h.c.newTxID()
	for _, p := range h.parts {
		p.prepared[h.c.GID(committedTx, p.name)] = true
		p.prepared[h.c.GID(abortedTx, p.name)] = true
	}
	foreign := "txc:othercluster:" + h.c.newTxID() + ":a"
	a.prepared[foreign] = true
	f := h.r.Apply(wal.Command{Type: wal.CmdDecide, Decision: &wal.Record{TxID: committedTx, Outcome: wal.OutcomeCommit,
		Participants: []string{"a", "b"}}}.Encode(), time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	rep, err := h.c.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Committed != 2 || rep.RolledBack != 2 || rep.Left != 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range []*fakeParticipant{a, b} {
		if !p.committed[h.c.GID(committedTx, p.name)] || !p.rolled[h.c.GID(abortedTx, p.name)] {
			t.Fatalf("%s: %v", p.name, p.calls)
		}
	}
	if !a.prepared[foreign] {
		t.Fatal("recovery touched another cluster's branch (invariant 6)")
	}
	rec, _ := h.store.Get(committedTx)
	if !rec.Done {
		t.Fatal("recovered decision not marked done")
	}
	info, err := h.c.GetTransaction(context.Background(), abortedTx)
	if err != nil || info.Outcome != OutcomeAborted || !info.Presumed {
		t.Fatalf("presumed abort status: %+v %v", info, err)
	}
}

// A branch in flight on this leader (prepared, decision pending) is not
// rolled back by the periodic scan.
func TestRecoverySkipsInFlight(t *testing.T) {
	var h *harness
	var rep RecoveryReport
	h = newHarness(t, TestingKnobs{Failpoint: func(name string) {
		if name == FailBeforeDecision {
			rep, _ = h.c.Recover(context.Background())
		}
	}}, nil)
	txid := h.begin(t, write("a"), write("b"))
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	if rep.RolledBack != 0 {
		t.Fatalf("scan rolled back an in-flight transaction: %+v", rep)
	}
}

// Done decisions older than the retention are forgotten, and a Raft
// snapshot lets the log be compacted: the store and the log stay bounded.
func TestRetentionAndSnapshotCompaction(t *testing.T) {
	var skew atomic.Int64 // added to the clock: the test moves time forward
	h := newHarness(t, TestingKnobs{}, func(c *Config) { c.Retention = time.Minute })
	h.c.mu.Lock()
	h.c.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h.c.mu.Unlock()
	for i := 0; i < 20; i++ {
		txid := h.begin(t, write("a"), write("b"))
		if err := h.c.Commit(context.Background(), txid); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		pending, _ := h.store.List(wal.Filter{NotDone: true})
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d decisions never marked done", len(pending))
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.c.forgetOld()
	if all, _ := h.store.List(wal.Filter{}); len(all) != 20 {
		t.Fatalf("forgot records younger than the retention: %d left", len(all))
	}
	skew.Store(int64(2 * time.Minute))
	h.c.forgetOld()
	if all, _ := h.store.List(wal.Filter{}); len(all) != 0 {
		t.Fatalf("%d records older than the retention kept", len(all))
	}
	if err := h.r.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if got := h.r.Stats()["last_snapshot_index"]; got == "0" || got == "" {
		t.Fatalf("no snapshot taken: %s", got)
	}
}

// A Run retried with the same idempotency key is applied once: the retry
// returns the first txid with ErrReplayed and executes nothing. A keyed Run
// with one participant still logs its decision (no one-phase shortcut), so
// the retry can find it after a crash.
func TestRunIdempotencyKey(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	ctx := context.Background()
	opts := TxOptions{IdempotencyKey: "order-42"}
	txid, _, err := h.c.Run(ctx, opts, []Statement{write("a")})
	if err != nil {
		t.Fatal(err)
	}
	// An immediate retry replays, although Run may return before the
	// decision store has committed the decision: the key stays reserved
	// until it has.
	calls := len(h.parts[0].calls)
	again, res, err := h.c.Run(ctx, opts, []Statement{write("a")})
	if !errors.Is(err, ErrReplayed) || again != txid || res != nil {
		t.Fatalf("retry: %s %v %v", again, res, err)
	}
	if len(h.parts[0].calls) != calls {
		t.Fatalf("the retry reached the participant: %v", h.parts[0].calls[calls:])
	}
	rec, _ := h.store.ByIdempotencyKey("order-42")
	if rec == nil || rec.TxID != txid || rec.Outcome != wal.OutcomeCommit {
		t.Fatalf("keyed one-participant run must log its decision: %+v", rec)
	}
	// An aborted keyed run does not block a retry from running.
	h.parts[1].voteNo = true
	if _, _, err := h.c.Run(ctx, TxOptions{IdempotencyKey: "k2"}, []Statement{write("a"), write("b")}); !errors.Is(err, ErrAborted) {
		t.Fatalf("want abort, got %v", err)
	}
	h.parts[1].voteNo = false
	if _, _, err := h.c.Run(ctx, TxOptions{IdempotencyKey: "k2"}, []Statement{write("a"), write("b")}); err != nil {
		t.Fatalf("retry after abort must run: %v", err)
	}
	if _, _, err := h.c.Run(ctx, TxOptions{IdempotencyKey: strings.Repeat("k", 129)}, []Statement{write("a")}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized key: %v", err)
	}
}

// A decision store lost (or older than the newest snapshot) is rebuilt from
// the snapshot before Raft starts; one ahead of the log is refused.
func TestReconcileStoreWithSnapshot(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := wal.Open(filepath.Join(dir, "src.db"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		src.ApplyBatch([]wal.Entry{{Index: i, Term: 1, Data: wal.Command{Type: wal.CmdDecide,
			Decision: &wal.Record{TxID: fmt.Sprintf("tx%d", i), Outcome: wal.OutcomeCommit}}.Encode()}})
	}
	snaps := raft.NewInmemSnapshotStore()
	_, trans := raft.NewInmemTransport("n1")
	sink, err := snaps.Create(raft.SnapshotVersionMax, 5, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteTo(sink); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	logs := raft.NewInmemStore()

	empty, _ := wal.Open(filepath.Join(dir, "lost.db"), wal.Options{})
	if err := reconcileStore(empty, logs, snaps, logger); err != nil {
		t.Fatal(err)
	}
	if all, _ := empty.List(wal.Filter{}); len(all) != 5 || empty.AppliedIndex() != 5 {
		t.Fatalf("store not rebuilt from the snapshot: %d records, applied %d", len(all), empty.AppliedIndex())
	}
	ahead, _ := wal.Open(filepath.Join(dir, "ahead.db"), wal.Options{})
	ahead.ApplyBatch([]wal.Entry{{Index: 99, Data: wal.Command{Type: wal.CmdDone}.Encode()}})
	if err := reconcileStore(ahead, logs, snaps, logger); err == nil || !strings.Contains(err.Error(), "ahead of the Raft log") {
		t.Fatalf("a store ahead of the log must be refused: %v", err)
	}
}

// A one-phase commit logs no decision: after the node forgot it (another
// leader, a restart), GetTransaction asks the participants and answers
// COMMITTED, never presumed abort.
func TestOnePhaseOutcomeFromParticipant(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	ctx := context.Background()
	txid := h.begin(t, write("a"))
	if err := h.c.Commit(ctx, txid); err != nil {
		t.Fatal(err)
	}
	h.c.mu.Lock()
	delete(h.c.recent, txid) // as on a node that did not run it
	h.c.mu.Unlock()
	info, err := h.c.GetTransaction(ctx, txid)
	if err != nil || info.Outcome != OutcomeCommitted || info.Presumed {
		t.Fatalf("one-phase commit reported as %+v (%v)", info, err)
	}
	aborted := h.c.newTxID()
	info, err = h.c.GetTransaction(ctx, aborted)
	if err != nil || info.Outcome != OutcomeAborted || !info.Presumed {
		t.Fatalf("unknown txid: %+v (%v)", info, err)
	}
}

// Receipts: each branch's receipt from its YES vote is logged with the
// decision and handed back at COMMIT PREPARED — by the transaction's own
// phase two, and by recovery from the log after a failover.
func TestReceiptsLoggedAndHandedBack(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	a, b := h.parts[0], h.parts[1]
	a.receipts = true // b gives none
	txid := h.begin(t, write("a"), write("b"))
	if err := h.c.Commit(context.Background(), txid); err != nil {
		t.Fatal(err)
	}
	gidA, gidB := h.c.GID(txid, "a"), h.c.GID(txid, "b")
	h.settle(t)
	rec, _ := h.store.Get(txid)
	if rec == nil || len(rec.Receipts) != 1 || rec.Receipts["a"] != "xid-"+gidA {
		t.Fatalf("decision receipts = %+v; want only a's", rec)
	}
	if a.gotReceipt[gidA] != "xid-"+gidA || b.gotReceipt[gidB] != "" {
		t.Fatalf("receipts handed back: a %q, b %q", a.gotReceipt[gidA], b.gotReceipt[gidB])
	}

	// Recovery: a logged decision whose branches are still prepared.
	recovered := h.c.newTxID()
	gidA = h.c.GID(recovered, "a")
	a.prepared[gidA], b.prepared[h.c.GID(recovered, "b")] = true, true
	f := h.r.Apply(wal.Command{Type: wal.CmdDecide, Decision: &wal.Record{TxID: recovered, Outcome: wal.OutcomeCommit,
		Participants: []string{"a", "b"}, Receipts: map[string]string{"a": "xid-logged"}}}.Encode(), time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if rep, err := h.c.Recover(context.Background()); err != nil || rep.Committed != 2 {
		t.Fatalf("Recover = %+v, %v", rep, err)
	}
	if got := a.gotReceipt[gidA]; got != "xid-logged" {
		t.Fatalf("recovery handed back receipt %q; want the logged one", got)
	}
}

// MarkDone closes a decision recovery cannot carry out, only once none of
// its branches is prepared, with a MARK_DONE audit entry; a done decision
// is returned as it is.
func TestMarkDone(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	a := h.parts[0]
	ctx := context.Background()
	txid := h.c.newTxID()
	a.prepared[h.c.GID(txid, "a")] = true // b's branch is gone (ErrNotPrepared)
	f := h.r.Apply(wal.Command{Type: wal.CmdDecide, Decision: &wal.Record{TxID: txid, Outcome: wal.OutcomeCommit,
		Participants: []string{"a", "b"}}}.Encode(), time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.c.MarkDone(ctx, txid, " ", "ops"); err == nil {
		t.Fatal("MarkDone without a reason was accepted")
	}
	if _, _, err := h.c.MarkDone(ctx, h.c.newTxID(), "r", "ops"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkDone of a txid with no decision = %v; want ErrNotFound", err)
	}
	if _, _, err := h.c.MarkDone(ctx, txid, "repaired by hand", "ops"); !errors.Is(err, ErrDecisionConflict) || !strings.Contains(err.Error(), "[a]") {
		t.Fatalf("MarkDone with a's branch prepared = %v; want a refusal naming a", err)
	}
	if rec, _ := h.store.Get(txid); rec.Done {
		t.Fatal("a refused MarkDone marked the decision done")
	}
	delete(a.prepared, h.c.GID(txid, "a")) // an operator finished it by hand
	info, entry, err := h.c.MarkDone(ctx, txid, "repaired by hand, INC-1", "ops@host")
	if err != nil || entry == nil || entry.Action != ActionMarkDone || entry.Actor != "ops@host" || entry.Reason != "repaired by hand, INC-1" {
		t.Fatalf("MarkDone = %+v, %+v, %v", info, entry, err)
	}
	if rec, _ := h.store.Get(txid); !rec.Done || info.State != StateCommitted {
		t.Fatalf("after MarkDone: record %+v, state %s", rec, info.State)
	}
	if _, again, err := h.c.MarkDone(ctx, txid, "again", "ops"); err != nil || again != nil {
		t.Fatalf("MarkDone of a done decision = %+v, %v; want no new audit entry", again, err)
	}
	if entries, _, _ := h.store.QueryAudit(wal.AuditQuery{Action: ActionMarkDone, TxID: txid}); len(entries) != 1 {
		t.Fatalf("MARK_DONE entries = %+v; want exactly one", entries)
	}
}
