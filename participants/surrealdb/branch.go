package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/surrealdb/surrealdb.go/pkg/connection"
	"github.com/surrealdb/surrealdb.go/pkg/models"

	"github.com/txcoord/txcoord/participants"
)

// branchState is where a branch is in its life.
type branchState uint8

const (
	stActive       branchState = iota
	stFailed                   // an operation failed: only Rollback
	stPrepared                 // voted YES: phase two goes by GID
	stPrepareNo                // voted NO, definitely nothing prepared
	stPrepareMaybe             // prepare sent, outcome unknown: Rollback goes by GID
	stReadOnlyDone             // voted READ_ONLY
	stCommitted                // committed in one phase
	stCommitMaybe              // one-phase commit sent, outcome unknown
	stRolledBack               // rolled back
)

// record is one record a branch has touched.
type record struct {
	rid models.RecordID
	// version is what the branch first saw: versionAbsent, "" (exists
	// without a version field) or the version. Prepare checks it.
	version    string
	versionSet bool
	// loaded: committed holds the committed image (nil: absent); a record
	// only seen in an OpQuery row has a version but no image yet.
	loaded    bool
	committed map[string]any
	// tableMissing: the table did not exist when the record was loaded.
	tableMissing bool
	read         bool
	written      bool
	deleted      bool
	after        map[string]any // staged content, without id and version
}

// view is the record as this branch sees it: its staged write, else the
// committed image. nil means absent.
func (r *record) view() map[string]any {
	if r.written {
		if r.deleted {
			return nil
		}
		return r.after
	}
	return r.committed
}

// branch implements participants.Branch. Used by one goroutine at a time.
type branch struct {
	p       *Participant
	gid     string
	opts    participants.BranchOptions
	version string
	logger  *slog.Logger

	state branchState
	recs  map[string]*record
	order []*record // first-touch order: deterministic scripts
}

var _ participants.Branch = (*branch)(nil)

func (b *branch) GID() string { return b.gid }

// ctx applies the branch deadline.
func (b *branch) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.opts.Deadline.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, b.opts.Deadline)
}

// expired reports a branch past its deadline. (The contract names an
// ErrTimeout that participants/errors.go does not define; the error wraps
// context.DeadlineExceeded instead.)
func (b *branch) expired() error {
	if !b.opts.Deadline.IsZero() && !b.p.cfg.now().Before(b.opts.Deadline) {
		return fmt.Errorf("branch deadline %s passed: %w", b.opts.Deadline.Format(time.RFC3339Nano), context.DeadlineExceeded)
	}
	return nil
}

func (b *branch) usable() error {
	switch b.state {
	case stActive:
		return nil
	case stFailed:
		return participants.ErrBranchFailed
	}
	return participants.ErrBranchDone
}

func (b *branch) wrap(op string, err error) error {
	return fmt.Errorf("surrealdb %s: %s %s: %w", b.p.cfg.Name, op, b.gid, err)
}

// Execute implements participants.Branch. Record operations load the
// committed record once (one request) and then stage writes in memory; a
// failing operation leaves the branch usable only for Rollback.
func (b *branch) Execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	if err := b.usable(); err != nil {
		return participants.Result{}, b.wrap("execute", err)
	}
	if err := b.expired(); err != nil {
		b.state = stFailed
		return participants.Result{}, b.wrap("execute", err)
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	res, err := b.execute(ctx, op)
	if err != nil {
		b.state = stFailed
		return participants.Result{}, b.wrap("execute "+op.Kind.String(), err)
	}
	return res, nil
}

