package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/surrealdb/surrealdb.go/pkg/models"

	"github.com/txcoord/txcoord/participants"
)

// maxGIDBytes bounds a GID (DESIGN.md: under 200 bytes); it is the intent's id.
const maxGIDBytes = 200

// inDoubtPage bounds one page of the InDoubt range scan.
const inDoubtPage = 500

// gcBatch bounds the markers one GC statement deletes.
const gcBatch = 1000

// Participant is one SurrealDB namespace/database taking part in
// distributed transactions. It implements participants.Participant and is
// safe for concurrent use.
type Participant struct {
	cfg     Config
	tbl     tables
	logger  *slog.Logger
	pool    *pool
	schemas *schemaCache

	// commitSlots bounds two-phase transactions in flight (EnterCommit);
	// nil when MaxCommitting is 0. closed ends waits at Close.
	commitSlots chan struct{}
	closed      chan struct{}
	closeOnce   sync.Once

	// lifetime is canceled by Close: the marker collector stops (gcDone).
	lifetime context.Context
	stop     context.CancelFunc
	gcDone   chan struct{}
}

var (
	_ participants.Participant    = (*Participant)(nil)
	_ participants.CommitRecorder = (*Participant)(nil)
)

// Open validates cfg, connects (one connection, to fail fast on a wrong URL
// or credentials), creates the adapter's tables if missing and installs
// the guard event on cfg.GuardTables. A server that cannot be reached
// fails with an error wrapping participants.ErrUnavailable.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Participant, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("participant", cfg.Name)
	enc, err := newEncMode()
	if err != nil {
		return nil, fmt.Errorf("surrealdb %s: cbor encoder: %w", cfg.Name, err)
	}
	p := &Participant{
		cfg:     cfg,
		tbl:     cfg.tables(),
		logger:  logger,
		pool:    newPool(cfg, enc, logger),
		schemas: newSchemaCache(cfg.SchemaCacheTTL, cfg.now),
		closed:  make(chan struct{}),
	}
	if cfg.MaxCommitting > 0 {
		p.commitSlots = make(chan struct{}, cfg.MaxCommitting)
	}
	if err := p.bootstrap(ctx); err != nil {
		p.pool.close()
		return nil, fmt.Errorf("surrealdb %s: open: %w", cfg.Name, err)
	}
	p.lifetime, p.stop = context.WithCancel(context.Background())
	p.gcDone = make(chan struct{})
	if cfg.MarkerGCInterval > 0 {
		go p.collectMarkers()
	} else {
		close(p.gcDone)
	}
	logger.Info("surrealdb participant open", "config", cfg)
	return p, nil
}

// collectMarkers runs GC with Config.MarkerRetention every
// Config.MarkerGCInterval until Close. Participants (and coordinator nodes)
// sharing a database collect the same markers; a write conflict between
// them only postpones a deletion to the next run.
func (p *Participant) collectMarkers() {
	defer close(p.gcDone)
	t := time.NewTicker(p.cfg.MarkerGCInterval)
	defer t.Stop()
	for {
		select {
		case <-p.lifetime.Done():
			return
		case <-t.C:
		}
		_, err := p.GC(p.lifetime, p.cfg.MarkerRetention)
		var se *stmtError
		switch {
		case err == nil, p.lifetime.Err() != nil:
		case errors.As(err, &se) && se.isRetryableConflict():
			p.logger.Debug("marker collection conflicted; next run retries", "error", err)
		default:
			p.logger.Warn("marker collection failed", "error", err)
		}
	}
}

// Name implements participants.Participant.
func (p *Participant) Name() string { return p.cfg.Name }

// Kind implements participants.Participant.
func (p *Participant) Kind() participants.Kind { return participants.KindSurrealDB }

// Close closes the connections. Prepared branches (intents and locks in the
// database) survive it. Branches still open fail on their next call.
func (p *Participant) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		if p.stop != nil {
			p.stop()
			<-p.gcDone
		}
	})
	p.pool.close()
	return nil
}

// EnterCommit takes one of MaxCommitting slots for a two-phase transaction
// (admission control: the coordinator holds it from before the branch
// prepares until its commit or rollback is acknowledged), waiting in
// arrival order until one is free, ctx ends or the participant closes.
// With MaxCommitting 0 it returns at once. Every nil return must be
// matched by one LeaveCommit.
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
		return fmt.Errorf("surrealdb %s: %d two-phase transactions in flight (MaxCommitting): %w",
			p.cfg.Name, p.cfg.MaxCommitting, ctx.Err())
	case <-p.closed:
		return fmt.Errorf("surrealdb %s: closed: %w", p.cfg.Name, participants.ErrUnavailable)
	}
}

