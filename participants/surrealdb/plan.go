package surrealdb

import (
	"fmt"
	"sort"
	"strings"

	"github.com/surrealdb/surrealdb.go/pkg/models"
)

// versionAbsent is the version a check expects of a record that did not
// exist when the branch saw it. It cannot collide with a real version: it
// is not a ULID, and a record that exists without a version field reads as "".
const versionAbsent = "\x00absent"

// plan is everything a branch's prepare (or one-phase commit) must do,
// computed from the staged state without I/O, so it can be tested alone.
type plan struct {
	gid     string
	version string // the version every after-image carries
	// checks: every record the branch read or wrote, with the version it
	// saw, in the order the branch first touched them.
	checks []check
	// locks: lock-table ids to create ([rid], or ['uniq', table, index, values]).
	locks []lockKey
	// writes: after-images to apply; deletes of records that were already
	// absent are left out (no-ops that would fail on a missing table).
	writes []write
	// missingTables: tables that did not exist when the branch looked; the
	// version check defines them first (SELECT on a missing table fails in 3.0.2).
	missingTables []string
	// dryRun: a written table has constraints; guarded: a written table has
	// the guard event (the dry-run must delete this branch's own locks first).
	dryRun, guarded bool
}

type check struct {
	rid    models.RecordID
	expect string
}

type write struct {
	rid    models.RecordID
	delete bool
	after  map[string]any // with the version field set
}

// lockKey is the id array of a lock record, and its display form.
type lockKey struct {
	id   []any
	text string
}

func recordLock(rid models.RecordID) lockKey {
	return lockKey{id: []any{rid}, text: recordText(rid)}
}

func uniqueLock(table, index string, values []any) lockKey {
	return lockKey{
		id:   []any{"uniq", table, index, values},
		text: fmt.Sprintf("uniq:%s.%s=%v", table, index, fromSurreal(values)),
	}
}

// lockText renders a lock id read back from an intent for InDoubt.
func lockText(id any) string {
	arr, ok := id.([]any)
	if !ok {
		return fmt.Sprint(fromSurreal(id))
	}
	if len(arr) == 1 {
		if rid, ok := arr[0].(models.RecordID); ok {
			return recordText(rid)
		}
	}
	if len(arr) == 4 && arr[0] == "uniq" {
		return fmt.Sprintf("uniq:%v.%v=%v", arr[1], arr[2], fromSurreal(arr[3]))
	}
	return fmt.Sprint(fromSurreal(id))
}

// makePlan computes the plan of a branch. schemas holds the schema of every
// table the branch writes. lockReads adds the read records' locks
// (serializable isolation).
func makePlan(gid, version, versionField string, recs []*record, schemas map[string]*tableSchema, lockReads bool) *plan {
	p := &plan{gid: gid, version: version}
	seenLock := map[string]bool{}
	addLock := func(k lockKey) {
		var b strings.Builder
		writeKeyValue(&b, k.id)
		key := b.String()
		if !seenLock[key] {
			seenLock[key] = true
			p.locks = append(p.locks, k)
		}
	}
	missing := map[string]bool{}
	for _, r := range recs {
		p.checks = append(p.checks, check{rid: r.rid, expect: r.version})
		if r.tableMissing {
			missing[r.rid.Table] = true
		}
		if r.written || (lockReads && r.read) {
			addLock(recordLock(r.rid))
		}
		if !r.written {
			continue
		}
		s := schemas[r.rid.Table]
		if s != nil {
			p.dryRun = p.dryRun || s.constrained
			p.guarded = p.guarded || s.guarded
		}
		w, ok := stagedWrite(r, versionField, version)
		if !ok {
			continue
		}
		p.writes = append(p.writes, w)
		if w.delete || s == nil {
			continue
		}
		after := w.after
		for _, u := range s.unique {
			if !u.lockable {
				continue
			}
			vals := make([]any, len(u.cols))
			allNone := true
			for i, c := range u.cols {
				v, _ := fieldPath(after, c)
				vals[i] = v
				if v != nil {
					allNone = false
				}
			}
			if allNone { // NONE and NULL never collide in a UNIQUE index (measured)
				continue
			}
			addLock(uniqueLock(r.rid.Table, u.name, vals))
		}
	}
	for t := range missing {
		p.missingTables = append(p.missingTables, t)
	}
	sort.Strings(p.missingTables)
	return p
}

