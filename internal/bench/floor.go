package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/participants/postgres"
	"github.com/txcoord/txcoord/participants/surrealdb"
)

// The floor is a third side of a round: the txcoord side's transaction,
// committed by this process itself through the participant adapters
// txcoord uses (participants/postgres, participants/surrealdb) — the same
// pipelined prepare, receipts, parallel prepare and commit, one-phase
// commit with its marker — but with no coordinator: no gRPC hop, no Raft,
// no decision log. It is what the participants cost on their own, so
// floor/baseline (the ceiling) is the best ratio any coordinator using
// them could reach on this machine, and txcoord/floor is what the
// coordinator itself costs. A floor transaction logs no decision: one
// interrupted between prepare and commit is not recovered by anyone (its
// GIDs start with floorGIDPrefix, which no cluster scans); the run rolls
// back what it leaves prepared when it ends.

// floorGIDPrefix starts every floor branch's GID: "txbench-floor:<pid>:".
const floorGIDPrefix = "txbench-floor"

// floorCleanupTimeout bounds the roll-back of each adapter's leftovers at
// the end of a run.
const floorCleanupTimeout = 10 * time.Second

// floorEnv holds the adapters the floor side commits through.
type floorEnv struct {
	pgA, pgB, surreal participants.Participant
	accounts          int
	prefix            string
}

// floorSeq numbers floor transactions for the whole process, from the
// process's start time in nanoseconds: a GID is then never used twice, not
// by two floors of one process (the SurrealDB adapter refuses a GID it
// already committed) nor by a later process that got the same pid.
var floorSeq atomic.Uint64

func init() { floorSeq.Store(uint64(time.Now().UnixNano())) }

// openFloor opens an adapter per store the workloads need, configured as
// the --start nodes configure theirs (adapter defaults, pool size
// --max-conns when set), so both sides queue for connections alike.
func openFloor(ctx context.Context, cfg Config) (*floorEnv, error) {
	f := &floorEnv{accounts: cfg.Accounts, prefix: fmt.Sprintf("%s:%d:", floorGIDPrefix, os.Getpid())}
	logger := slog.New(slog.DiscardHandler)
	pgCfg := func(name, dsn string) postgres.Config {
		c := postgres.DefaultConfig()
		c.Name, c.DSN = name, dsn
		if cfg.MaxConns > 0 {
			c.MaxConns = int32(cfg.MaxConns)
		}
		return c
	}
	// Each adapter is assigned only once open: a failed Open's nil
	// pointer must not become a non-nil Participant that close calls.
	pa, err := postgres.Open(ctx, pgCfg(cfg.PGA, cfg.Stores.PGDSNA), logger)
	if err != nil {
		return nil, fmt.Errorf("floor: participant %s: %w", cfg.PGA, err)
	}
	f.pgA = pa
	if cfg.needs("b") {
		pb, err := postgres.Open(ctx, pgCfg(cfg.PGB, cfg.Stores.PGDSNB), logger)
		if err != nil {
			f.close()
			return nil, fmt.Errorf("floor: participant %s: %w", cfg.PGB, err)
		}
		f.pgB = pb
	}
	if cfg.needs("surreal") {
		sp := cfg.Stores.Surreal()
		c := surrealdb.DefaultConfig()
		c.Name, c.URL, c.Namespace, c.Database, c.Username, c.Password = cfg.Surreal, sp.URL, sp.Namespace, sp.Database, sp.User, sp.Pass
		if cfg.MaxConns > 0 {
			c.PoolSize = cfg.MaxConns
		}
		ps, err := surrealdb.Open(ctx, c, logger)
		if err != nil {
			f.close()
			return nil, fmt.Errorf("floor: participant %s: %w", cfg.Surreal, err)
		}
		f.surreal = ps
	}
	f.rollbackAbandoned(ctx)
	return f, nil
}

// adapters are the open adapters.
func (f *floorEnv) adapters() []participants.Participant {
	var out []participants.Participant
	for _, p := range []participants.Participant{f.pgA, f.pgB, f.surreal} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// rollbackAbandoned rolls back floor branches that earlier txbench runs
// left prepared when they were killed mid-run: no cluster recovers floor
// GIDs, and a prepared transaction left behind holds back VACUUM on its
// whole database. A GID whose process (the pid in its prefix) still runs
// belongs to a live run and is left alone.
func (f *floorEnv) rollbackAbandoned(ctx context.Context) {
	for _, p := range f.adapters() {
		left, err := p.InDoubt(ctx, floorGIDPrefix+":")
		if err != nil {
			continue
		}
		for _, b := range left {
			if pid, ok := floorPID(b.GID); ok && !processAlive(pid) {
				_ = p.RollbackPrepared(ctx, b.GID)
			}
		}
	}
}

// floorPID is the pid in a floor GID ("txbench-floor:<pid>:<n>:<participant>").
func floorPID(gid string) (int, bool) {
	rest, ok := strings.CutPrefix(gid, floorGIDPrefix+":")
	if !ok {
		return 0, false
	}
	pidText, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidText)
	return pid, err == nil && pid > 0
}

