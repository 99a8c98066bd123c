package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/txcoord/txcoord/participants"
)

type branchState int

const (
	stateActive   branchState = iota
	stateFailed               // an Execute failed; only Rollback (or a NO vote) remains
	statePrepared             // voted YES; phase two goes by GID through the Participant
	stateDone                 // committed, rolled back, read-only or voted NO
)

// branch is one transaction's work on the database: a pooled connection
// with an open transaction. Calls are serialized by mu (the contract allows
// one goroutine at a time; the lock makes a concurrent Close safe).
type branch struct {
	p     *Participant
	gid   string
	opts  participants.BranchOptions
	begin string // BEGIN statement for the branch's isolation

	mu      sync.Mutex
	conn    *pgxpool.Conn // nil once released
	began   bool          // BEGIN has been sent
	state   branchState
	failure error // the Execute error that failed the branch
}

var _ participants.Branch = (*branch)(nil)

func (b *branch) GID() string { return b.gid }

// Execute runs one OpSQL statement with its args. The first Execute sends
// BEGIN in the same round trip. Rows come back converted to the participant
// value set (see resultValue); RowsAffected is the command tag's count
// (for SELECT, the number of rows). Any error marks the branch failed and
// rolls its transaction back at once; later calls get ErrBranchFailed.
// Errors wrap ErrUnsupported (non-SQL kinds, statements that cannot be
// prepared), ErrBadOperation (empty or oversized SQL, bad arguments, SQL
// errors, too many rows), ErrConstraint (SQLSTATE class 23), ErrConflict
// (class 40, lock_timeout) or ErrUnavailable (connection and transient
// server errors; a passed branch deadline also wraps
// context.DeadlineExceeded).
func (b *branch) Execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable("execute"); err != nil {
		return participants.Result{}, err
	}
	res, err := b.execute(ctx, op)
	if err != nil {
		b.state = stateFailed
		b.failure = err
		b.rollbackAndRelease()
		return participants.Result{}, err
	}
	return res, nil
}

func (b *branch) execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	p := b.p
	if op.Kind != participants.OpSQL {
		return participants.Result{}, b.errorf("execute", "operation kind %s: the postgres participant runs SQL only: %w",
			op.Kind, participants.ErrUnsupported)
	}
	if len(op.SQL) > p.cfg.MaxStatementBytes {
		return participants.Result{}, b.errorf("execute", "SQL is %d bytes, more than MaxStatementBytes=%d: %w",
			len(op.SQL), p.cfg.MaxStatementBytes, participants.ErrBadOperation)
	}
	if err := CheckStatement(op.SQL); err != nil {
		return participants.Result{}, b.errorf("execute", "%w", err)
	}
	args := make([]any, len(op.Args))
	for i, a := range op.Args {
		v, err := argValue(a)
		if err != nil {
			return participants.Result{}, b.errorf("execute", "args[%d]: %w", i, err)
		}
		args[i] = v
	}
	if b.deadlinePassed() {
		return participants.Result{}, b.errorf("execute", "branch deadline %s passed: %w",
			b.opts.Deadline.Format(time.RFC3339Nano), context.DeadlineExceeded)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.StatementTimeout+clientGrace, b.opts.Deadline)
	defer cancel()

	var res participants.Result
	var err error
	if !b.began {
		// BEGIN and the first statement in one round trip.
		batch := &pgx.Batch{}
		batch.Queue(b.begin)
		batch.Queue(op.SQL, args...)
		br := b.conn.SendBatch(ctx, batch)
		if _, err = br.Exec(); err == nil {
			b.began = true
			var rows pgx.Rows
			if rows, err = br.Query(); err == nil {
				res, err = readRows(rows, p.cfg.MaxResultRows)
			} else {
				rows.Close()
			}
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	} else {
		var rows pgx.Rows
		if rows, err = b.conn.Query(ctx, op.SQL, args...); err == nil {
			res, err = readRows(rows, p.cfg.MaxResultRows)
		}
	}
	if err != nil {
		return participants.Result{}, b.executeError(err)
	}
	return res, nil
}