// stagedWrite is the write a record's staged state asks for, with the new
// version set; ok is false for none (not written, or a delete of a record
// that was already absent: a no-op, which would fail on a missing table).
func stagedWrite(r *record, versionField, version string) (w write, ok bool) {
	switch {
	case !r.written:
		return write{}, false
	case r.deleted:
		return write{rid: r.rid, delete: true}, r.committed != nil
	}
	after := make(map[string]any, len(r.after)+1)
	for k, v := range r.after {
		after[k] = v
	}
	after[versionField] = version
	return write{rid: r.rid, after: after}, true
}

// stagedWrites lists the writes of recs in order.
func stagedWrites(recs []*record, versionField, version string) []write {
	var out []write
	for _, r := range recs {
		if w, ok := stagedWrite(r, versionField, version); ok {
			out = append(out, w)
		}
	}
	return out
}

// tables names the adapter's tables for the scripts.
type tables struct {
	lock, intent, marker, version string
}

func (c Config) tables() tables {
	return tables{lock: c.LockTable, intent: c.IntentTable, marker: c.MarkerTable, version: c.VersionField}
}

// versionCheck appends the check that record i still has the version the
// branch saw. It fetches with a sub-SELECT: a field fetch like $rid.field
// inside IF or FOR fails in 3.0.2 ("Specify a database to use",
// "fetch_raw_record requires database context").
func (s *script) versionCheck(t tables, i int, c check, absent string) {
	s.stmt(roleCheck, i, "IF ((SELECT VALUE (%s ?? '') FROM ONLY %s) ?? %s) != %s { THROW %s }",
		t.version, s.param(c.rid), absent, s.param(c.expect), s.param(versionMarker(i)))
}

// apply appends the statement that writes one after-image.
func (s *script) apply(w write) {
	if w.delete {
		s.stmt(roleApply, -1, "DELETE %s", s.param(w.rid))
		return
	}
	s.stmt(roleApply, -1, "UPSERT %s CONTENT %s", s.param(w.rid), s.param(w.after))
}

// defineMissing defines the tables the branch found missing, before the
// transaction: a version check SELECTs from them, which fails on a missing
// table in 3.0.2. Outside the transaction, two branches defining the same
// table at once cannot fail each other's prepare with a write conflict
// (whichever loses finds the table defined).
func (s *script) defineMissing(p *plan) {
	for _, tb := range p.missingTables {
		s.stmt(roleDDL, -1, "DEFINE TABLE IF NOT EXISTS %s", quoteIdent(tb))
	}
}

// applyLoop applies an intent's writes (%s: the array of {rid, op, after}).
const applyLoop = "FOR $txc_w IN %s { IF $txc_w.op = 'delete' { DELETE $txc_w.rid } ELSE { UPSERT $txc_w.rid CONTENT $txc_w.after } }"

