// Package postgres is the PostgreSQL participant: it implements
// participants.Participant with pgx v5 (pgxpool) and PREPARE TRANSACTION.
//
// The package has few exported types: Config (with TestingKnobs) and
// Participant, opened with Open. Branches are returned as
// participants.Branch.
//
// # Branches
//
// A branch holds one pooled connection with an open transaction at the
// requested isolation (BEGIN is sent together with the first statement, in
// one round trip). Execute runs OpSQL operations only, one statement each,
// in QueryExecModeExec: no named prepared statements are created, so
// one-off statements do not fill a statement cache. Statements that cannot
// be prepared are rejected before they are sent (CheckStatement). Any
// Execute error marks the branch failed: PostgreSQL aborts the transaction
// anyway. After Prepare, CommitOnePhase or Rollback the branch holds no
// connection.
//
// Prepare first reads the branch's xid; if the transaction has none it
// wrote nothing, so it is committed at once and votes READ_ONLY. Otherwise
// it runs PREPARE TRANSACTION 'gid' and, voting YES, gives the xid as the
// branch's receipt (participants.Receipter). Server errors at PREPARE (deferred constraints,
// serialization failures) are definite NO votes; any other failure once
// PREPARE may have been written is ErrAmbiguous — pgconn.SafeToRetry is not
// trusted there (see branch.unsent). The same holds for COMMIT in
// CommitOnePhase.
//
// # Phase two
//
// CommitPrepared, CommitPreparedReceipt and RollbackPrepared run on any
// pooled connection and are idempotent. COMMIT PREPARED answering 42704 (no
// such prepared transaction) is success only if the adapter can tell the
// transaction committed: by pg_xact_status of its xid — the receipt the
// coordinator logged with its decision, or the xid this process saw at
// prepare or in pg_prepared_xacts — or by a commit marker row. Otherwise
// the answer is ErrNotPrepared.
// 55000 (the prepared transaction is busy in another session) and every
// connection failure are ErrUnavailable: back off, recheck leadership,
// retry.
//
// # Commit records
//
// With markers on, every one-phase commit of a GID leaves its marker row,
// written in the committing transaction itself, before COMMIT, in the same
// round trip. Committed reads it, so the coordinator can tell a one-phase
// commit whose answer was lost (it logs no decision for one) from one that
// never happened. Committed is a fence: without a commit marker it inserts
// an abort tombstone before answering false, so a COMMIT still in flight
// for that GID fails its marker insert — false stays true. Two-phase
// branches write no marker: the coordinator's decision log, which holds
// their receipts, is their commit record. Markers are kept
// MarkerRetention; after that Committed answers false. Without markers
// Committed returns an error wrapping ErrUnsupported: the adapter cannot
// tell.
//
// # Limits
//
// Every call is bounded: connection setup by ConnectTimeout, pool waits by
// AcquireTimeout, statements by StatementTimeout (server side) plus a
// client-side grace, lock waits by LockTimeout, phase calls by
// PhaseTimeout, results by MaxResultRows, SQL text by MaxStatementBytes.
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
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/txcoord/txcoord/participants"
)

// minServerVersion: pg_current_xact_id_if_assigned, pg_xact_status(xid8)
// and pg_current_snapshot arrived in PostgreSQL 13.
const minServerVersion = 130000

// markerGCBatch bounds the rows one marker collection deletes, so one run
// stays short and does not hold many row locks; a backlog drains over
// several runs.
const markerGCBatch = 10_000

// clientGrace is added to StatementTimeout for the client-side bound of a
// statement, so the server's statement_timeout (a clean, definite error)
// normally fires first.
const clientGrace = 2 * time.Second

// Participant is one PostgreSQL database taking part in distributed
// transactions. It is safe for concurrent use. Prepared branches live in
// the database and survive Close and process restarts.
type Participant struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool // branches (and start-up checks)
	// phase is the pool of phase two, InDoubt and marker collection: they
	// never wait for a connection behind open branches, which clients hold
	// (and which may be waiting for a commit slot).
	phase  *pgxpool.Pool
	marker string // schema-qualified marker table, "" when disabled

	// commitSlots bounds two-phase transactions in flight (EnterCommit);
	// nil when MaxCommitting is 0.
	commitSlots chan struct{}

	// checked caches CheckStatement verdicts (checkStatement).
	checkMu sync.Mutex
	checked map[string]error

	// lifetime is canceled by Close: in-flight branch operations abort and
	// the marker collector stops.
	lifetime context.Context
	stop     context.CancelFunc
	gcDone   chan struct{}

	mu       sync.Mutex
	closed   bool
	branches map[*branch]struct{}

	// xids remembers the xid of GIDs this process prepared or listed, for
	// CommitPrepared calls that come without a receipt.
	xids *xidMemo

	markerInsertSQL string
}

