package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
	// mayWrite: a statement answered with a command tag other than
	// SELECT (INSERT, UPDATE, DELETE, MERGE, DDL...): the branch most
	// likely has an xid, so Prepare sends the xid read and PREPARE
	// TRANSACTION together (see preparePipelined).
	mayWrite bool
	// xid of the prepared transaction (its receipt), set with a YES vote.
	xid string
	// queue holds the statements of a one-shot run (Queue), sent with
	// Prepare or CommitOnePhase; results holds their results once sent.
	queue   []stmt
	results []participants.Result
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

// stmt is a checked statement: SQL and its arguments converted for pgx.
type stmt struct {
	sql  string
	args []any
}

// check validates op for execution in the branch: kind, size, statements
// that cannot be prepared (CheckStatement), argument types.
func (b *branch) check(op participants.Operation) (stmt, error) {
	p := b.p
	if op.Kind != participants.OpSQL {
		return stmt{}, b.errorf("execute", "operation kind %s: the postgres participant runs SQL only: %w",
			op.Kind, participants.ErrUnsupported)
	}
	if len(op.SQL) > p.cfg.MaxStatementBytes {
		return stmt{}, b.errorf("execute", "SQL is %d bytes, more than MaxStatementBytes=%d: %w",
			len(op.SQL), p.cfg.MaxStatementBytes, participants.ErrBadOperation)
	}
	if err := p.checkStatement(op.SQL); err != nil {
		return stmt{}, b.errorf("execute", "%w", err)
	}
	args := make([]any, len(op.Args))
	for i, a := range op.Args {
		v, err := argValue(a)
		if err != nil {
			return stmt{}, b.errorf("execute", "args[%d]: %w", i, err)
		}
		args[i] = v
	}
	return stmt{sql: op.SQL, args: args}, nil
}

func (b *branch) execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	p := b.p
	if len(b.queue) > 0 {
		panic("postgres: Execute on a branch with queued operations (Queue is for one-shot runs: only Prepare, CommitOnePhase or Rollback may follow)")
	}
	st, err := b.check(op)
	if err != nil {
		return participants.Result{}, err
	}
	args := st.args
	if b.deadlinePassed() {
		return participants.Result{}, b.errorf("execute", "branch deadline %s passed: %w",
			b.opts.Deadline.Format(time.RFC3339Nano), context.DeadlineExceeded)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.StatementTimeout+clientGrace, b.opts.Deadline)
	defer cancel()

	var res participants.Result
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
				res, err = b.readRows(rows)
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
			res, err = b.readRows(rows)
		}
	}
	if err != nil {
		return participants.Result{}, b.executeError(err)
	}
	return res, nil
}

// Queue checks op and keeps it, to be sent with the branch's Prepare or
// CommitOnePhase in the same round trip: BEGIN, the queued statements, then
// the xid read and PREPARE TRANSACTION, or the marker insert and COMMIT. It is for one-shot
// runs, whose results are needed only after the commit; QueuedResults
// returns them, in order, once Prepare voted YES or READ_ONLY or
// CommitOnePhase succeeded. An op that fails the checks of Execute fails
// the branch at once, with the same error. A queued statement that fails
// when sent is a definite NO vote (or a failed one-phase commit) whose
// error wraps the statement's, classified as Execute classifies it; a
// connection lost after sending is ambiguous, as for PREPARE. After Queue,
// only Prepare, CommitOnePhase and Rollback may be called (Execute panics).
// The caller bounds the number of queued operations (its statement limit).
func (b *branch) Queue(op participants.Operation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable("queue"); err != nil {
		return err
	}
	st, err := b.check(op)
	if err != nil {
		b.state = stateFailed
		b.failure = err
		b.rollbackAndRelease()
		return err
	}
	b.queue = append(b.queue, st)
	return nil
}

// QueuedResults returns the results of the queued operations (see Queue):
// nil before they were sent or when they failed.
func (b *branch) QueuedResults() []participants.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.results
}

// queueStatements adds BEGIN (unless sent) and the queued statements to
// batch, and reports whether BEGIN is in it.
func (b *branch) queueStatements(batch *pgx.Batch) (begin bool) {
	begin = !b.began
	if begin {
		batch.Queue(b.begin)
	}
	for _, st := range b.queue {
		batch.Queue(st.sql, st.args...)
	}
	return begin
}