func (b *branch) execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	switch op.Kind {
	case participants.OpQuery:
		return b.query(ctx, op)
	case participants.OpRead, participants.OpCreate, participants.OpUpsert, participants.OpMerge, participants.OpDelete:
	case participants.OpSQL:
		return participants.Result{}, fmt.Errorf("%w: OpSQL on a SurrealDB participant (use record operations or OpQuery)", participants.ErrUnsupported)
	default:
		return participants.Result{}, fmt.Errorf("%w: unknown operation kind %v", participants.ErrBadOperation, op.Kind)
	}
	rid, err := toRecordID(op.Record)
	if err != nil {
		return participants.Result{}, err
	}
	if b.p.isOwnTable(rid.Table) {
		return participants.Result{}, fmt.Errorf("%w: table %s belongs to the adapter", participants.ErrBadOperation, rid.Table)
	}
	var content map[string]any
	switch op.Kind {
	case participants.OpCreate, participants.OpUpsert, participants.OpMerge:
		if content, err = b.content(op.Content); err != nil {
			return participants.Result{}, err
		}
	}
	r, err := b.load(ctx, rid)
	if err != nil {
		return participants.Result{}, err
	}
	switch op.Kind {
	case participants.OpRead:
		r.read = true
		return b.result(r, 0), nil
	case participants.OpCreate:
		if r.view() != nil {
			return participants.Result{}, fmt.Errorf("%w: record %s already exists", participants.ErrConstraint, recordText(rid))
		}
		b.stage(r, content)
	case participants.OpUpsert:
		b.stage(r, content)
	case participants.OpMerge:
		base := r.view()
		if base == nil {
			base = map[string]any{}
		}
		b.stage(r, deepMerge(base, content))
	case participants.OpDelete:
		existed := r.view() != nil
		r.written, r.deleted, r.after = true, true, nil
		if !existed {
			return participants.Result{}, nil
		}
		return participants.Result{RowsAffected: 1}, nil
	}
	return b.result(r, 1), nil
}

func (b *branch) stage(r *record, content map[string]any) {
	after := make(map[string]any, len(content))
	for k, v := range content {
		if k == "id" || k == b.p.cfg.VersionField {
			continue // the committed image carries both; the adapter sets them
		}
		after[k] = v
	}
	r.written, r.deleted, r.after = true, false, after
}

// content validates and converts an operation's content.
func (b *branch) content(c map[string]any) (map[string]any, error) {
	if _, ok := c["id"]; ok {
		return nil, fmt.Errorf("%w: content must not set id (the record id is the operation's)", participants.ErrBadOperation)
	}
	if _, ok := c[b.p.cfg.VersionField]; ok {
		return nil, fmt.Errorf("%w: content must not set %s (maintained by the adapter)", participants.ErrBadOperation, b.p.cfg.VersionField)
	}
	conv, err := toSurreal(c)
	if err != nil {
		return nil, fmt.Errorf("%w: content: %v", participants.ErrBadOperation, err)
	}
	if conv == nil {
		return map[string]any{}, nil
	}
	return conv.(map[string]any), nil
}

// result is one record as a Result: columns sorted, the version field left
// out, id in text form.
func (b *branch) result(r *record, affected int64) participants.Result {
	v := r.view()
	if v == nil {
		return participants.Result{RowsAffected: affected}
	}
	cols := []string{"id"}
	for k := range v {
		if k != "id" && k != b.p.cfg.VersionField {
			cols = append(cols, k)
		}
	}
	sort.Strings(cols[1:])
	row := make([]any, len(cols))
	row[0] = recordText(r.rid)
	for i, c := range cols[1:] {
		row[i+1] = fromSurreal(v[c])
	}
	return participants.Result{Columns: cols, Rows: [][]any{row}, RowsAffected: affected}
}

// track returns the branch's record for rid, adding it (bounded by
// Config.MaxRecordsPerBranch).
func (b *branch) track(rid models.RecordID) (*record, error) {
	key := recordKey(rid)
	if r, ok := b.recs[key]; ok {
		return r, nil
	}
	if len(b.recs) >= b.p.cfg.MaxRecordsPerBranch {
		return nil, fmt.Errorf("%w: branch touches more than %d records (Config.MaxRecordsPerBranch)",
			participants.ErrBadOperation, b.p.cfg.MaxRecordsPerBranch)
	}
	r := &record{rid: rid}
	b.recs[key] = r
	b.order = append(b.order, r)
	return r, nil
}

// load makes sure the branch has the committed image of rid.
func (b *branch) load(ctx context.Context, rid models.RecordID) (*record, error) {
	r, err := b.track(rid)
	if err != nil {
		return nil, err
	}
	if r.loaded {
		return r, nil
	}
	img, missing, err := b.p.fetch(ctx, rid)
	if err != nil {
		return nil, err // the branch fails; the record stays unloaded
	}
	r.loaded, r.committed, r.tableMissing = true, img, missing
	seen := versionOf(img, b.p.cfg.VersionField)
	if !r.versionSet {
		r.version, r.versionSet = seen, true
	} else if r.version != seen {
		// First seen in a query row with another version: prepare votes NO,
		// because it checks the first version seen.
		b.logger.Debug("record changed since the branch first saw it", "record", recordText(rid))
	}
	return r, nil
}