// executeError classifies an error from running a statement.
func (b *branch) executeError(err error) error {
	if errors.Is(err, participants.ErrBadOperation) {
		return b.errorf("execute", "%w", err)
	}
	r := reason(err)
	if r == nil && pgErr(err) == nil && !b.conn.Conn().IsClosed() {
		r = participants.ErrBadOperation // encoding or decoding on the client side
	}
	if r == nil {
		return b.errorf("execute", "%w", err)
	}
	return b.errorf("execute", "%w: %w", r, err)
}

func readRows(rows pgx.Rows, limit int) (participants.Result, error) {
	defer rows.Close()
	var res participants.Result
	if fds := rows.FieldDescriptions(); len(fds) > 0 {
		res.Columns = make([]string, len(fds))
		for i, fd := range fds {
			res.Columns[i] = fd.Name
		}
	}
	for rows.Next() {
		if len(res.Rows) >= limit {
			rows.Close()
			if err := rows.Err(); err != nil {
				return participants.Result{}, err
			}
			return participants.Result{}, fmt.Errorf("result has more than MaxResultRows=%d rows: %w",
				limit, participants.ErrBadOperation)
		}
		vals, err := rows.Values()
		if err != nil {
			return participants.Result{}, err
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			row[i] = resultValue(v)
		}
		res.Rows = append(res.Rows, row)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return participants.Result{}, err
	}
	res.RowsAffected = rows.CommandTag().RowsAffected()
	return res, nil
}