// LeaveCommit gives back a slot taken by EnterCommit.
func (p *Participant) LeaveCommit() {
	if p.commitSlots != nil {
		<-p.commitSlots
	}
}

func (p *Participant) bootstrap(ctx context.Context) error {
	s := newScript()
	for _, t := range []string{p.tbl.lock, p.tbl.intent, p.tbl.marker} {
		s.stmt(roleOther, -1, "DEFINE TABLE IF NOT EXISTS %s SCHEMALESS", quoteIdent(t))
	}
	// GC deletes markers by age; the index keeps that from scanning them all.
	s.stmt(roleOther, -1, "DEFINE INDEX IF NOT EXISTS %s ON TABLE %s FIELDS at", quoteIdent(p.tbl.marker+"_at"), quoteIdent(p.tbl.marker))
	if err := p.runDDL(ctx, s); err != nil {
		return fmt.Errorf("define adapter tables: %w", err)
	}
	for _, t := range p.cfg.GuardTables {
		if err := p.installGuard(ctx, t); err != nil {
			return fmt.Errorf("install guard on %s: %w", t, err)
		}
	}
	return nil
}

// runDDL runs schema statements, retrying write conflicts (several
// coordinator nodes open at once).
func (p *Participant) runDDL(ctx context.Context, s *script) error {
	return p.retry(ctx, "ddl", "", func() (bool, error) {
		q, err := p.pool.query(ctx, s.text(), s.vars)
		if err != nil {
			return false, err
		}
		if errs := q.errors(); len(errs) > 0 {
			return errs[0].isRetryableConflict(), errs[0]
		}
		return false, nil
	})
}

// installGuard defines the guard event on table (see Config.GuardTables).
func (p *Participant) installGuard(ctx context.Context, table string) error {
	p.schemas.forget(table)
	s := newScript()
	s.stmt(roleOther, -1, "DEFINE TABLE IF NOT EXISTS %s", quoteIdent(table))
	if err := p.runDDL(ctx, s); err != nil {
		return err
	}
	schemas, err := p.schemas.get(ctx, p.pool, []string{table})
	if err != nil {
		return err
	}
	var skipped []string
	s = newScript()
	s.stmt(roleOther, -1, "%s", guardEventSQL(p.tbl, table, schemas[table].unique, &skipped))
	if len(skipped) > 0 {
		p.logger.Warn("guard does not lock these UNIQUE indexes (columns are not plain field paths); the dry-run still checks them",
			"table", table, "indexes", skipped)
	}
	if err := p.runDDL(ctx, s); err != nil {
		return err
	}
	p.schemas.forget(table)
	p.logger.Info("guard installed", "table", table)
	return nil
}

// guardEventSQL is the DEFINE EVENT of the write guard on table: a write by
// anyone fails while the record's lock (or the lock of a UNIQUE value it
// writes) exists; otherwise the event writes and deletes that lock key, so
// a concurrent prepare taking the lock conflicts with the write; and a
// write that leaves the version field unchanged gets a fresh version, so a
// branch that read the record sees the change at prepare. The adapter's
// own writes delete their locks first and always set a new version.
func guardEventSQL(t tables, table string, unique []uniqueIndex, skipped *[]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "DEFINE EVENT OVERWRITE %s ON TABLE %s WHEN true THEN {\n", guardEventName, quoteIdent(table))
	b.WriteString("  LET $txc_rid = IF $event = 'DELETE' { $before.id } ELSE { $after.id };\n")
	fmt.Fprintf(&b, "  LET $txc_key = type::record('%s', [$txc_rid]);\n", t.lock)
	fmt.Fprintf(&b, "  IF (SELECT VALUE id FROM ONLY $txc_key) != NONE { THROW '%s' };\n", markerGuardLocked)
	b.WriteString("  UPSERT $txc_key CONTENT { guard: true };\n")
	b.WriteString("  DELETE $txc_key;\n")
	b.WriteString("  IF $event != 'DELETE' {\n")
	for i, u := range unique {
		if !u.lockable || !plainPaths(u.cols) {
			*skipped = append(*skipped, u.name)
			continue
		}
		vals := make([]string, len(u.cols))
		var present []string
		for j, c := range u.cols {
			vals[j] = "$after." + c
			present = append(present, fmt.Sprintf("($after.%s != NONE AND $after.%s != NULL)", c, c))
		}
		fmt.Fprintf(&b, "    IF %s {\n", strings.Join(present, " OR "))
		fmt.Fprintf(&b, "      LET $txc_u%d = type::record('%s', ['uniq', %s, %s, [%s]]);\n",
			i, t.lock, quoteString(table), quoteString(u.name), strings.Join(vals, ", "))
		fmt.Fprintf(&b, "      IF (SELECT VALUE id FROM ONLY $txc_u%d) != NONE { THROW '%s' };\n", i, markerGuardLocked)
		fmt.Fprintf(&b, "      UPSERT $txc_u%d CONTENT { guard: true };\n", i)
		fmt.Fprintf(&b, "      DELETE $txc_u%d;\n", i)
		b.WriteString("    };\n")
	}
	fmt.Fprintf(&b, "    IF $after.%s = $before.%s { UPDATE $txc_rid SET %s = rand::ulid() };\n", t.version, t.version, t.version)
	b.WriteString("  };\n}")
	return b.String()
}