var (
	_ participants.Participant      = (*Participant)(nil)
	_ participants.CommitRecorder   = (*Participant)(nil)
	_ participants.ReceiptCommitter = (*Participant)(nil)
	_ participants.Receipter        = (*branch)(nil)
)

// Open validates cfg, creates the pool, checks the server (version,
// max_prepared_transactions > 0), creates the marker table if it is
// missing and starts the marker collector. The DSN's password is never
// logged. A nil logger discards logs.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Participant, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("participant", cfg.Name))

	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres participant %s: DSN: %w", cfg.Name, err)
	}
	pc.MaxConns = cfg.MaxConns
	pc.MinConns = cfg.MinConns
	cc := pc.ConnConfig
	cc.ConnectTimeout = cfg.ConnectTimeout
	// One-off statements: no named prepared statements, no cache to fill.
	cc.DefaultQueryExecMode = pgx.QueryExecModeExec
	cc.StatementCacheCapacity = 0
	cc.DescriptionCacheCapacity = 0
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["statement_timeout"] = msString(cfg.StatementTimeout)
	cc.RuntimeParams["lock_timeout"] = msString(cfg.LockTimeout)
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = msString(cfg.IdleInTransactionTimeout)
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "txcoord-" + cfg.Name
	}
	where := []any{
		slog.String("host", cc.Host), slog.Int("port", int(cc.Port)),
		slog.String("database", cc.Database), slog.String("user", cc.User),
	}

	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres participant %s: create pool: %w: %w", cfg.Name, participants.ErrUnavailable, err)
	}
	ppc := pc.Copy()
	ppc.MaxConns = cfg.PhaseConns
	ppc.MinConns = min(2, cfg.PhaseConns)
	ppc.ConnConfig.RuntimeParams["application_name"] = pc.ConnConfig.RuntimeParams["application_name"] + "-phase2"
	phase, err := pgxpool.NewWithConfig(ctx, ppc)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres participant %s: create phase-two pool: %w: %w", cfg.Name, participants.ErrUnavailable, err)
	}
	lifetime, stop := context.WithCancel(context.Background())
	p := &Participant{
		cfg:      cfg,
		log:      logger,
		pool:     pool,
		phase:    phase,
		lifetime: lifetime,
		stop:     stop,
		gcDone:   make(chan struct{}),
		branches: map[*branch]struct{}{},
		xids:     newXIDMemo(xidMemoSize),
		checked:  map[string]error{},
	}
	mpt, err := p.checkServer(ctx)
	if err == nil && cfg.MarkerTable != "" {
		err = p.ensureMarkerTable(ctx)
	}
	if err != nil {
		stop()
		pool.Close()
		phase.Close()
		return nil, err
	}
	if cfg.MaxCommitting > 0 {
		p.commitSlots = make(chan struct{}, cfg.MaxCommitting)
	}
	if mpt < int(cfg.MaxConns) {
		logger.Warn("max_prepared_transactions is below MaxConns: prepares beyond it vote NO",
			slog.Int("max_prepared_transactions", mpt), slog.Int("max_conns", int(cfg.MaxConns)))
	}
	if p.marker != "" {
		go p.collectMarkers()
	} else {
		close(p.gcDone)
	}
	logger.Info("postgres participant open", append(where,
		slog.Int("max_prepared_transactions", mpt), slog.String("marker_table", p.marker))...)
	return p, nil
}

func msString(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// checkServer verifies the server version and that prepared transactions
// are enabled, and returns max_prepared_transactions.
func (p *Participant) checkServer(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout+p.cfg.PhaseTimeout)
	defer cancel()
	var mpt, version int
	var db, user string
	err := p.pool.QueryRow(ctx, `SELECT current_setting('max_prepared_transactions')::int,
		current_setting('server_version_num')::int, current_database(), current_user`).Scan(&mpt, &version, &db, &user)
	if pe := pgErr(err); pe != nil && (hasClass(pe.Code, "28") || pe.Code == "3D000") {
		// The server answered and refused who we are (class 28: bad
		// password, no such role, pg_hba) or which database: waiting will
		// not fix that, so it is not ErrUnavailable.
		return 0, fmt.Errorf("postgres participant %s: the server refused the connection (fix the dsn's user, "+
			"password or database): %w", p.cfg.Name, err)
	}
	if err != nil {
		return 0, fmt.Errorf("postgres participant %s: connect and check server: %w: %w",
			p.cfg.Name, participants.ErrUnavailable, err)
	}
	if version < minServerVersion {
		return 0, fmt.Errorf("postgres participant %s: server version %d is too old: PostgreSQL 13 or later is required",
			p.cfg.Name, version)
	}
	if mpt <= 0 {
		return 0, preparedXactsDisabled(p.cfg.Name, db)
	}
	return mpt, nil
}