// versionOf is the version a committed image carries.
func versionOf(img map[string]any, field string) string {
	if img == nil {
		return versionAbsent
	}
	v, _ := img[field].(string)
	return v
}

// fetch reads one committed record. missing reports a table that does not exist.
func (p *Participant) fetch(ctx context.Context, rid models.RecordID) (img map[string]any, missing bool, err error) {
	q, err := p.pool.query(ctx, "SELECT * FROM ONLY $txc_r", map[string]any{"txc_r": rid})
	if err != nil {
		return nil, false, err
	}
	if errs := q.errors(); len(errs) > 0 {
		if errs[0].isTableNotFound() {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("read %s: %w", recordText(rid), errs[0])
	}
	var v any
	if err := q.last(&v); err != nil {
		return nil, false, fmt.Errorf("read %s: %w", recordText(rid), err)
	}
	switch x := v.(type) {
	case nil:
		return nil, false, nil
	case map[string]any:
		return x, false, nil
	}
	return nil, false, fmt.Errorf("read %s: unexpected result %T", recordText(rid), v)
}

func (p *Participant) isOwnTable(t string) bool {
	return t == p.tbl.lock || t == p.tbl.intent || t == p.tbl.marker
}

// query runs an OpQuery. With staged writes, it runs inside an interactive
// transaction that applies them first and is then cancelled, so the query
// sees committed data plus this branch's writes and nothing persists. Rows
// that carry their record id and version field are tracked like reads.
func (b *branch) query(ctx context.Context, op participants.Operation) (participants.Result, error) {
	sql, err := checkReadOnly(op.SQL)
	if err != nil {
		return participants.Result{}, err
	}
	vars := make(map[string]any, len(op.Vars))
	for k, v := range op.Vars {
		if !isIdent(k) || strings.HasPrefix(strings.ToLower(k), "txc_") {
			return participants.Result{}, fmt.Errorf("%w: variable name %q (identifiers only, txc_ is reserved)", participants.ErrBadOperation, k)
		}
		c, err := toSurreal(v)
		if err != nil {
			return participants.Result{}, fmt.Errorf("%w: variable %s: %v", participants.ErrBadOperation, k, err)
		}
		vars[k] = c
	}
	writes := stagedWrites(b.order, b.p.cfg.VersionField, b.version)
	var q *queryReply
	if len(writes) == 0 {
		q, err = b.p.pool.query(ctx, sql, vars)
	} else {
		q, err = b.p.queryWithWrites(ctx, writes, sql, vars)
	}
	if err != nil {
		return participants.Result{}, err
	}
	// Without a transaction block, results line up with statements: the
	// staged writes first (when any), the query last.
	for i := range q.stmts {
		st := &q.stmts[i]
		if st.Status == "OK" || st.isEcho() {
			continue
		}
		e := q.errorAt(i)
		switch {
		case e.hasMarker(markerGuardLocked), e.isRetryableConflict():
			return participants.Result{}, fmt.Errorf("%w: %w", participants.ErrConflict, e)
		case i < len(writes):
			return participants.Result{}, fmt.Errorf("%w: a staged write cannot be applied: %w", participants.ErrConstraint, e)
		case e.isTableNotFound():
			return participants.Result{}, nil // no table, no rows
		}
		return participants.Result{}, fmt.Errorf("%w: query: %w", participants.ErrBadOperation, e)
	}
	var v any
	if err := q.last(&v); err != nil {
		return participants.Result{}, err
	}
	return b.rows(v)
}

// rows turns a query result into a Result and tracks versioned rows.
func (b *branch) rows(v any) (participants.Result, error) {
	var items []any
	switch x := v.(type) {
	case nil:
	case []any:
		items = x
	default:
		items = []any{x}
	}
	if len(items) > b.p.cfg.MaxQueryRows {
		return participants.Result{}, fmt.Errorf("%w: query returned %d rows, more than %d (Config.MaxQueryRows): add a LIMIT",
			participants.ErrBadOperation, len(items), b.p.cfg.MaxQueryRows)
	}
	colSet := map[string]bool{}
	objects := true
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			objects = false
			break
		}
		for k := range m {
			if k != b.p.cfg.VersionField {
				colSet[k] = true
			}
		}
	}
	if !objects {
		res := participants.Result{Columns: []string{"value"}}
		for _, it := range items {
			res.Rows = append(res.Rows, []any{fromSurreal(it)})
		}
		return res, nil
	}
	cols := make([]string, 0, len(colSet))
	for k := range colSet {
		cols = append(cols, k)
	}
	sort.Strings(cols)
	res := participants.Result{Columns: cols}
	for _, it := range items {
		m := it.(map[string]any)
		row := make([]any, len(cols))
		for i, c := range cols {
			row[i] = fromSurreal(m[c])
		}
		res.Rows = append(res.Rows, row)
		b.trackRow(m)
	}
	return res, nil
}