// Prepare votes. In order:
//   - an already prepared or finished branch: VoteNo with ErrBranchDone;
//   - a failed branch: VoteNo with ErrVoteNo and the Execute error;
//   - a branch that never executed anything, or whose transaction has no
//     xid (it wrote nothing): COMMIT, then VoteReadOnly;
//   - otherwise the GID's commit marker is inserted (when markers are on)
//     and PREPARE TRANSACTION runs: VoteYes, or VoteNo with ErrVoteNo and
//     ErrConstraint (class 23, e.g. deferred constraints), ErrConflict
//     (class 40, e.g. serialization failure) or ErrUnavailable (the
//     connection was lost before PREPARE was sent) — all definite: the
//     transaction is rolled back;
//   - a connection lost (or the context ended) while PREPARE TRANSACTION was
//     in flight: VoteNo with ErrAmbiguous (not ErrVoteNo): the branch may be
//     prepared; the caller rolls it back by GID with RollbackPrepared.
//
// In every case the branch holds no connection afterwards; a NO vote needs
// no further cleanup on this branch, but Rollback is harmless.
func (b *branch) Prepare(ctx context.Context) (participants.Vote, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.p
	switch b.state {
	case statePrepared, stateDone:
		return participants.VoteNo, b.errorf("prepare", "%w", participants.ErrBranchDone)
	case stateFailed:
		b.rollbackAndRelease()
		return participants.VoteNo, b.errorf("prepare", "branch failed earlier: %w: %w", participants.ErrVoteNo, b.failure)
	}
	if !b.began {
		b.release()
		b.state = stateDone
		return participants.VoteReadOnly, nil
	}
	if b.deadlinePassed() {
		b.state = stateDone
		b.rollbackAndRelease()
		return participants.VoteNo, b.errorf("prepare", "branch deadline passed: %w: %w",
			participants.ErrVoteNo, context.DeadlineExceeded)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, b.opts.Deadline)
	defer cancel()

	// Step 1: record the GID (marker) or read the xid. PREPARE has not been
	// sent, so any failure here is a definite NO.
	var xid *string
	var err error
	if p.marker != "" {
		var x string
		err = b.conn.QueryRow(ctx, p.markerInsertSQL, b.gid).Scan(&x)
		switch {
		case err == nil:
			xid = &x
		case errors.Is(err, pgx.ErrNoRows), hasCode(err, codeReadOnlyTransaction):
			err = nil // no xid: wrote nothing (a READ ONLY transaction cannot have)
		}
	} else {
		err = b.conn.QueryRow(ctx, `SELECT pg_current_xact_id_if_assigned()::text`).Scan(&xid)
	}
	if err != nil {
		b.state = stateDone
		b.rollbackAndRelease()
		if hasCode(err, codeUniqueViolation) {
			return participants.VoteNo, b.errorf("prepare", "the GID already has a marker (rolled back by RollbackPrepared, or reused): %w: %w",
				participants.ErrVoteNo, err)
		}
		return participants.VoteNo, b.voteNo("record marker", err)
	}
	if xid == nil {
		_, err := b.conn.Exec(ctx, "COMMIT")
		b.state = stateDone
		b.release()
		if err != nil {
			// Nothing was written, so NO is definite even if the COMMIT was lost.
			return participants.VoteNo, b.voteNo("commit read-only", err)
		}
		return participants.VoteReadOnly, nil
	}

	// Step 2: PREPARE TRANSACTION.
	pid := b.conn.Conn().PgConn().PID()
	if k := p.cfg.Knobs; k != nil && k.BeforePrepareTransaction != nil {
		k.BeforePrepareTransaction(b.gid, pid)
	}
	tag, err := b.conn.Exec(ctx, "PREPARE TRANSACTION "+quoteLiteral(b.gid))
	b.state = stateDone
	b.release()
	switch {
	case err == nil && tag.String() == "PREPARE TRANSACTION":
		b.state = statePrepared
		if p.marker == "" {
			if x, perr := strconv.ParseUint(*xid, 10, 64); perr == nil {
				p.xids.put(b.gid, x)
			}
		}
		p.log.Debug("prepared branch", slog.String("gid", b.gid), slog.String("xid", *xid))
		return participants.VoteYes, nil
	case err == nil:
		// PREPARE of an aborted transaction answers ROLLBACK.
		return participants.VoteNo, b.errorf("prepare", "the transaction was already aborted (%s): %w", tag, participants.ErrVoteNo)
	case definiteServerError(err), pgconn.SafeToRetry(err):
		// The server refused (the transaction is rolled back), or nothing
		// was sent (release destroyed the connection and the server rolls
		// the transaction back).
		return participants.VoteNo, b.voteNo("prepare transaction", err)
	}
	p.log.Warn("connection lost during PREPARE TRANSACTION; the branch may be prepared",
		slog.String("gid", b.gid), slog.Uint64("backend_pid", uint64(pid)), slog.Any("err", err))
	return participants.VoteNo, b.errorf("prepare",
		"connection lost during PREPARE TRANSACTION, the branch may or may not be prepared; roll it back by GID: %w: %w",
		participants.ErrAmbiguous, err)
}

// voteNo wraps a definite failure at prepare: ErrVoteNo, plus ErrConstraint,
// ErrConflict or ErrUnavailable where the cause says so.
func (b *branch) voteNo(step string, err error) error {
	switch r := reason(err); r {
	case participants.ErrConstraint, participants.ErrConflict, participants.ErrUnavailable:
		return b.errorf("prepare", "%s: %w: %w: %w", step, participants.ErrVoteNo, r, err)
	}
	return b.errorf("prepare", "%s: %w: %w", step, participants.ErrVoteNo, err)
}

