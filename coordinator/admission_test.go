package coordinator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

// gatedFake is a fake participant with admission slots (the admitter
// capability), counting the most slots ever held at once.
type gatedFake struct {
	*fakeParticipant
	slots   chan struct{}
	held    atomic.Int64
	maxHeld atomic.Int64
}

func newGated(name string, limit int) *gatedFake {
	return &gatedFake{fakeParticipant: newFake(name), slots: make(chan struct{}, limit)}
}

func (g *gatedFake) EnterCommit(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := g.held.Add(1)
	for {
		m := g.maxHeld.Load()
		if n <= m || g.maxHeld.CompareAndSwap(m, n) {
			break
		}
	}
	return nil
}

func (g *gatedFake) LeaveCommit() {
	g.held.Add(-1)
	<-g.slots
}

// Begin returns branches that take a little time to prepare, so that
// concurrent transactions overlap.
func (g *gatedFake) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	b, _ := g.fakeParticipant.Begin(ctx, gid, opts)
	return &slowBranch{Branch: b}, nil
}

type slowBranch struct{ participants.Branch }

func (b *slowBranch) Prepare(ctx context.Context) (participants.Vote, error) {
	time.Sleep(2 * time.Millisecond)
	return b.Branch.Prepare(ctx)
}

// wrapped hides a participant behind a layer that only exposes Unwrap, as
// the metrics layer does.
type wrapped struct{ participants.Participant }

func (w wrapped) Unwrap() participants.Participant { return w.Participant }

// queueFake is a fake participant whose branches queue (the queuer
// capability): queued operations run at Prepare or CommitOnePhase.
type queueFake struct{ *fakeParticipant }

func (q queueFake) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	b, _ := q.fakeParticipant.Begin(ctx, gid, opts)
	return &queueBranch{fakeBranch: b.(*fakeBranch)}, nil
}

type queueBranch struct {
	*fakeBranch
	queue   []participants.Operation
	results []participants.Result
}

func (b *queueBranch) Queue(op participants.Operation) error {
	if op.SQL == "refuse" {
		return errors.New("refused: " + participants.ErrUnsupported.Error())
	}
	b.queue = append(b.queue, op)
	return nil
}

func (b *queueBranch) QueuedResults() []participants.Result { return b.results }

func (b *queueBranch) send() error {
	wrote := false
	for i, op := range b.queue {
		if _, err := b.fakeBranch.Execute(context.Background(), op); err != nil {
			return err
		}
		wrote = wrote || b.fakeBranch.wrote
		b.results = append(b.results, participants.Result{RowsAffected: int64(i + 10)})
	}
	b.fakeBranch.wrote = wrote
	return nil
}

func (b *queueBranch) Prepare(ctx context.Context) (participants.Vote, error) {
	if err := b.send(); err != nil {
		return participants.VoteNo, errors.Join(participants.ErrVoteNo, err)
	}
	return b.fakeBranch.Prepare(ctx)
}

func (b *queueBranch) CommitOnePhase(ctx context.Context) error {
	if err := b.send(); err != nil {
		return err
	}
	return b.fakeBranch.CommitOnePhase(ctx)
}

// newCoordinatorWith is newHarness with the given participants.
func newCoordinatorWith(t *testing.T, mutate func(*Config), parts ...participants.Participant) *Coordinator {
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
	cfg := DefaultConfig()
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	cfg.RecoveryInterval = time.Hour
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg, r, fsm, parts, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	t.Cleanup(func() {
		c.Stop()
		r.Shutdown().Error()
		store.Close()
	})
	return c
}