func preparedXactsDisabled(name, db string) error {
	return fmt.Errorf("postgres participant %s (database %s): %w: two-phase commit needs prepared transactions; "+
		"set max_prepared_transactions = 128 (at least the number of transactions that may be prepared at once) "+
		"in postgresql.conf (or ALTER SYSTEM SET max_prepared_transactions = 128) and restart PostgreSQL",
		name, db, ErrPreparedTransactionsDisabled)
}

// markerDDL creates the marker table. outcome 'c' rows are written by a
// one-phase commit inside its own transaction (visible iff it committed);
// 'a' rows are abort tombstones written by RollbackPrepared of an unknown
// GID and by Committed. (Two-phase branches of earlier versions wrote 'c'
// rows too; CommitPrepared still reads them when it knows no xid.)
const markerDDL = `CREATE TABLE IF NOT EXISTS %[1]s (
	gid        text PRIMARY KEY,
	outcome    "char" NOT NULL CHECK (outcome IN ('c', 'a')),
	xid        xid8,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (created_at)`

func (p *Participant) ensureMarkerTable(ctx context.Context) error {
	parts, err := splitQualified(p.cfg.MarkerTable)
	if err != nil {
		panic("postgres: MarkerTable passed Validate but does not split: " + err.Error())
	}
	table := parts[0] + "." + parts[1]
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PhaseTimeout)
	defer cancel()
	var exists bool
	if err := p.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return fmt.Errorf("postgres participant %s: look up marker table %s: %w: %w",
			p.cfg.Name, table, participants.ErrUnavailable, err)
	}
	if !exists {
		ddl := fmt.Sprintf(markerDDL, table, parts[1]+"_created_at_idx")
		// Simple protocol: two statements in one implicit transaction.
		_, err := p.pool.Exec(ctx, ddl, pgx.QueryExecModeSimpleProtocol)
		switch {
		case err == nil:
			p.log.Info("created marker table", slog.String("table", table))
		case hasCode(err, codeDuplicateTable), hasCode(err, codeUniqueViolation):
			// Another process created it at the same moment.
		default:
			return fmt.Errorf("postgres participant %s: create marker table %s (create it yourself with:\n%s\n"+
				"or set MarkerTable to \"\" to run without markers): %w",
				p.cfg.Name, table, fmt.Sprintf(markerDDL, table, parts[1]+"_created_at_idx"), err)
		}
	}
	p.marker = table
	p.markerInsertSQL = `INSERT INTO ` + table + ` (gid, outcome, xid)
		SELECT $1, 'c', x FROM (SELECT pg_current_xact_id_if_assigned() AS x) s
		WHERE x IS NOT NULL RETURNING xid::text`
	return nil
}

// EnterCommit takes one of MaxCommitting slots for a two-phase transaction
// (admission control: the coordinator holds it from before the branch
// prepares until its COMMIT or ROLLBACK PREPARED is acknowledged),
// waiting in arrival order until one is free, ctx ends or the participant
// closes. With MaxCommitting 0 it returns at once. Every nil return must
// be matched by one LeaveCommit.
func (p *Participant) EnterCommit(ctx context.Context) error {
	if p.commitSlots == nil {
		return nil
	}
	select {
	case p.commitSlots <- struct{}{}:
		return nil
	default:
	}
	select {
	case p.commitSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres %s: %d two-phase transactions in flight (MaxCommitting): %w",
			p.cfg.Name, p.cfg.MaxCommitting, ctx.Err())
	case <-p.lifetime.Done():
		return p.closedError()
	}
}

// LeaveCommit gives back a slot taken by EnterCommit.
func (p *Participant) LeaveCommit() {
	if p.commitSlots != nil {
		<-p.commitSlots
	}
}

// prepareStatements makes the adapter's own per-branch statements — the
// xid read of Prepare and the marker insert of a one-phase commit — named
// prepared statements of the connection, once per connection (pgx keeps
// them by their SQL text and uses them, with Bind and Execute only,
// wherever that text is sent): PostgreSQL then does not parse and plan them
// for every branch (the marker insert: about 70 µs of its CPU on the
// reference machine). The marker insert's only parameter is the GID, a
// string for a text column, and the xid read has none, so preparing them
// changes no encoding. Client statements are not prepared: pgx would encode
// their arguments by the parameter types the server inferred, which accepts
// other Go values than unnamed statements do. It runs when a branch takes
// its connection, outside any transaction; on an already prepared
// connection it costs nothing.
func (p *Participant) prepareStatements(ctx context.Context, conn *pgxpool.Conn, deadline time.Time) error {
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, deadline)
	defer cancel()
	if _, err := conn.Conn().Prepare(ctx, xidSQL, xidSQL); err != nil {
		return err
	}
	if p.marker == "" {
		return nil
	}
	_, err := conn.Conn().Prepare(ctx, p.markerInsertSQL, p.markerInsertSQL)
	return err
}