// trackRow records the version of a row that carries its id and version.
func (b *branch) trackRow(m map[string]any) {
	rid, ok := m["id"].(models.RecordID)
	if !ok {
		return
	}
	ver, ok := m[b.p.cfg.VersionField].(string)
	if !ok || ver == b.version {
		return
	}
	if _, known := b.recs[recordKey(rid)]; known || b.p.isOwnTable(rid.Table) {
		return
	}
	r, err := b.track(rid)
	if err != nil {
		return // over the bound: the row is returned but not validated
	}
	r.version, r.versionSet, r.read = ver, true, true
}

// queryWithWrites runs sql in an interactive transaction after the staged
// writes, then cancels the transaction.
func (p *Participant) queryWithWrites(ctx context.Context, writes []write, sql string, vars map[string]any) (*queryReply, error) {
	var q *queryReply
	err := p.pool.withConn(ctx, func(ctx context.Context, c *conn) error {
		r, err := c.ws.call(ctx, &connection.RPCRequest{Method: "begin"})
		if err != nil {
			return err
		}
		var txn models.UUID
		if err := c.ws.dec.Unmarshal(r.Result, &txn); err != nil {
			return fmt.Errorf("begin: decode transaction id: %w", err)
		}
		s := newScript()
		for _, w := range writes {
			s.apply(w)
		}
		for k, v := range vars {
			s.vars[k] = v
		}
		text := s.text() + sql + ";"
		r, qerr := c.ws.call(ctx, &connection.RPCRequest{Method: "query", Params: []any{text, s.vars}, Txn: txn})
		if _, err := c.ws.call(ctx, &connection.RPCRequest{Method: "cancel", Params: []any{txn}}); err != nil {
			var te *transportError
			if errors.As(err, &te) {
				return err // the socket is dropped; the server cancels its transactions
			}
			p.logger.Warn("cancel of a query transaction failed", "error", err)
		}
		if qerr != nil {
			return qerr
		}
		q = &queryReply{dec: c.ws.dec}
		return c.ws.dec.Unmarshal(r.Result, &q.stmts)
	})
	return q, err
}

// plan computes what prepare or one-phase commit must do; it introspects
// the schema of written tables (cached).
func (b *branch) plan(ctx context.Context) (*plan, error) {
	var written []string
	seen := map[string]bool{}
	for _, r := range b.order {
		if r.written && !seen[r.rid.Table] {
			seen[r.rid.Table] = true
			written = append(written, r.rid.Table)
		}
	}
	schemas := map[string]*tableSchema{}
	if len(written) > 0 {
		var err error
		if schemas, err = b.p.schemas.get(ctx, b.p.pool, written); err != nil {
			return nil, err
		}
	}
	return makePlan(b.gid, b.version, b.p.cfg.VersionField, b.order, schemas,
		b.opts.Isolation == participants.Serializable), nil
}

func (b *branch) hasWrites() bool {
	for _, r := range b.order {
		if r.written {
			return true
		}
	}
	return false
}

func (b *branch) hasLockedReads() bool {
	if b.opts.Isolation != participants.Serializable {
		return false
	}
	for _, r := range b.order {
		if r.read {
			return true
		}
	}
	return false
}