// readQueued reads the results of BEGIN (when sent) and of the queued
// statements from br. On error it returns the index of the failing
// statement (-1 for BEGIN) and the unclassified error.
func (b *branch) readQueued(br pgx.BatchResults, begin bool) ([]participants.Result, int, error) {
	if begin {
		if _, err := br.Exec(); err != nil {
			return nil, -1, err
		}
		b.began = true
	}
	results := make([]participants.Result, 0, len(b.queue))
	for i := range b.queue {
		rows, err := br.Query()
		if err != nil {
			rows.Close()
			return nil, i, err
		}
		res, err := b.readRows(rows)
		if err != nil {
			return nil, i, err
		}
		results = append(results, res)
	}
	return results, 0, nil
}

// sendQueue sends BEGIN (unless sent) and the queued statements in one
// round trip and keeps their results. On failure the branch is rolled back
// and done, and the error is a definite NO vote.
func (b *branch) sendQueue(ctx context.Context) error {
	batch := &pgx.Batch{}
	begin := b.queueStatements(batch)
	br := b.conn.SendBatch(ctx, batch)
	results, i, err := b.readQueued(br, begin)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		serr := b.executeError(err)
		b.state = stateDone
		b.rollbackAndRelease()
		return b.errorf("prepare", "%s: %w: %w", queuedWhat(i), participants.ErrVoteNo, serr)
	}
	b.results = results
	return nil
}

// queuedWrite reports whether a queued statement may write: any that does
// not start with SELECT (a SELECT calling a writing function is found by
// the xid read, which then finds an xid).
func queuedWrite(q []stmt) bool {
	for _, st := range q {
		if !startsWithSelect(st.sql) {
			return true
		}
	}
	return false
}

// startsWithSelect reports whether sql's first keyword is SELECT, after
// whitespace, comments and opening parentheses (without lexing the rest).
func startsWithSelect(sql string) bool {
	for i := 0; i < len(sql); {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '(':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			toks := lexSQL(sql[i:]) // nested comments: let the lexer skip them
			return len(toks) > 0 && toks[0].word == "select"
		default:
			return len(sql)-i >= 6 && strings.EqualFold(sql[i:i+6], "select") &&
				(len(sql)-i == 6 || !isIdentPart(sql[i+6]))
		}
	}
	return false
}

func queuedWhat(i int) string {
	if i < 0 {
		return "BEGIN"
	}
	return fmt.Sprintf("queued statement %d", i)
}