// CommitOnePhase commits the branch with COMMIT on its connection: the
// database's commit is the decision. A branch that never executed anything
// commits trivially. Server errors at COMMIT (deferred constraints,
// serialization failures) are definite failures wrapping ErrConstraint or
// ErrConflict: the transaction is rolled back. A connection lost (or the
// context ended) while COMMIT was in flight is ErrAmbiguous.
func (b *branch) CommitOnePhase(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.p
	switch b.state {
	case statePrepared, stateDone:
		return b.errorf("commit", "%w", participants.ErrBranchDone)
	case stateFailed:
		b.rollbackAndRelease()
		return b.errorf("commit", "%w: %w", participants.ErrBranchFailed, b.failure)
	}
	b.state = stateDone
	if !b.began {
		b.release()
		return nil
	}
	if b.deadlinePassed() {
		b.rollbackAndRelease()
		return b.errorf("commit", "branch deadline passed, rolled back: %w", context.DeadlineExceeded)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, b.opts.Deadline)
	defer cancel()
	pid := b.conn.Conn().PgConn().PID()
	if k := p.cfg.Knobs; k != nil && k.BeforeCommit != nil {
		k.BeforeCommit(b.gid, pid)
	}
	tag, err := b.conn.Exec(ctx, "COMMIT")
	b.release()
	switch {
	case err == nil && tag.String() == "COMMIT":
		return nil
	case err == nil:
		return b.errorf("commit", "the transaction was rolled back (%s)", tag)
	case definiteServerError(err), pgconn.SafeToRetry(err):
		if r := reason(err); r != nil {
			return b.errorf("commit", "rolled back: %w: %w", r, err)
		}
		return b.errorf("commit", "rolled back: %w", err)
	}
	p.log.Warn("connection lost during COMMIT; outcome unknown",
		slog.String("gid", b.gid), slog.Uint64("backend_pid", uint64(pid)), slog.Any("err", err))
	return b.errorf("commit", "connection lost during COMMIT: %w: %w", participants.ErrAmbiguous, err)
}

// Rollback rolls back an unprepared branch and releases its connection.
// Idempotent. After a YES vote it does nothing: a prepared branch is rolled
// back by GID with RollbackPrepared. It always returns nil: a ROLLBACK that
// cannot be sent closes the connection, and the server rolls back.
func (b *branch) Rollback(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == statePrepared {
		return nil
	}
	b.state = stateDone
	b.rollbackAndRelease()
	return nil
}

// rollbackAndRelease ends the branch's transaction (if one is open) and
// returns the connection to the pool. It uses its own bounded context: it
// runs on failure paths where the caller's context may be done.
func (b *branch) rollbackAndRelease() {
	if b.conn == nil {
		return
	}
	if b.began && !b.conn.Conn().IsClosed() && b.conn.Conn().PgConn().TxStatus() != 'I' {
		ctx, cancel := b.p.opContext(context.Background(), b.p.cfg.PhaseTimeout, time.Time{})
		if _, err := b.conn.Exec(ctx, "ROLLBACK"); err != nil {
			b.p.log.Debug("rollback failed; closing the connection", slog.String("gid", b.gid), slog.Any("err", err))
		}
		cancel()
	}
	b.release()
}

// release returns the connection to the pool; pgxpool destroys it instead
// if it is closed, busy or still inside a transaction (the server then
// rolls that transaction back).
func (b *branch) release() {
	if b.conn == nil {
		return
	}
	b.conn.Release()
	b.conn = nil
	b.p.forget(b)
}

// abandon is Close's path: it waits for an in-flight call (Close has
// canceled it), then closes the connection without reusing it.
func (b *branch) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return
	}
	if b.state == stateActive {
		b.state = stateFailed
		b.failure = b.p.closedError()
	}
	c := b.conn.Hijack()
	b.conn = nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = c.Close(ctx)
	cancel()
}

func (b *branch) usable(what string) error {
	switch b.state {
	case stateFailed:
		return b.errorf(what, "%w (first error: %v)", participants.ErrBranchFailed, b.failure)
	case statePrepared, stateDone:
		return b.errorf(what, "%w", participants.ErrBranchDone)
	}
	return nil
}

func (b *branch) deadlinePassed() bool {
	return !b.opts.Deadline.IsZero() && !time.Now().Before(b.opts.Deadline)
}

func (b *branch) errorf(what, format string, args ...any) error {
	return fmt.Errorf("postgres %s: %s %s: "+format, append([]any{b.p.cfg.Name, what, b.gid}, args...)...)
}