// processAlive reports whether a process with this pid exists here.
func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// close rolls back any floor branch a cut-off transaction left prepared,
// then closes the adapters.
func (f *floorEnv) close() {
	for _, p := range f.adapters() {
		ctx, cancel := context.WithTimeout(context.Background(), floorCleanupTimeout)
		if left, err := p.InDoubt(ctx, f.prefix); err == nil {
			for _, b := range left {
				_ = p.RollbackPrepared(ctx, b.GID)
			}
		}
		cancel()
		_ = p.Close()
	}
}

// floorTx is one floor transaction: a branch per participant, begun when
// the participant is first used.
type floorTx struct {
	f        *floorEnv
	ctx      context.Context
	txid     uint64
	parts    []participants.Participant
	branches []participants.Branch
}

func (f *floorEnv) begin(ctx context.Context) *floorTx {
	return &floorTx{f: f, ctx: ctx, txid: floorSeq.Add(1)}
}

// branch is the transaction's branch on p, begun on first use.
func (t *floorTx) branch(p participants.Participant) (participants.Branch, error) {
	for i, q := range t.parts {
		if q == p {
			return t.branches[i], nil
		}
	}
	b, err := p.Begin(t.ctx, fmt.Sprintf("%s%d:%s", t.f.prefix, t.txid, p.Name()), participants.BranchOptions{})
	if err != nil {
		return nil, err
	}
	t.parts = append(t.parts, p)
	t.branches = append(t.branches, b)
	return b, nil
}

// exec runs op on p at once, as an interactive transaction's Exec does.
func (t *floorTx) exec(p participants.Participant, op participants.Operation) (participants.Result, error) {
	b, err := t.branch(p)
	if err != nil {
		return participants.Result{}, err
	}
	return b.Execute(t.ctx, op)
}

// queue queues op on p's branch to go with its prepare or commit, as
// txcoord's Run does (executed at once where the adapter does not queue).
func (t *floorTx) queue(p participants.Participant, op participants.Operation) error {
	b, err := t.branch(p)
	if err != nil {
		return err
	}
	if q, ok := b.(participants.Queuer); ok {
		return q.Queue(op)
	}
	_, err = b.Execute(t.ctx, op)
	return err
}

// fail rolls every branch back and classifies err as the txcoord side's
// errors are: a conflict or a NO vote is an abort (retried), anything
// else an error.
func (t *floorTx) fail(err error) (outcome, error) {
	for _, b := range t.branches {
		_ = b.Rollback(context.WithoutCancel(t.ctx))
	}
	if errors.Is(err, participants.ErrConflict) {
		return outAborted, err
	}
	return outError, err
}

// commit is txcoord's commit without the coordinator: one participant
// commits in one phase; more prepare in parallel and, all YES (or
// READ_ONLY), commit in parallel with their receipts. A NO vote rolls the
// prepared branches back; it is an abort (retried) when a conflict caused
// it, an error otherwise.
func (t *floorTx) commit() (outcome, error) {
	ctx := t.ctx
	switch len(t.branches) {
	case 0:
		return outOK, nil
	case 1:
		if err := t.branches[0].CommitOnePhase(ctx); err != nil {
			return t.fail(err)
		}
		return outOK, nil
	}
	n := len(t.branches)
	votes := make([]participants.Vote, n)
	errs := make([]error, n)
	parallel(n, func(i int) { votes[i], errs[i] = t.branches[i].Prepare(ctx) })
	for i, v := range votes {
		if v != participants.VoteNo && errs[i] == nil {
			continue
		}
		cause := errs[i]
		if cause == nil {
			cause = fmt.Errorf("branch %s voted NO", t.branches[i].GID())
		}
		for j, b := range t.branches {
			if votes[j] == participants.VoteYes {
				_ = t.parts[j].RollbackPrepared(context.WithoutCancel(ctx), b.GID())
			}
		}
		if v == participants.VoteNo && errors.Is(cause, participants.ErrConflict) {
			return outAborted, cause
		}
		return outError, cause
	}
	parallel(n, func(i int) {
		if votes[i] == participants.VoteYes {
			errs[i] = t.commitPrepared(i)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return outError, err
	}
	return outOK, nil
}

// commitPrepared commits branch i, retrying (bounded, with backoff) past
// the transaction's own context, as txcoord's phase two does: a branch
// left prepared would hold its rows' locks until the run ends.
func (t *floorTx) commitPrepared(i int) error {
	b := t.branches[i]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), floorCleanupTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		err := participants.CommitPreparedReceipt(ctx, t.parts[i], b.GID(), participants.BranchReceipt(b))
		if err == nil || !errors.Is(err, participants.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (retried for %s)", err, floorCleanupTimeout)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// parallel runs fn(0..n-1), fn(0) on this goroutine, and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	fn(0)
	wg.Wait()
}

// floorBalance is the balance field of a read record.
func floorBalance(res participants.Result) (int64, error) {
	return demo.IntField(&client.Result{Columns: res.Columns, Rows: res.Rows}, "balance")
}