// Name is the configured participant name.
func (p *Participant) Name() string { return p.cfg.Name }

// Kind is participants.KindPostgres.
func (p *Participant) Kind() participants.Kind { return participants.KindPostgres }

// Begin validates gid and opts and takes a pooled connection for the
// branch; BEGIN itself is sent with the first Execute. Waiting for a free
// connection is bounded by AcquireTimeout; past it, or when the database
// cannot be reached, the error wraps ErrUnavailable. The branch must be
// ended by Prepare, CommitOnePhase or Rollback, or its connection stays
// taken until Close.
func (p *Participant) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	if err := ValidateGID(gid); err != nil {
		return nil, fmt.Errorf("postgres %s: begin: %w", p.cfg.Name, err)
	}
	begin, ok := beginSQL(opts.Isolation)
	if !ok {
		return nil, fmt.Errorf("postgres %s: begin %s: isolation %d: %w", p.cfg.Name, gid, int(opts.Isolation), participants.ErrBadOperation)
	}
	if err := p.checkOpen(); err != nil {
		return nil, fmt.Errorf("begin %s: %w", gid, err)
	}
	actx, cancel := p.opContext(ctx, p.cfg.AcquireTimeout, opts.Deadline)
	conn, err := p.pool.Acquire(actx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("postgres %s: begin %s: acquire connection: %w: %w", p.cfg.Name, gid, participants.ErrUnavailable, err)
	}
	if err := p.prepareStatements(ctx, conn, opts.Deadline); err != nil {
		conn.Release()
		return nil, fmt.Errorf("postgres %s: begin %s: prepare the adapter's statements: %w: %w", p.cfg.Name, gid, participants.ErrUnavailable, err)
	}
	b := &branch{p: p, gid: gid, opts: opts, begin: begin, conn: conn}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Release()
		return nil, fmt.Errorf("begin %s: %w", gid, p.closedError())
	}
	p.branches[b] = struct{}{}
	p.mu.Unlock()
	return b, nil
}

func beginSQL(iso participants.Isolation) (string, bool) {
	switch iso {
	case participants.ReadCommitted:
		return "BEGIN ISOLATION LEVEL READ COMMITTED", true
	case participants.RepeatableRead:
		return "BEGIN ISOLATION LEVEL REPEATABLE READ", true
	case participants.Serializable:
		return "BEGIN ISOLATION LEVEL SERIALIZABLE", true
	}
	return "", false
}

// CommitPrepared is CommitPreparedReceipt without a receipt: only the xids
// this process saw (at prepare, or listed by InDoubt) and commit markers
// can tell a committed GID from a missing one.
func (p *Participant) CommitPrepared(ctx context.Context, gid string) error {
	return p.CommitPreparedReceipt(ctx, gid, "")
}

// CommitPreparedReceipt runs COMMIT PREPARED on any pooled connection;
// receipt is the branch's xid as its Prepare gave it (Receipt), or "".
//
// Contract: call it only after a durable commit decision, for a branch that
// voted YES; retry it until it returns nil or ErrNotPrepared. It returns:
//   - nil when the transaction is committed, by this call or an earlier one:
//     COMMIT PREPARED succeeded, or it answered 42704 (no such prepared
//     transaction) and pg_xact_status of the xid (the receipt, else one this
//     process saw) says committed, or — with no xid known — the GID's
//     commit marker is visible. A retry after a lost answer or a
//     coordinator failover is the normal case of 42704.
//   - an error wrapping ErrNotPrepared when 42704 came and the adapter
//     cannot tell that the GID committed: it was rolled back
//     (pg_xact_status 'aborted', or an abort tombstone), never prepared,
//     its xid is older than the server's commit-status horizon (or, with no
//     xid known, no marker exists). The decision says commit, so this is a
//     protocol violation or an operator's intervention to report.
//   - an error wrapping ErrUnavailable for 55000 (the prepared transaction is
//     busy in another session, e.g. a concurrent COMMIT PREPARED or a
//     PREPARE still finishing), for lost connections (including one lost
//     while COMMIT PREPARED was in flight: the retry resolves it through
//     42704) and for other transient server errors: back off, recheck
//     leadership, retry.
//   - other errors (permission denied, the GID belongs to another database)
//     are configuration problems that retrying does not fix.
func (p *Participant) CommitPreparedReceipt(ctx context.Context, gid, receipt string) error {
	if err := ValidateGID(gid); err != nil {
		return fmt.Errorf("postgres %s: commit prepared: %w", p.cfg.Name, err)
	}
	if err := p.checkOpen(); err != nil {
		return fmt.Errorf("commit prepared %s: %w", gid, err)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, time.Time{})
	defer cancel()
	_, err := p.phase.Exec(ctx, "COMMIT PREPARED "+quoteLiteral(gid))
	switch {
	case err == nil:
		p.log.Debug("committed prepared branch", slog.String("gid", gid))
		return nil
	case hasCode(err, codeUndefinedObject):
		return p.commitWithoutPrepared(ctx, gid, receipt)
	}
	return p.phaseTwoError("commit prepared", gid, err)
}

