package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// result kinds of one transfer.
type resultKind int

const (
	resCommitted resultKind = iota
	resAborted
	resUnknown // Commit's outcome unknown: resolved with WaitOutcome (outcome)
	resNotRun  // Begin never succeeded
)

type transferResult struct {
	t      transfer
	kind   resultKind
	reason string // for resAborted
	txid   string
	err    error
	// outcome is what WaitOutcome answered for resUnknown (UNKNOWN if it
	// did not resolve within ResolveTimeout; werr says why).
	outcome pb.Outcome
	werr    error
	// began is when Begin returned; ended when the worker was done with it
	// (Commit answered, or WaitOutcome resolved it).
	began, ended time.Time
}

// mover runs transfers through txcoord.
type mover struct {
	cfg Config
	c   *client.Client
	// onBegin, if set, is told every transaction Begin returns, at once.
	onBegin func(txid string, at time.Time)
}

func (m *mover) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.cfg.StepTimeout)
}

// begin starts a transaction, retrying while the coordinator is unavailable
// (it is restarting) for at most StartTimeout plus the client's own retries.
func (m *mover) begin(ctx context.Context) (*client.Tx, error) {
	deadline := time.Now().Add(m.cfg.StartTimeout + 15*time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
		tx, err := m.c.Begin(sctx, client.TxOptions{Timeout: m.cfg.TxTimeout, Labels: map[string]string{"app": "txdemo"}})
		cancel()
		if err == nil {
			return tx, nil
		}
		retryable := errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrLimit) ||
			errors.Is(err, context.DeadlineExceeded)
		if !retryable || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// abandon rolls back (best effort: a failed statement already made the
// coordinator roll back) and classifies why the transfer did not commit.
// Before Commit is sent nothing can commit, so this is a definite abort.
func (m *mover) abandon(ctx context.Context, tx *client.Tx, r transferResult, reason string, err error) transferResult {
	rctx, cancel := m.step(ctx)
	tx.Rollback(rctx) //nolint:errcheck // best effort; the outcome is abort either way
	cancel()
	r.kind, r.err = resAborted, err
	switch {
	case reason != "":
		r.reason = reason
	case errors.Is(err, client.ErrAborted):
		r.reason = conflictReason(err)
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrNotActive),
		errors.Is(err, client.ErrNotFound), errors.Is(err, context.DeadlineExceeded):
		r.reason = reasonCoordinator
	default:
		r.reason = reasonError
	}
	return r
}

// run performs one transfer as ONE txcoord transaction.
//
//	pg → surreal: UPDATE ... balance - amount WHERE balance >= amount (0 rows: overdraft),
//	              Read surreal record, Merge balance + amount, Commit.
//	surreal → pg: Read surreal record (balance < amount: overdraft), Merge balance - amount,
//	              UPDATE ... balance + amount, Commit.
func (m *mover) run(ctx context.Context, t transfer) (r transferResult) {
	r = transferResult{t: t}
	tx, err := m.begin(ctx)
	if err != nil {
		r.kind, r.err = resNotRun, err
		return r
	}
	r.txid, r.began = tx.ID(), time.Now()
	if m.onBegin != nil {
		m.onBegin(r.txid, r.began)
	}
	defer func() { r.ended = time.Now() }()

	if t.ToSurreal {
		sctx, cancel := m.step(ctx)
		res, err := tx.Exec(sctx, PGParticipant,
			"UPDATE "+PGTable+" SET balance = balance - $1 WHERE id = $2 AND balance >= $1", t.Amount, t.PGID)
		cancel()
		if err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
		if res.RowsAffected == 0 {
			return m.abandon(ctx, tx, r, reasonOverdraft, nil)
		}
		bal, err := m.readSurreal(ctx, tx, t.SurrealID)
		if err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
		if err := m.setSurreal(ctx, tx, t.SurrealID, bal+t.Amount); err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
	} else {
		bal, err := m.readSurreal(ctx, tx, t.SurrealID)
		if err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
		if bal < t.Amount {
			return m.abandon(ctx, tx, r, reasonOverdraft, nil)
		}
		if err := m.setSurreal(ctx, tx, t.SurrealID, bal-t.Amount); err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
		sctx, cancel := m.step(ctx)
		res, err := tx.Exec(sctx, PGParticipant, "UPDATE "+PGTable+" SET balance = balance + $1 WHERE id = $2", t.Amount, t.PGID)
		cancel()
		if err != nil {
			return m.abandon(ctx, tx, r, "", err)
		}
		if res.RowsAffected != 1 {
			return m.abandon(ctx, tx, r, "", fmt.Errorf("%s %s: UPDATE affected %d rows, want 1", PGTable, t.PGID, res.RowsAffected))
		}
	}

	cctx, cancel := context.WithTimeout(ctx, m.cfg.CommitTimeout)
	err = tx.Commit(cctx)
	cancel()
	switch {
	case err == nil:
		r.kind = resCommitted
	case errors.Is(err, client.ErrAborted):
		r.kind, r.reason, r.err = resAborted, conflictReason(err), err
	default:
		// ErrOutcomeUnknown, or anything else Commit answered: it may have
		// committed. Never count it as failed (DESIGN.md invariant 3): ask
		// (the new leader, after a kill) until it knows.
		r.kind, r.err = resUnknown, err
		wctx, wcancel := context.WithTimeout(ctx, m.cfg.ResolveTimeout)
		r.outcome, r.werr = m.c.WaitOutcome(wctx, r.txid)
		wcancel()
	}
	return r
}

// conflictReason is reasonConflict, qualified by the participant that caused
// the abort when the coordinator names it ("conflict@surreal").
func conflictReason(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Participant != "" {
		return reasonConflict + "@" + ce.Participant
	}
	return reasonConflict
}

func (m *mover) readSurreal(ctx context.Context, tx *client.Tx, id string) (int64, error) {
	sctx, cancel := m.step(ctx)
	defer cancel()
	res, err := tx.Do(sctx, SurrealParticipant, client.Read(SurrealTable, id))
	if err != nil {
		return 0, err
	}
	return IntField(res, "balance")
}

func (m *mover) setSurreal(ctx context.Context, tx *client.Tx, id string, balance int64) error {
	sctx, cancel := m.step(ctx)
	defer cancel()
	_, err := tx.Do(sctx, SurrealParticipant, client.Merge(SurrealTable, id, map[string]any{"balance": balance}))
	return err
}

// IntField finds an integer field in a record Read result: a column of that
// name, or a single cell holding the record as a map.
func IntField(res *client.Result, field string) (int64, error) {
	if res == nil || len(res.Rows) == 0 {
		return 0, errors.New("record not found")
	}
	row := res.Rows[0]
	for i, col := range res.Columns {
		if col == field && i < len(row) {
			if b, ok := Int64(row[i]); ok {
				return b, nil
			}
			return 0, fmt.Errorf("%s %v (%T) is not an integer", field, row[i], row[i])
		}
	}
	for _, cell := range row {
		if rec, ok := cell.(map[string]any); ok {
			if v, ok := rec[field]; ok {
				if b, ok := Int64(v); ok {
					return b, nil
				}
				return 0, fmt.Errorf("%s %v (%T) is not an integer", field, v, v)
			}
		}
	}
	return 0, fmt.Errorf("no %s in the read result (columns %v, row %v)", field, res.Columns, row)
}