// plainPaths reports whether every column is a dotted path of identifiers,
// safe to write into the event's text.
func plainPaths(cols []string) bool {
	for _, c := range cols {
		for _, part := range strings.Split(c, ".") {
			if !isIdent(part) {
				return false
			}
		}
	}
	return len(cols) > 0
}

// quoteString is a single-quoted SurrealQL string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}

// validGID checks a GID before it becomes a record id.
func validGID(gid string) error {
	if gid == "" || len(gid) > maxGIDBytes || !utf8.ValidString(gid) {
		return fmt.Errorf("%w: GID must be 1-%d bytes of UTF-8", participants.ErrBadOperation, maxGIDBytes)
	}
	for _, r := range gid {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: GID %q contains a control character", participants.ErrBadOperation, gid)
		}
	}
	return nil
}

// Begin implements participants.Participant. It does no I/O: the branch
// reads records as it needs them and writes nothing until Prepare or
// CommitOnePhase.
func (p *Participant) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	if err := validGID(gid); err != nil {
		return nil, err
	}
	select {
	case <-p.pool.done:
		return nil, fmt.Errorf("surrealdb %s: begin %s: %w", p.cfg.Name, gid, errPoolClosed)
	default:
	}
	return &branch{
		p:       p,
		gid:     gid,
		opts:    opts,
		version: newVersion(p.cfg.now()),
		recs:    map[string]*record{},
		logger:  p.logger.With("gid", gid),
	}, nil
}