// commitWithoutPrepared decides what a 42704 answer to COMMIT PREPARED
// means: by the xid's status when an xid is known (the receipt, else this
// process's memo), else by the GID's marker row.
func (p *Participant) commitWithoutPrepared(ctx context.Context, gid, receipt string) error {
	xid, ok := p.xids.get(gid)
	if receipt != "" {
		x, err := strconv.ParseUint(receipt, 10, 64)
		if err != nil {
			return fmt.Errorf("postgres %s: commit prepared %s: the receipt %q is not an xid: %w",
				p.cfg.Name, gid, receipt, participants.ErrNotPrepared)
		}
		xid, ok = x, true
	}
	if !ok && p.marker != "" {
		var outcome string
		err := p.phase.QueryRow(ctx, `SELECT outcome::text FROM `+p.marker+` WHERE gid = $1`, gid).Scan(&outcome)
		switch {
		case err == nil && outcome == "c":
			p.log.Debug("prepared branch was already committed (marker)", slog.String("gid", gid))
			return nil
		case err == nil:
			p.log.Error("commit of a rolled-back branch", slog.String("gid", gid))
			return fmt.Errorf("postgres %s: commit prepared %s: the branch was rolled back (abort tombstone): %w",
				p.cfg.Name, gid, participants.ErrNotPrepared)
		case errors.Is(err, pgx.ErrNoRows):
			p.log.Error("commit of a branch that is neither prepared nor known committed", slog.String("gid", gid))
			return fmt.Errorf("postgres %s: commit prepared %s: no prepared transaction and no commit marker "+
				"(rolled back, never prepared, or committed more than MarkerRetention=%v ago): %w",
				p.cfg.Name, gid, p.cfg.MarkerRetention, participants.ErrNotPrepared)
		}
		return fmt.Errorf("postgres %s: commit prepared %s: 42704, then reading the commit marker: %w: %w",
			p.cfg.Name, gid, participants.ErrUnavailable, err)
	}
	if !ok {
		p.log.Error("commit of a branch whose outcome this process cannot tell (no receipt, no marker table)", slog.String("gid", gid))
		return fmt.Errorf("postgres %s: commit prepared %s: no prepared transaction, and with neither its xid (receipt) "+
			"nor a marker table this process cannot tell whether it committed: %w", p.cfg.Name, gid, participants.ErrNotPrepared)
	}
	status, err := p.xactStatus(ctx, xid)
	if err != nil {
		return fmt.Errorf("postgres %s: commit prepared %s: 42704, then pg_xact_status(%d): %w: %w",
			p.cfg.Name, gid, xid, participants.ErrUnavailable, err)
	}
	switch {
	case status != nil && *status == "committed":
		p.log.Debug("prepared branch was already committed (pg_xact_status)", slog.String("gid", gid), slog.Uint64("xid", xid))
		return nil
	case status != nil && *status == "in progress":
		return fmt.Errorf("postgres %s: commit prepared %s: xid %d still in progress: %w",
			p.cfg.Name, gid, xid, participants.ErrUnavailable)
	}
	s := "unknown (too old)"
	if status != nil {
		s = *status
	}
	p.log.Error("commit of a branch that is not committed", slog.String("gid", gid), slog.Uint64("xid", xid), slog.String("status", s))
	return fmt.Errorf("postgres %s: commit prepared %s: no prepared transaction; xid %d is %s: %w",
		p.cfg.Name, gid, xid, s, participants.ErrNotPrepared)
}

// xactStatus is pg_xact_status(xid): committed, aborted, in progress, or
// nil when the xid is older than the server's commit-status horizon.
func (p *Participant) xactStatus(ctx context.Context, xid uint64) (*string, error) {
	var status *string
	err := p.phase.QueryRow(ctx, `SELECT pg_xact_status($1::text::xid8)`, strconv.FormatUint(xid, 10)).Scan(&status)
	return status, err
}