// TestAdmissionBoundsTwoPhaseInFlight: with a bound of 3 slots per
// participant, 24 concurrent two-phase transactions (one-shot runs and
// interactive commits, crossing two participants in both orders) all
// commit, never more than 3 hold a slot at once, and every slot is given
// back. One-phase transactions take no slot.
func TestAdmissionBoundsTwoPhaseInFlight(t *testing.T) {
	a, b := newGated("a", 3), newGated("b", 3)
	c := newCoordinatorWith(t, nil, a, wrapped{b})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, second := "a", "b"
			if i%2 == 1 {
				first, second = "b", "a"
			}
			if i%3 == 0 { // interactive
				txid, _, err := c.Begin(ctx, TxOptions{})
				if err == nil {
					_, err = c.Execute(ctx, txid, write(first))
				}
				if err == nil {
					_, err = c.Execute(ctx, txid, write(second))
				}
				if err == nil {
					err = c.Commit(ctx, txid)
				}
				errs <- err
				return
			}
			_, _, err := c.Run(ctx, TxOptions{}, []Statement{write(first), write(second)})
			errs <- err
		}()
	}
	wg.Add(1)
	go func() { // one-phase: no slot
		defer wg.Done()
		_, _, err := c.Run(ctx, TxOptions{}, []Statement{write("a")})
		errs <- err
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*gatedFake{a, b} {
		if m := g.maxHeld.Load(); m < 1 || m > 3 {
			t.Errorf("%s: %d slots held at once, bound 3", g.name, m)
		}
	}
	deadline := time.Now().Add(5 * time.Second) // phase two may still be finishing
	for (len(a.slots) != 0 || len(b.slots) != 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(a.slots) != 0 || len(b.slots) != 0 {
		t.Fatalf("slots not given back: a %d, b %d", len(a.slots), len(b.slots))
	}
}

// TestAdmissionTimeoutAborts: a transaction that cannot get a slot within
// the prepare timeout aborts with ErrLimit, having prepared nothing, and
// gives back the slot it took on the other participant.
func TestAdmissionTimeoutAborts(t *testing.T) {
	a, b := newGated("a", 1), newGated("b", 1)
	c := newCoordinatorWith(t, func(cfg *Config) { cfg.PrepareTimeout = 100 * time.Millisecond }, a, b)
	if err := b.EnterCommit(context.Background()); err != nil { // someone else holds b's only slot
		t.Fatal(err)
	}
	_, _, err := c.Run(context.Background(), TxOptions{}, []Statement{write("a"), write("b")})
	var ae *AbortError
	if !errors.As(err, &ae) || !errors.Is(err, ErrLimit) {
		t.Fatalf("Run = %v; want an abort wrapping ErrLimit", err)
	}
	if len(a.prepared) != 0 || len(b.prepared) != 0 {
		t.Fatal("a branch was prepared")
	}
	if len(a.slots) != 0 {
		t.Fatal("the slot on a was not given back")
	}
	b.LeaveCommit()
	if _, _, err := c.Run(context.Background(), TxOptions{}, []Statement{write("a"), write("b")}); err != nil {
		t.Fatalf("after the slot is free: %v", err)
	}
}

// runDirect is Run through runLocked (whether or not Run calls it).
func runDirect(t *testing.T, c *Coordinator, stmts ...Statement) ([]participants.Result, error) {
	t.Helper()
	txid, _, err := c.Begin(context.Background(), TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.lookup(txid)
	if err != nil {
		t.Fatal(err)
	}
	tx.opMu.Lock()
	defer tx.opMu.Unlock()
	return c.runLocked(context.Background(), tx, stmts)
}

// TestRunQueues: a Run's statements for a participant whose branches
// queue go with its prepare or one-phase commit; the others execute; the
// results come back in statement order. A statement refused at Queue, or
// failing when sent, aborts the run.
func TestRunQueues(t *testing.T) {
	q, plain := queueFake{newFake("q")}, newFake("p")
	c := newCoordinatorWith(t, nil, q, plain)
	sel := Statement{Participant: "q", Op: participants.Operation{Kind: participants.OpSQL, SQL: "SELECT 1"}}
	res, err := runDirect(t, c, write("q"), write("p"), sel)
	if err != nil {
		t.Fatal(err)
	}
	// queued results carry 10+position in the queue; executed ones 1
	if len(res) != 3 || res[0].RowsAffected != 10 || res[1].RowsAffected != 1 || res[2].RowsAffected != 11 {
		t.Fatalf("results %+v", res)
	}
	if len(q.committed) != 1 || len(plain.committed) != 1 {
		t.Fatalf("committed q %v, p %v", q.committed, plain.committed)
	}
	// One participant: one-phase commit with the queued statements.
	if res, err = runDirect(t, c, write("q"), sel); err != nil || len(res) != 2 || res[1].RowsAffected != 11 {
		t.Fatalf("one-phase run: %+v, %v", res, err)
	}
	// Refused at Queue: aborted before anything is sent.
	refuse := Statement{Participant: "q", Op: participants.Operation{Kind: participants.OpSQL, SQL: "refuse"}}
	if _, err := runDirect(t, c, write("p"), refuse); !errors.Is(err, ErrAborted) {
		t.Fatalf("refused statement: %v", err)
	}
	// Failing when sent (at prepare): NO vote, abort; the other branch rolled back.
	fail := Statement{Participant: "q", Op: participants.Operation{Kind: participants.OpSQL, SQL: "fail"}}
	_, err = runDirect(t, c, write("p"), fail)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, participants.ErrBadOperation) {
		t.Fatalf("failing queued statement: %v", err)
	}
}