// phaseTimeout bounds Prepare and CommitOnePhase: PhaseTimeout, plus the
// statement timeout when queued statements go with them.
func (b *branch) phaseTimeout() time.Duration {
	if len(b.queue) == 0 {
		return b.p.cfg.PhaseTimeout
	}
	return b.p.cfg.PhaseTimeout + b.p.cfg.StatementTimeout + clientGrace
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

// readRows reads a statement's result and notes whether it may have written.
func (b *branch) readRows(rows pgx.Rows) (participants.Result, error) {
	res, err := readRows(rows, b.p.cfg.MaxResultRows)
	if err == nil && !rows.CommandTag().Select() {
		b.mayWrite = true
	}
	return res, err
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
//   - otherwise PREPARE TRANSACTION runs: VoteYes (Receipt then gives the
//     transaction's xid, which the coordinator logs with its decision:
//     see CommitPreparedReceipt), or VoteNo with ErrVoteNo and
//     ErrConstraint (class 23, e.g. deferred constraints), ErrConflict
//     (class 40, e.g. serialization failure) or ErrUnavailable (the
//     connection was closed, or the context done, before anything was sent;
//     see unsent) — all definite: the transaction is rolled back;
//   - any other failure once PREPARE TRANSACTION may have been written — a
//     connection lost, the context ended, an answer that never came: VoteNo
//     with ErrAmbiguous (not ErrVoteNo): the branch may be prepared; the
//     caller rolls it back by GID with RollbackPrepared.
//
// In every case the branch holds no connection afterwards; a NO vote needs
// no further cleanup on this branch, but Rollback is harmless.
//
// A two-phase branch writes no commit marker (that cost a third of
// PostgreSQL's work per branch): whether it committed is told by its xid.
// So an abort tombstone (RollbackPrepared, Committed) does not stop a
// PREPARE still in flight on a lost connection; such a branch stays
// prepared without a commit decision, and the coordinator's in-doubt scan
// rolls it back (presumed abort).
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
	if !b.began && len(b.queue) == 0 {
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
	ctx, cancel := p.opContext(ctx, b.phaseTimeout(), b.opts.Deadline)
	defer cancel()
	if b.mayWrite || queuedWrite(b.queue) {
		return b.preparePipelined(ctx)
	}
	if len(b.queue) > 0 {
		// Queued reads: send them (one round trip), then decide as below.
		if err := b.sendQueue(ctx); err != nil {
			return participants.VoteNo, err
		}
	}

	// Step 1: read the xid. PREPARE has not been sent, so any failure here
	// is a definite NO.
	var xid *string
	if err := b.conn.QueryRow(ctx, xidSQL).Scan(&xid); err != nil {
		b.state = stateDone
		b.rollbackAndRelease()
		return participants.VoteNo, b.voteNo("read the xid", err)
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
	if err := b.unsent(ctx); err != nil {
		b.state = stateDone
		b.rollbackAndRelease()
		return participants.VoteNo, b.voteNo("prepare transaction (not sent)", err)
	}
	tag, err := b.conn.Exec(ctx, "PREPARE TRANSACTION "+quoteLiteral(b.gid))
	b.state = stateDone
	b.release()
	switch {
	case err == nil && tag.String() == "PREPARE TRANSACTION":
		b.prepared(*xid)
		return participants.VoteYes, nil
	case err == nil:
		// PREPARE of an aborted transaction answers ROLLBACK.
		return participants.VoteNo, b.errorf("prepare", "the transaction was already aborted (%s): %w", tag, participants.ErrVoteNo)
	case definiteServerError(err):
		// The server refused: the transaction is rolled back.
		return participants.VoteNo, b.voteNo("prepare transaction", err)
	}
	// Not SafeToRetry: PREPARE may have reached the server (see unsent).
	return participants.VoteNo, b.ambiguous(pid, err)
}

// preparePipelined is Prepare for a branch that most likely wrote: BEGIN
// and the queued statements (if any), the xid read and PREPARE TRANSACTION
// go in one round trip (one pipeline of unnamed extended-protocol
// statements and one Sync, in exec mode, so no statement is cached). The
// server skips everything after a failing statement up to the Sync, so:
//   - a queued statement or the xid read failed with a server error:
//     PREPARE did not run, a definite NO;
//   - PREPARE failed with a server error: a definite NO;
//   - any other failure once the pipeline may have been sent (a lost
//     connection, an answer that never came, whatever pgconn.SafeToRetry
//     says): the branch may be prepared, NO with ErrAmbiguous, as in Prepare;
//   - the read found no xid (the statements wrote nothing, e.g. an
//     UPDATE that matched no row), yet PREPARE prepared the transaction: it
//     is rolled back at once by GID and the vote is READ_ONLY (a branch
//     without an xid has no receipt, and nothing to commit). If that
//     rollback fails, the vote is NO with ErrAmbiguous, so the caller rolls
//     it back by GID.
//
// The caller holds b.mu and has checked the branch's state and deadline.
func (b *branch) preparePipelined(ctx context.Context) (participants.Vote, error) {
	p := b.p
	pid := b.conn.Conn().PgConn().PID()
	if k := p.cfg.Knobs; k != nil && k.BeforePrepareTransaction != nil {
		k.BeforePrepareTransaction(b.gid, pid)
	}
	if err := b.unsent(ctx); err != nil {
		b.state = stateDone
		b.rollbackAndRelease()
		return participants.VoteNo, b.voteNo("prepare (not sent)", err)
	}
	batch := &pgx.Batch{}
	begin := b.queueStatements(batch)
	batch.Queue(xidSQL)
	batch.Queue("PREPARE TRANSACTION " + quoteLiteral(b.gid))
	br := b.conn.SendBatch(ctx, batch)
	results, i, err := b.readQueued(br, begin)
	if err != nil {
		br.Close()
		b.state = stateDone
		if definiteServerError(err) {
			// The statement failed at the server: the rest, PREPARE
			// included, was skipped.
			serr := b.executeError(err)
			b.rollbackAndRelease()
			return participants.VoteNo, b.errorf("prepare", "%s: %w: %w", queuedWhat(i), participants.ErrVoteNo, serr)
		}
		b.release()
		return participants.VoteNo, b.ambiguous(pid, err)
	}
	var xid *string
	xidErr := br.QueryRow().Scan(&xid)
	var tag pgconn.CommandTag
	var prepErr error
	if xidErr == nil {
		tag, prepErr = br.Exec()
	}
	closeErr := br.Close()
	if xidErr == nil && prepErr == nil && closeErr != nil && tag.String() != "PREPARE TRANSACTION" {
		prepErr = closeErr
	}

	if xidErr != nil {
		b.state = stateDone
		if definiteServerError(xidErr) {
			// The server refused the read: PREPARE was skipped.
			b.rollbackAndRelease()
			return participants.VoteNo, b.voteNo("read the xid", xidErr)
		}
		b.release()
		return participants.VoteNo, b.ambiguous(pid, xidErr)
	}
	b.state = stateDone
	b.release()
	switch {
	case prepErr == nil && tag.String() == "PREPARE TRANSACTION" && xid != nil:
		b.prepared(*xid)
		b.results = results
		return participants.VoteYes, nil
	case prepErr == nil && tag.String() == "PREPARE TRANSACTION":
		// Prepared without an xid: it wrote nothing. Undo it by GID.
		if err := p.RollbackPrepared(ctx, b.gid); err != nil {
			return participants.VoteNo, b.errorf("prepare",
				"a branch that wrote nothing was prepared and could not be rolled back; roll it back by GID: %w: %w",
				participants.ErrAmbiguous, err)
		}
		b.results = results
		return participants.VoteReadOnly, nil
	case prepErr == nil:
		// PREPARE of an aborted transaction answers ROLLBACK.
		return participants.VoteNo, b.errorf("prepare", "the transaction was already aborted (%s): %w", tag, participants.ErrVoteNo)
	case definiteServerError(prepErr):
		return participants.VoteNo, b.voteNo("prepare transaction", prepErr)
	}
	return participants.VoteNo, b.ambiguous(pid, prepErr)
}

// xidSQL reads the branch's xid (NULL when it wrote nothing) before PREPARE.
const xidSQL = `SELECT pg_current_xact_id_if_assigned()::text`

// prepared records a YES vote: the branch's xid is its receipt, and this
// process remembers it for CommitPrepared calls that come without one.
// The caller holds b.mu.
func (b *branch) prepared(xid string) {
	b.state = statePrepared
	b.xid = xid
	if x, err := strconv.ParseUint(xid, 10, 64); err == nil {
		b.p.xids.put(b.gid, x)
	}
	b.p.log.Debug("prepared branch", slog.String("gid", b.gid), slog.String("xid", xid))
}

// Receipt implements participants.Receipter: the xid of a branch that voted
// YES, "" otherwise.
func (b *branch) Receipt() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != statePrepared {
		return ""
	}
	return b.xid
}

// unsent returns why nothing may be sent on the branch's connection — it
// is already closed, or ctx is done — or nil. A failure it reports happened
// before anything was written, so the statement certainly did not run.
//
// It is the only proof of "not sent" the adapter uses at COMMIT and PREPARE
// TRANSACTION. pgconn.SafeToRetry is no such proof: pgx v5.12 reports an
// answer lost after the request was written as "conn closed", whose
// SafeToRetry() is true (MultiResultReader.NextResult drops peekMessage's
// read error, asyncClose marks the connection closed, receiveMessage then
// returns the lock error). So once SendBatch or Exec has been called, only
// an ERROR the server answered is a definite failure; everything else is
// ErrAmbiguous (found by the chaos suite: chaos/README.md).
func (b *branch) unsent(ctx context.Context) error {
	if b.conn.Conn().IsClosed() {
		return fmt.Errorf("connection already closed: %w: %w", participants.ErrUnavailable, pgconn.ErrConnClosed)
	}
	return ctx.Err()
}

// ambiguous is the error of a PREPARE TRANSACTION whose outcome is unknown.
func (b *branch) ambiguous(pid uint32, err error) error {
	b.p.log.Warn("connection lost during PREPARE TRANSACTION; the branch may be prepared",
		slog.String("gid", b.gid), slog.Uint64("backend_pid", uint64(pid)), slog.Any("err", err))
	return b.errorf("prepare",
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

// CommitOnePhase commits the branch on its connection: the database's
// commit is the decision. BEGIN (unless sent), the queued statements, the
// GID's commit marker (when markers are on) and COMMIT go in one round trip.
// The marker is inserted inside the transaction, so it exists exactly when
// the transaction committed: Committed answers for a one-phase commit whose
// outcome the caller did not learn. It is inserted only when the
// transaction has an xid (wrote something); a read-only branch records
// nothing. A branch that never executed anything commits trivially.
//
// Errors:
//   - definite (the transaction did not commit): nothing could be sent (see
//     unsent; wraps ErrUnavailable), or the server answered a statement, the
//     marker insert or COMMIT with an ERROR — deferred constraints wrap
//     ErrConstraint, serialization failures ErrConflict, a GID that already
//     has a marker (an abort tombstone of RollbackPrepared or of the
//     Committed fence, or reuse) neither;
//   - ErrAmbiguous for anything else once the batch may have been written:
//     a connection lost or an answer that never came (whatever
//     pgconn.SafeToRetry says), the context ended. Committed(gid) tells
//     the outcome afterwards (with markers on).
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
	if !b.began && len(b.queue) == 0 {
		b.release()
		return nil
	}
	if b.deadlinePassed() {
		b.rollbackAndRelease()
		return b.errorf("commit", "branch deadline passed, rolled back: %w", context.DeadlineExceeded)
	}
	ctx, cancel := p.opContext(ctx, b.phaseTimeout(), b.opts.Deadline)
	defer cancel()
	pid := b.conn.Conn().PgConn().PID()
	if k := p.cfg.Knobs; k != nil && k.BeforeCommit != nil {
		k.BeforeCommit(b.gid, pid)
	}
	if err := b.unsent(ctx); err != nil {
		b.rollbackAndRelease()
		return b.errorf("commit", "not sent, rolled back: %w", err)
	}
	batch := &pgx.Batch{}
	begin := b.queueStatements(batch)
	if p.marker != "" {
		batch.Queue(p.markerInsertSQL, b.gid)
	}
	batch.Queue("COMMIT")
	br := b.conn.SendBatch(ctx, batch)
	results, i, err := b.readQueued(br, begin)
	if err != nil {
		br.Close()
		if definiteServerError(err) {
			// The statement failed at the server: COMMIT was skipped.
			serr := b.executeError(err)
			b.rollbackAndRelease()
			return b.errorf("commit", "%s, rolled back: %w", queuedWhat(i), serr)
		}
		b.release()
		return b.commitAmbiguous(pid, "BEGIN ... COMMIT", err)
	}
	if p.marker != "" {
		var xid string
		merr := br.QueryRow().Scan(&xid)
		switch {
		case merr == nil, errors.Is(merr, pgx.ErrNoRows):
			// Recorded, or no xid: the transaction wrote nothing.
		case definiteServerError(merr) && hasCode(merr, codeReadOnlyTransaction):
			// A READ ONLY transaction wrote nothing: COMMIT was skipped,
			// and rolling back has the same effect.
			br.Close()
			b.rollbackAndRelease()
			b.results = results
			return nil
		case definiteServerError(merr) && hasCode(merr, codeUniqueViolation):
			br.Close()
			b.rollbackAndRelease()
			return b.errorf("commit", "the GID already has a marker (an abort tombstone of RollbackPrepared or Committed, or reuse), rolled back: %w", merr)
		case definiteServerError(merr):
			br.Close()
			b.rollbackAndRelease()
			if r := reason(merr); r != nil {
				return b.errorf("commit", "record commit marker, rolled back: %w: %w", r, merr)
			}
			return b.errorf("commit", "record commit marker, rolled back: %w", merr)
		default:
			br.Close()
			b.release()
			return b.commitAmbiguous(pid, "COMMIT", merr)
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil && cerr != nil && tag.String() != "COMMIT" {
		err = cerr
	}
	b.release()
	switch {
	case err == nil && tag.String() == "COMMIT":
		b.results = results
		return nil
	case err == nil:
		return b.errorf("commit", "the transaction was rolled back (%s)", tag)
	case definiteServerError(err):
		if r := reason(err); r != nil {
			return b.errorf("commit", "rolled back: %w: %w", r, err)
		}
		return b.errorf("commit", "rolled back: %w", err)
	}
	return b.commitAmbiguous(pid, "COMMIT", err)
}

// commitAmbiguous is the error of a one-phase commit whose outcome is unknown.
func (b *branch) commitAmbiguous(pid uint32, what string, err error) error {
	b.p.log.Warn("connection lost during a one-phase commit; outcome unknown",
		slog.String("gid", b.gid), slog.Uint64("backend_pid", uint64(pid)), slog.Any("err", err))
	return b.errorf("commit", "no answer to %s, the transaction may or may not have committed: %w: %w",
		what, participants.ErrAmbiguous, err)
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