// CommitPrepared implements participants.Participant. One transaction
// deletes the intent's locks, applies its after-images, deletes it and
// writes the commit marker. A GID with only a commit marker is already
// committed (nil). A GID with an abort tombstone returns an error wrapping
// ErrProtocolViolation and participants.ErrNotPrepared; one with neither,
// participants.ErrNotPrepared. Write conflicts are retried with backoff
// (Config.PhaseTwoRetries); other failures wrap participants.ErrUnavailable
// and must be retried by the caller. Concurrent calls converge: one
// commits, the others see the marker.
func (p *Participant) CommitPrepared(ctx context.Context, gid string) error {
	if err := validGID(gid); err != nil {
		return err
	}
	s := buildCommitPrepared(p.tbl, gid)
	err := p.retry(ctx, "commit", gid, func() (bool, error) {
		q, err := p.pool.query(ctx, s.text(), s.vars)
		if err != nil {
			return false, phaseTwoError(err)
		}
		for _, e := range q.errors() {
			switch {
			case e.hasMarker(markerCommitted):
				p.logger.Debug("commit: already committed", "gid", gid)
				return false, nil
			case e.hasMarker(markerAborted):
				return false, fmt.Errorf("%w: commit of a rolled back branch (%w)", ErrProtocolViolation, participants.ErrNotPrepared)
			case e.hasMarker(markerNotPrepared):
				return false, participants.ErrNotPrepared
			case e.isRetryableConflict():
				return true, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
			}
			// After a YES vote this must not happen (a schema change while the
			// intent existed, or a bug): keep it retryable, and loud.
			p.logger.Error("commit of a prepared branch failed", "gid", gid, "error", e)
			return false, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("surrealdb %s: commit prepared %s: %w", p.cfg.Name, gid, err)
	}
	return nil
}

// RollbackPrepared implements participants.Participant: deletes the intent's
// locks and the intent and writes an abort tombstone, so that a late
// Prepare of the GID votes NO. An unknown or already rolled back GID
// returns nil (and is tombstoned). A committed GID returns an error
// wrapping ErrProtocolViolation. Retries as CommitPrepared does.
func (p *Participant) RollbackPrepared(ctx context.Context, gid string) error {
	if err := validGID(gid); err != nil {
		return err
	}
	s := buildRollbackPrepared(p.tbl, gid)
	err := p.retry(ctx, "rollback", gid, func() (bool, error) {
		q, err := p.pool.query(ctx, s.text(), s.vars)
		if err != nil {
			return false, phaseTwoError(err)
		}
		for _, e := range q.errors() {
			switch {
			case e.hasMarker(markerAborted):
				return false, nil
			case e.hasMarker(markerCommitted):
				return false, fmt.Errorf("%w: rollback of a committed branch", ErrProtocolViolation)
			case e.isRetryableConflict():
				return true, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
			}
			p.logger.Error("rollback of a prepared branch failed", "gid", gid, "error", e)
			return false, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("surrealdb %s: rollback prepared %s: %w", p.cfg.Name, gid, err)
	}
	return nil
}

// Committed implements participants.CommitRecorder as a fence: it answers
// true when the GID's done marker says commit, and otherwise makes sure
// the GID can no longer commit before it answers false. One text
// transaction (buildFence) reads the done marker and the intent:
//   - marker commit: true. It is written in the same transaction as the
//     commit itself — by CommitPrepared and by CommitOnePhase of a branch
//     that wrote something — so it exists exactly when that commit happened;
//   - marker abort (a tombstone): false;
//   - an intent (the branch is prepared, not decided yet): an error
//     wrapping ErrUnavailable — there is no answer yet;
//   - neither: it writes an abort tombstone and answers false. A one-phase
//     commit or a prepare of the GID arriving later finds the tombstone and
//     fails (definitely) or votes NO; one running concurrently writes the
//     same keys, so one of the two conflicts: if the fence loses, it is
//     retried (Config.PhaseTwoRetries) and finds the commit marker.
//
// A branch rolled back or never begun, and a read-only branch, answer false
// (and are tombstoned); so does a commit whose marker GC deleted (older
// than Config.MarkerRetention: the answer then falls back to presumed
// abort). Each request is bounded by Config.CallTimeout; failures wrap
// ErrUnavailable.
func (p *Participant) Committed(ctx context.Context, gid string) (bool, error) {
	if err := validGID(gid); err != nil {
		return false, fmt.Errorf("surrealdb %s: committed: %w", p.cfg.Name, err)
	}
	s := buildFence(p.tbl, gid)
	var committed bool
	err := p.retry(ctx, "committed", gid, func() (bool, error) {
		q, err := p.pool.query(ctx, s.text(), s.vars)
		if err != nil {
			return false, phaseTwoError(err)
		}
		for _, e := range q.errors() {
			switch {
			case e.hasMarker(markerCommitted):
				committed = true
				return false, nil
			case e.hasMarker(markerAborted):
				return false, nil
			case e.hasMarker(markerAlreadyPrepared):
				return false, fmt.Errorf("%w: the GID is prepared and not decided yet", participants.ErrUnavailable)
			case e.isRetryableConflict():
				return true, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
			}
			// The tables are defined at Open; a missing one means markers
			// were removed, so "not recorded" would not mean "did not commit".
			return false, fmt.Errorf("%w: %w", participants.ErrUnavailable, e)
		}
		p.logger.Debug("committed: no done marker, abort tombstone written", "gid", gid)
		return false, nil
	})
	if err != nil {
		return false, fmt.Errorf("surrealdb %s: committed %s: %w", p.cfg.Name, gid, err)
	}
	return committed, nil
}

// retry runs attempt until it succeeds, fails for good, or asks for a retry
// more than Config.PhaseTwoRetries times (the error then is the last one,
// which carries its class). Backoff doubles from RetryBackoff to
// MaxRetryBackoff, with jitter so that concurrent retriers spread out.
func (p *Participant) retry(ctx context.Context, what, gid string, attempt func() (retryable bool, err error)) error {
	backoff := p.cfg.RetryBackoff
	for n := 0; ; n++ {
		retryable, err := attempt()
		if err == nil || !retryable {
			return err
		}
		if n >= p.cfg.PhaseTwoRetries {
			return fmt.Errorf("still conflicting after %d retries: %w", n, err)
		}
		p.logger.Debug("retrying after write conflict", "op", what, "gid", gid, "attempt", n+1)
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("gave up retrying (%w): %w", ctx.Err(), err)
		}
		backoff = min(2*backoff, p.cfg.MaxRetryBackoff)
	}
}

// phaseTwoError makes a failure to get an answer retryable: phase two is
// idempotent and must be retried until acknowledged.
func phaseTwoError(err error) error {
	var re *rpcError
	if errors.As(err, &re) {
		return fmt.Errorf("%w: %w", participants.ErrUnavailable, err)
	}
	return err // transport errors are ErrUnavailable already
}

// InDoubt implements participants.Participant: the intents whose GID starts
// with prefix, found by a range scan over the intent table's record ids
// (type::record(table, $lo..$hi); `table:$lo..$hi` does not parse in 3.0.2),
// in GID order, one page of inDoubtPage at a time.
func (p *Participant) InDoubt(ctx context.Context, prefix string) ([]participants.InDoubtBranch, error) {
	if !utf8.ValidString(prefix) || len(prefix) > maxGIDBytes {
		return nil, fmt.Errorf("%w: bad GID prefix %q", participants.ErrBadOperation, prefix)
	}
	hi := prefix + string(utf8.MaxRune)
	var out []participants.InDoubtBranch
	lo, exclusive := prefix, false
	for {
		rng := "$txc_lo..$txc_hi"
		if exclusive {
			rng = "$txc_lo>..$txc_hi"
		}
		sql := fmt.Sprintf("SELECT gid, prepared_at, locks FROM type::record($txc_it, %s) LIMIT %d", rng, inDoubtPage)
		q, err := p.pool.query(ctx, sql, map[string]any{"txc_it": p.tbl.intent, "txc_lo": lo, "txc_hi": hi})
		if err != nil {
			return nil, fmt.Errorf("surrealdb %s: in doubt: %w", p.cfg.Name, err)
		}
		if errs := q.errors(); len(errs) > 0 {
			return nil, fmt.Errorf("surrealdb %s: in doubt: %w: %w", p.cfg.Name, participants.ErrUnavailable, errs[0])
		}
		var rows []struct {
			GID        string                 `json:"gid"`
			PreparedAt *models.CustomDateTime `json:"prepared_at"`
			Locks      []cbor.RawMessage      `json:"locks"`
		}
		if err := q.last(&rows); err != nil {
			return nil, fmt.Errorf("surrealdb %s: in doubt: decode: %w", p.cfg.Name, err)
		}
		for _, r := range rows {
			if !strings.HasPrefix(r.GID, prefix) {
				continue
			}
			b := participants.InDoubtBranch{GID: r.GID}
			if r.PreparedAt != nil {
				b.PreparedAt = r.PreparedAt.Time
			}
			for _, raw := range r.Locks {
				var id any
				if err := q.dec.Unmarshal(raw, &id); err == nil {
					b.Locks = append(b.Locks, lockText(id))
				}
			}
			out = append(out, b)
		}
		if len(rows) < inDoubtPage {
			return out, nil
		}
		lo, exclusive = rows[len(rows)-1].GID, true
	}
}

// GC deletes done markers and abort tombstones older than olderThan and
// returns how many it deleted. The participant runs it itself with
// Config.MarkerRetention every Config.MarkerGCInterval. Run it with a
// retention far longer than any transaction can stay undecided: a tombstone
// deleted too early lets a very late Prepare of an aborted GID vote YES, a
// commit marker deleted too early turns a repeated CommitPrepared into
// ErrNotPrepared and makes Committed answer false (the coordinator would
// then report a one-phase commit as presumed abort).
func (p *Participant) GC(ctx context.Context, olderThan time.Duration) (int, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("%w: GC retention %v must be positive", participants.ErrBadOperation, olderThan)
	}
	cutoff := p.cfg.now().Add(-olderThan)
	total := 0
	for {
		q, err := p.pool.query(ctx, fmt.Sprintf(
			"LET $txc_ids = (SELECT VALUE id FROM type::table($txc_mt) WHERE at < $txc_cut LIMIT %d);\n"+
				"DELETE $txc_ids;\nRETURN array::len($txc_ids);", gcBatch),
			map[string]any{"txc_mt": p.tbl.marker, "txc_cut": cutoff})
		if err != nil {
			return total, fmt.Errorf("surrealdb %s: gc: %w", p.cfg.Name, err)
		}
		if errs := q.errors(); len(errs) > 0 {
			return total, fmt.Errorf("surrealdb %s: gc: %w", p.cfg.Name, errs[0])
		}
		var n int64
		if err := q.last(&n); err != nil {
			return total, fmt.Errorf("surrealdb %s: gc: %w", p.cfg.Name, err)
		}
		total += int(n)
		if n < gcBatch {
			if total > 0 {
				p.logger.Info("gc: deleted old markers", "count", total, "older_than", olderThan)
			}
			return total, nil
		}
	}
}