// RollbackPrepared runs ROLLBACK PREPARED on any pooled connection.
// Idempotent: 42704 (no such prepared transaction) is success. With a
// marker table it then writes an abort tombstone for the GID, so that a
// one-phase COMMIT of the GID still in flight on a lost connection fails its
// marker insert (if it is holding its marker row, the tombstone waits up to
// LockTimeout and the call returns ErrUnavailable). A PREPARE still in
// flight is not stopped (two-phase branches write no marker): it leaves a
// prepared branch without a commit decision, which the coordinator's
// in-doubt scan rolls back. Rolling back a GID known to have committed — by
// its commit marker (one phase), or by the xid this process saw it prepared
// with — is refused with an error. 55000 (busy) and connection failures
// wrap ErrUnavailable.
func (p *Participant) RollbackPrepared(ctx context.Context, gid string) error {
	if err := ValidateGID(gid); err != nil {
		return fmt.Errorf("postgres %s: rollback prepared: %w", p.cfg.Name, err)
	}
	if err := p.checkOpen(); err != nil {
		return fmt.Errorf("rollback prepared %s: %w", gid, err)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, time.Time{})
	defer cancel()
	_, err := p.phase.Exec(ctx, "ROLLBACK PREPARED "+quoteLiteral(gid))
	switch {
	case err == nil:
		p.log.Debug("rolled back prepared branch", slog.String("gid", gid))
		return nil
	case !hasCode(err, codeUndefinedObject):
		return p.phaseTwoError("rollback prepared", gid, err)
	}
	if xid, ok := p.xids.get(gid); ok {
		// This process saw the branch prepared: its xid tells a commit.
		status, err := p.xactStatus(ctx, xid)
		switch {
		case err != nil:
			return p.phaseTwoError("rollback prepared (xid status)", gid, err)
		case status != nil && *status == "committed":
			p.log.Error("rollback of a committed branch refused", slog.String("gid", gid), slog.Uint64("xid", xid))
			return fmt.Errorf("postgres %s: rollback prepared %s: the branch is committed (xid %d)", p.cfg.Name, gid, xid)
		}
	}
	if p.marker == "" {
		return nil
	}
	tag, err := p.phase.Exec(ctx, `INSERT INTO `+p.marker+` (gid, outcome) VALUES ($1, 'a') ON CONFLICT (gid) DO NOTHING`, gid)
	if err != nil {
		return p.phaseTwoError("rollback prepared (abort tombstone)", gid, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var outcome string
	err = p.phase.QueryRow(ctx, `SELECT outcome::text FROM `+p.marker+` WHERE gid = $1`, gid).Scan(&outcome)
	switch {
	case err == nil && outcome == "c":
		p.log.Error("rollback of a committed branch refused", slog.String("gid", gid))
		return fmt.Errorf("postgres %s: rollback prepared %s: the branch is committed (commit marker present)", p.cfg.Name, gid)
	case err == nil, errors.Is(err, pgx.ErrNoRows):
		return nil // tombstone already there (or collected meanwhile)
	}
	return p.phaseTwoError("rollback prepared (read marker)", gid, err)
}

// Committed implements participants.CommitRecorder as a fence: it answers
// true when the GID's commit marker exists, and otherwise first inserts an
// abort tombstone for the GID and only then answers false, so that the GID
// can no longer commit in one phase. The commit marker exists exactly when
// a one-phase commit (CommitOnePhase) of that GID committed and wrote
// something (and for two-phase branches prepared by earlier versions),
// for MarkerRetention after
// the commit (the GC deletes it then: past the retention the answer is
// false, as for a transaction that never committed, i.e. presumed abort;
// keep MarkerRetention at least the coordinator's retention).
//
// The tombstone is INSERT ... ON CONFLICT (gid) DO NOTHING, then the row is
// read back in a new statement (a new snapshot):
//   - no row: the tombstone is in; a later or still running one-phase
//     commit of the GID fails its marker insert (unique violation: a
//     definite failure, nothing committed); a two-phase branch of the GID
//     is not stopped, but its commit record is the coordinator's decision,
//     which the caller reads first (participants.CommitRecorder);
//   - a row written by a transaction still in progress — a one-phase commit
//     whose COMMIT has not run yet: the insert waits for it, bounded by
//     LockTimeout (and StatementTimeout, PhaseTimeout); when it ends the
//     answer follows it (committed: true; rolled back: the tombstone goes
//     in, false), and when the wait times out the error wraps
//     ErrUnavailable: the outcome is not decided yet, so there is no answer;
//   - a committed row: its outcome ('c' true, 'a' false).
//
// A read-only branch records nothing and answers false (it has nothing to
// commit). It runs on the phase-two pool; every failure wraps
// ErrUnavailable. Without a marker table it returns an error wrapping
// ErrUnsupported, so that the caller reports the outcome as unknown rather
// than aborted.
func (p *Participant) Committed(ctx context.Context, gid string) (bool, error) {
	if err := ValidateGID(gid); err != nil {
		return false, fmt.Errorf("postgres %s: committed: %w", p.cfg.Name, err)
	}
	if p.marker == "" {
		return false, fmt.Errorf("postgres %s: committed %s: commit markers are off (MarkerTable is empty), "+
			"so whether the GID committed cannot be told: %w", p.cfg.Name, gid, participants.ErrUnsupported)
	}
	if err := p.checkOpen(); err != nil {
		return false, fmt.Errorf("committed %s: %w", gid, err)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, time.Time{})
	defer cancel()
	// Two rounds at most: the row read back can only be missing if the
	// collector deleted it in between; fence again then.
	for range 2 {
		tag, err := p.phase.Exec(ctx, `INSERT INTO `+p.marker+` (gid, outcome) VALUES ($1, 'a') ON CONFLICT (gid) DO NOTHING`, gid)
		if err != nil {
			return false, fmt.Errorf("postgres %s: committed %s: write the abort tombstone (a transaction of this GID "+
				"may still be committing or be prepared): %w: %w", p.cfg.Name, gid, participants.ErrUnavailable, err)
		}
		if tag.RowsAffected() == 1 {
			p.log.Debug("committed: no commit marker, abort tombstone written", slog.String("gid", gid))
			return false, nil
		}
		var outcome string
		err = p.phase.QueryRow(ctx, `SELECT outcome::text FROM `+p.marker+` WHERE gid = $1`, gid).Scan(&outcome)
		switch {
		case err == nil:
			return outcome == "c", nil
		case errors.Is(err, pgx.ErrNoRows):
			continue
		}
		return false, fmt.Errorf("postgres %s: committed %s: read the commit marker: %w: %w",
			p.cfg.Name, gid, participants.ErrUnavailable, err)
	}
	return false, fmt.Errorf("postgres %s: committed %s: the marker row kept disappearing: %w",
		p.cfg.Name, gid, participants.ErrUnavailable)
}

// phaseTwoError wraps an error of a phase-two call: 55000 (busy) and
// connection or transient failures are ErrUnavailable.
func (p *Participant) phaseTwoError(what, gid string, err error) error {
	if hasCode(err, codeObjectInUse) || hasCode(err, codeLockNotAvailable) || reason(err) == participants.ErrUnavailable {
		p.log.Debug(what+" will be retried", slog.String("gid", gid), slog.Any("err", err))
		return fmt.Errorf("postgres %s: %s %s: %w: %w", p.cfg.Name, what, gid, participants.ErrUnavailable, err)
	}
	p.log.Error(what+" failed", slog.String("gid", gid), slog.Any("err", err))
	return fmt.Errorf("postgres %s: %s %s: %w", p.cfg.Name, what, gid, err)
}

// InDoubt lists the prepared transactions of this participant's database,
// owned by the connecting role, whose GID starts with prefix ('_' and '%'
// in the prefix match themselves), oldest first, with their PREPARE time.
// The list is bounded by the server's max_prepared_transactions.
func (p *Participant) InDoubt(ctx context.Context, prefix string) ([]participants.InDoubtBranch, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("postgres %s: in doubt: %w", p.cfg.Name, err)
	}
	if err := p.checkOpen(); err != nil {
		return nil, fmt.Errorf("in doubt: %w", err)
	}
	ctx, cancel := p.opContext(ctx, p.cfg.PhaseTimeout, time.Time{})
	defer cancel()
	rows, err := p.phase.Query(ctx, `SELECT gid, prepared, transaction::text, pg_snapshot_xmax(pg_current_snapshot())::text
		FROM pg_prepared_xacts
		WHERE database = current_database() AND owner = current_user AND gid LIKE $1 ESCAPE '\'
		ORDER BY prepared, gid`, likePrefixPattern(prefix))
	if err != nil {
		return nil, fmt.Errorf("postgres %s: in doubt: %w: %w", p.cfg.Name, participants.ErrUnavailable, err)
	}
	var out []participants.InDoubtBranch
	for rows.Next() {
		var gid, xid32, xmax string
		var at time.Time
		if err := rows.Scan(&gid, &at, &xid32, &xmax); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres %s: in doubt: scan: %w", p.cfg.Name, err)
		}
		ib := participants.InDoubtBranch{GID: gid, PreparedAt: at}
		if full, ok := fullXID(xid32, xmax); ok {
			p.xids.put(gid, full)
			ib.Receipt = strconv.FormatUint(full, 10)
		}
		out = append(out, ib)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres %s: in doubt: %w: %w", p.cfg.Name, participants.ErrUnavailable, err)
	}
	return out, nil
}