// Prepare implements participants.Branch. A branch that wrote nothing (and,
// at serializable isolation, read nothing) validates the versions of what
// it read and votes READ_ONLY. Otherwise one request runs the dry-run (if a
// written table has constraints) and the prepare transaction: status
// check, version checks, locks, intent. Any failure is a NO vote; one whose
// outcome is unknown also wraps ErrAmbiguous (roll back by GID: Rollback
// does).
func (b *branch) Prepare(ctx context.Context) (participants.Vote, error) {
	if err := b.usable(); err != nil {
		return participants.VoteNo, b.wrap("prepare", fmt.Errorf("%w: %w", participants.ErrVoteNo, err))
	}
	if err := b.expired(); err != nil {
		b.state = stPrepareNo
		return participants.VoteNo, b.wrap("prepare", fmt.Errorf("%w: %w", participants.ErrVoteNo, err))
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	vote, err := b.prepare(ctx)
	if err != nil {
		b.logger.Debug("prepare: NO", "error", err)
		return participants.VoteNo, b.wrap("prepare", fmt.Errorf("%w: %w", participants.ErrVoteNo, err))
	}
	return vote, nil
}

func (b *branch) prepare(ctx context.Context) (participants.Vote, error) {
	pl, err := b.plan(ctx)
	if err != nil {
		b.state = stPrepareNo
		return participants.VoteNo, err
	}
	if !b.hasWrites() && !b.hasLockedReads() {
		if err := b.validate(ctx, pl); err != nil {
			b.state = stPrepareNo
			return participants.VoteNo, err
		}
		b.state = stReadOnlyDone
		return participants.VoteReadOnly, nil
	}
	s := buildPrepare(b.p.tbl, b.p.cfg.Name, pl)
	for attempt := 0; ; attempt++ {
		vote, retryable, err := b.prepareOnce(ctx, pl, s)
		if !retryable || attempt >= prepareRetries || ctx.Err() != nil {
			return vote, err
		}
		b.logger.Debug("prepare: retrying after a write conflict", "error", err)
	}
}

// prepareRetries bounds the retries of a prepare that failed on a write
// conflict SurrealDB calls retryable (the first insert into a fresh table,
// index pages): each attempt runs every check again, and a conflict with
// another branch's lock still fails it for good.
const prepareRetries = 3

// prepareOnce sends the prepare once and classifies the reply.
func (b *branch) prepareOnce(ctx context.Context, pl *plan, s *script) (vote participants.Vote, retryable bool, err error) {
	q, err := b.p.pool.query(ctx, s.text(), s.vars)
	if err != nil {
		if mayHaveRun(err) {
			b.state = stPrepareMaybe
			return participants.VoteNo, false, fmt.Errorf("%w: %w", participants.ErrAmbiguous, err)
		}
		b.state = stPrepareNo
		return participants.VoteNo, false, err
	}
	fails := s.locate(q)
	if pl.dryRun {
		if len(fails) == 0 {
			// The dry-run always THROWs; no error at all means a server we do not understand.
			b.state = stPrepareMaybe
			return participants.VoteNo, false, fmt.Errorf("%w: dry-run reported no outcome", participants.ErrAmbiguous)
		}
		dry := fails[0]
		fails = fails[1:]
		if !dry.err.hasMarker(markerDryRunPassed) {
			b.state = stPrepareNo
			return participants.VoteNo, dry.err.isRetryableConflict(), b.dryRunFailure(dry)
		}
	}
	if len(fails) == 0 {
		b.state = stPrepared
		return participants.VoteYes, false, nil
	}
	f := fails[0]
	if f.err.hasMarker(markerAlreadyPrepared) {
		b.logger.Info("prepare: already prepared, voting YES again")
		b.state = stPrepared
		return participants.VoteYes, false, nil
	}
	b.state = stPrepareNo
	return participants.VoteNo, f.err.isRetryableConflict(), b.conflictOf(pl, f, "prepare")
}

// dryRunFailure classifies the dry-run's first real error: a write that
// could not be applied (ASSERT, UNIQUE, SCHEMAFULL, type) is a constraint
// violation; conflicts and guard refusals are conflicts.
func (b *branch) dryRunFailure(f failure) error {
	switch {
	case f.err.isRetryableConflict(), f.err.hasMarker(markerGuardLocked):
		return fmt.Errorf("%w: dry-run: %w", participants.ErrConflict, f.err)
	}
	return fmt.Errorf("%w: dry-run: %w", participants.ErrConstraint, f.err)
}

// conflictOf classifies a failure of a prepare, validate or one-phase
// transaction.
func (b *branch) conflictOf(pl *plan, f failure, what string) error {
	e := f.err
	if i, ok := e.versionIndex(); ok && i < len(pl.checks) {
		return fmt.Errorf("%w: record %s changed since the branch read it", participants.ErrConflict, recordText(pl.checks[i].rid))
	}
	switch {
	case e.hasMarker(markerFinished):
		return fmt.Errorf("branch %s was already committed or rolled back", b.gid)
	case e.Kind == kindAlreadyExists && strings.HasPrefix(e.RecordID, b.p.tbl.lock+":"):
		return fmt.Errorf("%w: %s is locked by another transaction", participants.ErrConflict, e.RecordID)
	case e.isRetryableConflict():
		return fmt.Errorf("%w: %w", participants.ErrConflict, e)
	case e.hasMarker(markerGuardLocked):
		return fmt.Errorf("%w: a write is locked by another transaction: %w", participants.ErrConflict, e)
	case e.isTableNotFound():
		return fmt.Errorf("%w: a table the branch used was removed: %w", participants.ErrConflict, e)
	case f.role == roleApply:
		return fmt.Errorf("%w: %w", participants.ErrConstraint, e)
	}
	return fmt.Errorf("%s failed: %w", what, e)
}

// validate checks a read-only branch's versions.
func (b *branch) validate(ctx context.Context, pl *plan) error {
	if len(pl.checks) == 0 {
		return nil
	}
	s := buildValidate(b.p.tbl, pl)
	q, err := b.p.pool.query(ctx, s.text(), s.vars)
	if err != nil {
		return err
	}
	if fails := s.locate(q); len(fails) > 0 {
		return b.conflictOf(pl, fails[0], "validate")
	}
	return nil
}

// CommitOnePhase implements participants.Branch: one transaction checks
// versions, touches the lock keys, applies the after-images and writes the
// GID's done marker (outcome commit), which Participant.Committed reads. A
// branch that wrote nothing only validates its reads and records nothing.
// A conflict is definite (the transaction rolled back) and wraps
// ErrConflict; write conflicts SurrealDB calls retryable are retried first
// (the checks run again each time). A request that may have reached the
// server without an answer wraps ErrAmbiguous: Committed tells the outcome.
func (b *branch) CommitOnePhase(ctx context.Context) error {
	if err := b.usable(); err != nil {
		return b.wrap("commit one phase", err)
	}
	if err := b.expired(); err != nil {
		b.state = stFailed
		return b.wrap("commit one phase", err)
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	err := b.commitOnePhase(ctx)
	if err != nil {
		if b.state == stActive {
			b.state = stFailed // the transaction definitely did not commit
		}
		return b.wrap("commit one phase", err)
	}
	b.state = stCommitted
	return nil
}

func (b *branch) commitOnePhase(ctx context.Context) error {
	pl, err := b.plan(ctx)
	if err != nil {
		b.state = stFailed
		return err
	}
	if !b.hasWrites() {
		if err := b.validate(ctx, pl); err != nil {
			b.state = stFailed
			return err
		}
		return nil
	}
	s := buildOnePhase(b.p.tbl, pl)
	return b.p.retry(ctx, "commit one phase", b.gid, func() (bool, error) {
		q, err := b.p.pool.query(ctx, s.text(), s.vars)
		if err != nil {
			if mayHaveRun(err) {
				b.state = stCommitMaybe
				return false, fmt.Errorf("%w: %w", participants.ErrAmbiguous, err)
			}
			b.state = stFailed
			return false, err
		}
		fails := s.locate(q)
		if len(fails) == 0 {
			return false, nil
		}
		if fails[0].err.isRetryableConflict() {
			return true, fmt.Errorf("%w: %w", participants.ErrConflict, fails[0].err)
		}
		b.state = stFailed
		return false, b.conflictOf(pl, fails[0], "commit")
	})
}

// Rollback implements participants.Branch. An unprepared branch only drops
// its staged writes. A branch whose Prepare may have reached the server
// (the outcome was unknown) is rolled back by GID. After a YES vote the
// branch belongs to phase two: use RollbackPrepared.
func (b *branch) Rollback(ctx context.Context) error {
	switch b.state {
	case stActive, stFailed, stPrepareNo, stReadOnlyDone, stRolledBack:
	case stPrepareMaybe:
		if err := b.p.RollbackPrepared(ctx, b.gid); err != nil {
			return b.wrap("rollback", err)
		}
	case stPrepared:
		return b.wrap("rollback", fmt.Errorf("%w: branch is prepared; roll it back with RollbackPrepared", participants.ErrBranchDone))
	case stCommitted, stCommitMaybe:
		return b.wrap("rollback", fmt.Errorf("%w: branch was committed in one phase", participants.ErrBranchDone))
	}
	b.state = stRolledBack
	b.recs, b.order = nil, nil
	return nil
}