// buildPrepare builds the prepare: optionally the dry-run transaction, then
// the prepare transaction (status check, version checks, locks, intent).
//
// The dry-run applies the after-images and always ends in a THROW, so it
// never commits; its last statement before the THROW sets $txc_dry, which
// survives the failed transaction, and the prepare transaction refuses to
// run unless it is set. So the whole prepare is one call, and a failed
// dry-run leaves nothing behind.
func buildPrepare(t tables, name string, p *plan) *script {
	s := newScript()
	gid := s.param(p.gid)
	lockTable := s.param(t.lock)
	absent := s.param(versionAbsent)
	var lockParams []string
	for _, k := range p.locks {
		lockParams = append(lockParams, s.param(k.id))
	}
	// The after-images travel once: the dry-run and the intent share the parameter.
	writes := make([]any, len(p.writes))
	for i, w := range p.writes {
		if w.delete {
			writes[i] = map[string]any{"rid": w.rid, "op": "delete"}
		} else {
			writes[i] = map[string]any{"rid": w.rid, "op": "put", "after": w.after}
		}
	}
	writesParam := s.param(writes)
	if p.dryRun {
		s.stmt(roleOther, -1, "LET $txc_dry = false")
		s.begin()
		if p.guarded {
			// Only after an earlier successful prepare of this GID do its locks exist;
			// the guard event would refuse the dry-run's writes because of them.
			for _, lp := range lockParams {
				s.stmt(roleOther, -1, "DELETE type::record(%s, %s) WHERE gid = %s", lockTable, lp, gid)
			}
		}
		// The very statement CommitPrepared runs.
		s.stmt(roleApply, -1, applyLoop, writesParam)
		s.stmt(roleOther, -1, "LET $txc_dry = true")
		s.stmt(roleDryRunEnd, -1, "THROW %s", s.param(markerDryRunPassed))
		s.commit()
	}
	s.defineMissing(p)
	s.begin()
	if p.dryRun {
		s.stmt(roleCheck, -1, "IF $txc_dry != true { THROW %s }", s.param(markerDryRunFailed))
	}
	s.stmt(roleCheck, -1, "IF (SELECT VALUE outcome FROM ONLY type::record(%s, %s)) != NONE { THROW %s }",
		s.param(t.marker), gid, s.param(markerFinished))
	intentID := s.param(t.intent)
	s.stmt(roleCheck, -1, "IF (SELECT VALUE gid FROM ONLY type::record(%s, %s)) != NONE { THROW %s }",
		intentID, gid, s.param(markerAlreadyPrepared))
	for i, c := range p.checks {
		s.versionCheck(t, i, c, absent)
	}
	for _, lp := range lockParams {
		s.stmt(roleLock, -1, "CREATE type::record(%s, %s) CONTENT { gid: %s }", lockTable, lp, gid)
	}
	locks := make([]any, len(p.locks))
	for i, k := range p.locks {
		locks[i] = k.id
	}
	s.stmt(roleIntent, -1,
		"CREATE type::record(%s, %s) CONTENT { gid: %s, participant: %s, version: %s, prepared_at: time::now(), locks: %s, writes: %s }",
		intentID, gid, gid, s.param(name), s.param(p.version), s.param(locks), writesParam)
	s.commit()
	return s
}

// buildOnePhase builds the one-phase commit: one transaction that checks
// the GID is not finished, checks versions, touches every lock key (CREATE
// fails if a prepared branch holds it; writing the key also makes a
// concurrent prepare of the same record conflict), applies the
// after-images and CREATEs the GID's done marker (outcome commit). The
// marker commits with the writes or not at all, so Committed can tell a
// one-phase commit whose answer was lost from one that did not happen. A
// GID that already has a marker (an abort tombstone, or reuse) fails the
// check and the transaction commits nothing.
func buildOnePhase(t tables, p *plan) *script {
	s := newScript()
	gid := s.param(p.gid)
	lockTable := s.param(t.lock)
	marker := s.param(t.marker)
	absent := s.param(versionAbsent)
	s.defineMissing(p)
	s.begin()
	s.stmt(roleCheck, -1, "IF (SELECT VALUE outcome FROM ONLY type::record(%s, %s)) != NONE { THROW %s }",
		marker, gid, s.param(markerFinished))
	for i, c := range p.checks {
		s.versionCheck(t, i, c, absent)
	}
	for _, k := range p.locks {
		lp := s.param(k.id)
		s.stmt(roleLock, -1, "CREATE type::record(%s, %s) CONTENT { gid: %s }", lockTable, lp, gid)
		s.stmt(roleLock, -1, "DELETE type::record(%s, %s)", lockTable, lp)
	}
	for _, w := range p.writes {
		s.apply(w)
	}
	s.stmt(roleOther, -1, "CREATE type::record(%s, %s) CONTENT { outcome: 'commit', one_phase: true, at: time::now() }", marker, gid)
	s.commit()
	return s
}

// buildValidate builds the read-only branch's check: versions only.
func buildValidate(t tables, p *plan) *script {
	s := newScript()
	absent := s.param(versionAbsent)
	s.defineMissing(p)
	s.begin()
	for i, c := range p.checks {
		s.versionCheck(t, i, c, absent)
	}
	s.commit()
	return s
}