// fullXID widens a 32-bit xid to the 64-bit xid8 using the snapshot xmax as
// reference (xmax is the oldest not yet completed xid plus in-progress ones
// may lie above it): every live xid is within 2^31 of it, so the nearest
// 64-bit value with the same low 32 bits is the right one.
func fullXID(xid32, xmax string) (uint64, bool) {
	x, err1 := strconv.ParseUint(xid32, 10, 32)
	ref, err2 := strconv.ParseUint(xmax, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const half = 1 << 31
	full := ref&^0xffffffff | x
	switch {
	case full > ref && full-ref > half:
		if full < 1<<32 {
			return 0, false
		}
		full -= 1 << 32
	case full < ref && ref-full > half:
		full += 1 << 32
	}
	return full, true
}

// Close rolls back and releases every open, unprepared branch (in-flight
// operations on them are canceled), stops the marker collector and closes
// the pool. Prepared branches survive in the database. Close is idempotent;
// later calls on the participant fail with ErrUnavailable.
func (p *Participant) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	open := make([]*branch, 0, len(p.branches))
	for b := range p.branches {
		open = append(open, b)
	}
	p.mu.Unlock()

	p.stop()
	for _, b := range open {
		b.abandon()
	}
	<-p.gcDone
	p.pool.Close()
	p.phase.Close()
	p.log.Info("postgres participant closed", slog.Int("abandoned_branches", len(open)))
	return nil
}

func (p *Participant) checkOpen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.closedError()
	}
	return nil
}

func (p *Participant) closedError() error {
	return fmt.Errorf("postgres %s: participant is closed: %w", p.cfg.Name, participants.ErrUnavailable)
}

func (p *Participant) forget(b *branch) {
	p.mu.Lock()
	delete(p.branches, b)
	p.mu.Unlock()
}

// opContext bounds ctx by timeout, by deadline when set, and by the
// participant's lifetime.
func (p *Participant) opContext(ctx context.Context, timeout time.Duration, deadline time.Time) (context.Context, context.CancelFunc) {
	d := time.Now().Add(timeout)
	if !deadline.IsZero() && deadline.Before(d) {
		d = deadline
	}
	ctx, cancel := context.WithDeadline(ctx, d)
	stop := context.AfterFunc(p.lifetime, cancel)
	return ctx, func() { stop(); cancel() }
}

// checkCacheSize and checkCacheMaxLen bound the cache of CheckStatement
// verdicts: at most checkCacheSize texts of at most checkCacheMaxLen bytes
// (4 MiB); when full it is emptied.
const (
	checkCacheSize   = 1024
	checkCacheMaxLen = 4096
)

// checkStatement is CheckStatement with a cache: the verdict depends on the
// text alone, and services send the same statements again and again, so
// they are lexed once.
func (p *Participant) checkStatement(sql string) error {
	if len(sql) > checkCacheMaxLen {
		return CheckStatement(sql)
	}
	p.checkMu.Lock()
	err, ok := p.checked[sql]
	p.checkMu.Unlock()
	if ok {
		return err
	}
	err = CheckStatement(sql)
	p.checkMu.Lock()
	if len(p.checked) >= checkCacheSize {
		clear(p.checked)
	}
	p.checked[sql] = err
	p.checkMu.Unlock()
	return err
}

// collectMarkers deletes markers and tombstones older than MarkerRetention,
// at most markerGCBatch per MarkerGCInterval, until Close.
func (p *Participant) collectMarkers() {
	defer close(p.gcDone)
	t := time.NewTicker(p.cfg.MarkerGCInterval)
	defer t.Stop()
	del := `DELETE FROM ` + p.marker + ` WHERE gid IN (SELECT gid FROM ` + p.marker +
		` WHERE created_at < now() - make_interval(secs => $1) LIMIT ` + strconv.Itoa(markerGCBatch) + `)`
	for {
		select {
		case <-p.lifetime.Done():
			return
		case <-t.C:
		}
		ctx, cancel := p.opContext(p.lifetime, p.cfg.PhaseTimeout, time.Time{})
		tag, err := p.phase.Exec(ctx, del, p.cfg.MarkerRetention.Seconds())
		cancel()
		switch {
		case err != nil && p.lifetime.Err() == nil:
			p.log.Warn("marker collection failed", slog.Any("err", err))
		case err == nil && tag.RowsAffected() > 0:
			p.log.Debug("collected markers", slog.Int64("rows", tag.RowsAffected()))
		}
	}
}

// xidMemoSize bounds the xids remembered without a marker table (about
// 100 bytes each); the oldest are forgotten first.
const xidMemoSize = 1 << 16

// xidMemo is a bounded FIFO map from GID to xid8.
type xidMemo struct {
	mu    sync.Mutex
	m     map[string]uint64
	ring  []string
	next  int
	limit int
}

func newXIDMemo(limit int) *xidMemo {
	return &xidMemo{m: map[string]uint64{}, limit: limit}
}

func (x *xidMemo) put(gid string, xid uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.m[gid]; ok {
		x.m[gid] = xid
		return
	}
	if len(x.ring) < x.limit {
		x.ring = append(x.ring, gid)
	} else {
		delete(x.m, x.ring[x.next])
		x.ring[x.next] = gid
		x.next = (x.next + 1) % x.limit
	}
	x.m[gid] = xid
}

func (x *xidMemo) get(gid string) (uint64, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	v, ok := x.m[gid]
	return v, ok
}