// buildCommitPrepared builds the commit of a prepared GID: with the intent,
// delete its locks, apply its after-images, delete it, write the commit
// marker; without it, THROW which marker (if any) says why.
func buildCommitPrepared(t tables, gid string) *script {
	s := newScript()
	g := s.param(gid)
	lockTable := s.param(t.lock)
	intent := s.param(t.intent)
	marker := s.param(t.marker)
	s.begin()
	s.stmt(roleOther, -1, "LET $txc_i = (SELECT * FROM ONLY type::record(%s, %s))", intent, g)
	s.stmt(roleOther, -1, "LET $txc_m = (SELECT VALUE outcome FROM ONLY type::record(%s, %s))", marker, g)
	s.stmt(roleCheck, -1,
		"IF $txc_i = NONE { IF $txc_m = 'commit' { THROW %s } ELSE IF $txc_m = 'abort' { THROW %s } ELSE { THROW %s } }",
		s.param(markerCommitted), s.param(markerAborted), s.param(markerNotPrepared))
	s.stmt(roleOther, -1, "FOR $txc_k IN $txc_i.locks { DELETE type::record(%s, $txc_k) WHERE gid = %s }", lockTable, g)
	s.stmt(roleApply, -1, applyLoop, "$txc_i.writes")
	s.stmt(roleOther, -1, "DELETE type::record(%s, %s)", intent, g)
	s.stmt(roleOther, -1, "UPSERT type::record(%s, %s) CONTENT { outcome: 'commit', at: time::now() }", marker, g)
	s.commit()
	return s
}

// buildRollbackPrepared builds the rollback of a GID: delete the intent's
// locks and the intent, write the abort tombstone. The intent key is
// written even when absent, so that a prepare of the same GID running
// concurrently conflicts with this transaction instead of slipping past the
// tombstone it could not yet see.
func buildRollbackPrepared(t tables, gid string) *script {
	s := newScript()
	g := s.param(gid)
	lockTable := s.param(t.lock)
	intent := s.param(t.intent)
	marker := s.param(t.marker)
	s.begin()
	s.stmt(roleOther, -1, "LET $txc_i = (SELECT * FROM ONLY type::record(%s, %s))", intent, g)
	s.stmt(roleOther, -1, "LET $txc_m = (SELECT VALUE outcome FROM ONLY type::record(%s, %s))", marker, g)
	s.stmt(roleCheck, -1, "IF $txc_m = 'commit' { THROW %s }", s.param(markerCommitted))
	s.stmt(roleCheck, -1, "IF $txc_m = 'abort' { THROW %s }", s.param(markerAborted))
	s.stmt(roleOther, -1, "FOR $txc_k IN ($txc_i.locks ?? []) { DELETE type::record(%s, $txc_k) WHERE gid = %s }", lockTable, g)
	s.stmt(roleOther, -1, "UPSERT type::record(%s, %s) CONTENT { gid: %s, rolling_back: true }", intent, g, g)
	s.stmt(roleOther, -1, "DELETE type::record(%s, %s)", intent, g)
	s.stmt(roleOther, -1, "UPSERT type::record(%s, %s) CONTENT { outcome: 'abort', at: time::now() }", marker, g)
	s.commit()
	return s
}

// buildFence builds Committed's fence: THROW markerCommitted or
// markerAborted when the GID has a done marker, markerAlreadyPrepared when
// it has an intent (prepared: not decided yet); otherwise write the abort
// tombstone. The intent key is written as in buildRollbackPrepared, so that
// a prepare of the GID running concurrently conflicts with the fence; a
// concurrent one-phase commit conflicts on the marker key, which both
// write: the first to commit wins, and the other, retried, finds the
// marker.
func buildFence(t tables, gid string) *script {
	s := newScript()
	g := s.param(gid)
	intent := s.param(t.intent)
	marker := s.param(t.marker)
	s.begin()
	s.stmt(roleOther, -1, "LET $txc_m = (SELECT VALUE outcome FROM ONLY type::record(%s, %s))", marker, g)
	s.stmt(roleOther, -1, "LET $txc_i = (SELECT VALUE gid FROM ONLY type::record(%s, %s))", intent, g)
	s.stmt(roleCheck, -1, "IF $txc_m = 'commit' { THROW %s }", s.param(markerCommitted))
	s.stmt(roleCheck, -1, "IF $txc_m != NONE { THROW %s }", s.param(markerAborted))
	s.stmt(roleCheck, -1, "IF $txc_i != NONE { THROW %s }", s.param(markerAlreadyPrepared))
	s.stmt(roleOther, -1, "UPSERT type::record(%s, %s) CONTENT { gid: %s, rolling_back: true }", intent, g, g)
	s.stmt(roleOther, -1, "DELETE type::record(%s, %s)", intent, g)
	s.stmt(roleOther, -1, "UPSERT type::record(%s, %s) CONTENT { outcome: 'abort', at: time::now() }", marker, g)
	s.commit()
	return s
}
