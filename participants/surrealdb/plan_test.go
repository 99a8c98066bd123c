package surrealdb

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/surrealdb/surrealdb.go/pkg/models"
	"github.com/surrealdb/surrealdb.go/surrealcbor"

	"github.com/txcoord/txcoord/participants"
)

const testVersionField = "_v"

func testTables() tables {
	return tables{lock: "txc_lock", intent: "txc_intent", marker: "txc_done", version: testVersionField}
}

func rec(table string, id any) *record {
	return &record{rid: models.NewRecordID(table, id), loaded: true, versionSet: true}
}

func TestMakePlan(t *testing.T) {
	users := &tableSchema{exists: true, constrained: true, unique: []uniqueIndex{
		{name: "u_email", cols: []string{"email"}, lockable: true},
		{name: "u_pair", cols: []string{"a.b", "c"}, lockable: true},
		{name: "u_tags", cols: []string{"tags[*]"}, lockable: false},
	}}
	read := rec("acct", int64(1))
	read.version, read.read, read.committed = "V1", true, map[string]any{"n": int64(1)}
	upd := rec("users", "u1")
	upd.version, upd.written, upd.committed = "", true, map[string]any{"email": "old"}
	upd.after = map[string]any{"email": "new@x", "a": map[string]any{"b": int64(2)}}
	noEmail := rec("users", "u2")
	noEmail.version, noEmail.written, noEmail.after = versionAbsent, true, map[string]any{"name": "n"}
	dupEmail := rec("users", "u3")
	dupEmail.version, dupEmail.written, dupEmail.after = versionAbsent, true, map[string]any{"email": "new@x"}
	del := rec("acct", int64(2))
	del.version, del.written, del.deleted, del.committed = "V2", true, true, map[string]any{"n": int64(2)}
	noopDel := rec("fresh", int64(3))
	noopDel.version, noopDel.written, noopDel.deleted, noopDel.tableMissing = versionAbsent, true, true, true
	recs := []*record{read, upd, noEmail, dupEmail, del, noopDel}
	schemas := map[string]*tableSchema{"users": users, "acct": {exists: true}, "fresh": {}}

	p := makePlan("g1", "NEWV", testVersionField, recs, schemas, false)
	if len(p.checks) != len(recs) {
		t.Fatalf("checks = %d, want one per record", len(p.checks))
	}
	for i, c := range p.checks {
		if c.rid != recs[i].rid || c.expect != recs[i].version {
			t.Fatalf("check %d = %+v", i, c)
		}
	}
	var locks []string
	for _, k := range p.locks {
		locks = append(locks, k.text)
	}
	// Written records, one UNIQUE lock per distinct written value (new@x once,
	// none for u2 without email, none for the unlockable index).
	want := "users:u1 uniq:users.u_email=[new@x] uniq:users.u_pair=[2 <nil>] users:u2 users:u3 acct:2 fresh:3"
	if strings.Join(locks, " ") != want {
		t.Fatalf("locks = %q\nwant    %q", strings.Join(locks, " "), want)
	}
	if len(p.writes) != 4 { // the delete of a record that never existed is dropped
		t.Fatalf("writes = %+v", p.writes)
	}
	for _, w := range p.writes {
		if w.rid == noopDel.rid {
			t.Fatalf("no-op delete planned")
		}
		if !w.delete && w.after[testVersionField] != "NEWV" {
			t.Fatalf("after-image without the new version: %v", w.after)
		}
	}
	if upd.after[testVersionField] != nil {
		t.Fatalf("makePlan modified the staged after-image")
	}
	if !p.dryRun || p.guarded || fmt.Sprint(p.missingTables) != "[fresh]" {
		t.Fatalf("dryRun=%v guarded=%v missing=%v", p.dryRun, p.guarded, p.missingTables)
	}

	// Serializable: the read record is locked too.
	ps := makePlan("g1", "NEWV", testVersionField, recs, schemas, true)
	if len(ps.locks) != len(p.locks)+1 || ps.locks[0].text != "acct:1" {
		t.Fatalf("serializable locks = %v", ps.locks)
	}
	// Unconstrained tables need no dry-run.
	pu := makePlan("g1", "NEWV", testVersionField, []*record{read, del}, schemas, false)
	if pu.dryRun {
		t.Fatal("dry-run planned for unconstrained tables")
	}
}

func TestBuildPrepare(t *testing.T) {
	r := rec("acct", int64(1))
	r.version, r.written, r.after = "V1", true, map[string]any{"n": int64(1)}
	schemas := map[string]*tableSchema{"acct": {exists: true, constrained: true, guarded: true}}
	p := makePlan("g:1", "NEWV", testVersionField, []*record{r}, schemas, false)
	s := buildPrepare(testTables(), "sur1", p)
	text := s.text()
	for _, want := range []string{
		"LET $txc_dry = false",
		"DELETE type::record(", // own locks, before the dry-run's writes (guarded table)
		"UPSERT $txc_",
		"LET $txc_dry = true",
		"IF $txc_dry != true",
		"IF ((SELECT VALUE (_v ?? '') FROM ONLY $txc_",
		"CREATE type::record($txc_1, $txc_",
		"prepared_at: time::now()",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("prepare script lacks %q:\n%s", want, text)
		}
	}
	// Order: dry-run block, then the prepare block.
	if strings.Index(text, "LET $txc_dry = true") > strings.Index(text, "IF $txc_dry != true") {
		t.Fatalf("dry-run after prepare:\n%s", text)
	}
	// Values are parameters: no record id, GID or version in the text.
	for _, leak := range []string{"acct", "g:1", "NEWV", "V1", "sur1"} {
		if strings.Contains(text, leak) {
			t.Errorf("value %q written into the text:\n%s", leak, text)
		}
	}
	if s.vars["txc_0"] != "g:1" {
		t.Fatalf("first parameter is %v, want the GID", s.vars["txc_0"])
	}
	// Without constraints, no dry-run.
	schemas["acct"] = &tableSchema{exists: true}
	p = makePlan("g:1", "NEWV", testVersionField, []*record{r}, schemas, false)
	if text := buildPrepare(testTables(), "sur1", p).text(); strings.Contains(text, "txc_dry") {
		t.Fatalf("dry-run without constraints:\n%s", text)
	}
}

func TestBuildOnePhaseTouchesLocks(t *testing.T) {
	r := rec("acct", int64(1))
	r.version, r.written, r.after = "V1", true, map[string]any{"n": int64(1)}
	p := makePlan("g:1", "NEWV", testVersionField, []*record{r}, map[string]*tableSchema{}, false)
	text := buildOnePhase(testTables(), p).text()
	f := strings.Index(text, "SELECT VALUE outcome FROM ONLY")
	c := strings.Index(text, "CREATE type::record(")
	d := strings.Index(text, "DELETE type::record(")
	u := strings.Index(text, "UPSERT ")
	m := strings.Index(text, "outcome: 'commit'")
	e := strings.Index(text, "COMMIT TRANSACTION")
	if f < 0 || c < f || d < c || u < d || m < u || e < m || !strings.HasPrefix(text, "BEGIN") {
		t.Fatalf("one-phase must check the GID is not finished, create+delete each lock, apply, "+
			"then write the commit marker, all in the transaction:\n%s", text)
	}
}

// --- replies for locate and classification ---

func cborOf(t *testing.T, v any) cbor.RawMessage {
	t.Helper()
	em, err := newEncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func okStmt(t *testing.T) stmtResult { return stmtResult{Status: "OK", Result: cborOf(t, nil)} }

func errStmt(t *testing.T, kind, detail, msg string) stmtResult {
	r := stmtResult{Status: "ERR", Kind: kind, Result: cborOf(t, msg)}
	if detail != "" {
		r.Details = map[string]any{"kind": detail}
	}
	return r
}

func notExecuted(t *testing.T) stmtResult {
	return errStmt(t, kindQuery, detailNotExecuted, "The query was not executed due to a failed transaction")
}

func cancelled(t *testing.T) stmtResult {
	return errStmt(t, kindQuery, detailCancelled, "The query was not executed due to a cancelled transaction")
}

func thrown(t *testing.T, marker string) stmtResult {
	return errStmt(t, kindThrown, "", "An error occurred: "+marker)
}

func replyOf(stmts ...stmtResult) *queryReply {
	return &queryReply{stmts: stmts, dec: surrealcbor.New()}
}

func TestLocate(t *testing.T) {
	s := newScript()
	s.stmt(roleOther, -1, "LET $txc_dry = false")
	s.begin()
	s.stmt(roleApply, -1, "UPSERT a")
	s.stmt(roleOther, -1, "LET $txc_dry = true")
	s.stmt(roleDryRunEnd, -1, "THROW dry")
	s.commit()
	s.stmt(roleDDL, -1, "DEFINE TABLE IF NOT EXISTS x")
	s.begin()
	s.stmt(roleCheck, 0, "IF version")
	s.stmt(roleLock, -1, "CREATE lock")
	s.stmt(roleIntent, -1, "CREATE intent")
	s.commit()

	// Dry-run passed, the lock CREATE failed; the dry-run's COMMIT and the
	// prepare's COMMIT send no result; the DDL lost a race.
	q := replyOf(
		okStmt(t), okStmt(t), notExecuted(t), notExecuted(t), thrown(t, markerDryRunPassed),
		errStmt(t, kindInternal, "", "Transaction conflict: Resource busy. This transaction can be retried"),
		okStmt(t), notExecuted(t),
		stmtResult{Status: "ERR", Kind: kindAlreadyExists, Result: cborOf(t, "Database record `txc_lock:[a:1]` already exists"),
			Details: map[string]any{"kind": "Record", "details": map[string]any{"id": "txc_lock:[a:1]"}}},
		cancelled(t),
	)
	fails := s.locate(q)
	if len(fails) != 2 {
		t.Fatalf("failures = %+v", fails)
	}
	if fails[0].role != roleDryRunEnd || !fails[0].err.hasMarker(markerDryRunPassed) {
		t.Fatalf("first failure = %+v %v", fails[0], fails[0].err)
	}
	if fails[1].role != roleLock || fails[1].err.Kind != kindAlreadyExists || fails[1].err.RecordID != "txc_lock:[a:1]" {
		t.Fatalf("second failure = %+v %v", fails[1], fails[1].err)
	}

	// Everything succeeded: the prepare's COMMIT has a result.
	q = replyOf(okStmt(t), okStmt(t), notExecuted(t), notExecuted(t), thrown(t, markerDryRunPassed),
		okStmt(t), okStmt(t), okStmt(t), okStmt(t), okStmt(t), okStmt(t))
	if fails := s.locate(q); len(fails) != 1 || fails[0].role != roleDryRunEnd {
		t.Fatalf("failures = %+v", fails)
	}

	// A shape we do not expect: failures still come back, without roles.
	q = replyOf(okStmt(t), thrown(t, markerDryRunPassed))
	if fails := s.locate(q); len(fails) != 1 || fails[0].role != roleOther {
		t.Fatalf("failures = %+v", fails)
	}
}

func TestStmtErrorClassification(t *testing.T) {
	q := replyOf(
		thrown(t, versionMarker(12)),
		errStmt(t, kindInternal, "", "Query not executed: Transaction conflict: Resource busy: . This transaction can be retried"),
		errStmt(t, kindInternal, "", "Database index `u_email` already contains 'a', with record `u:1`"),
		errStmt(t, "NotFound", "Table", "The table 'nope' does not exist"),
		errStmt(t, kindInternal, "", "Error while processing event txc_guard: An error occurred: "+markerGuardLocked),
		notExecuted(t),
		cancelled(t),
	)
	errs := q.errors()
	if len(errs) != 5 {
		t.Fatalf("errors = %v (echoes must be skipped)", errs)
	}
	if i, ok := errs[0].versionIndex(); !ok || i != 12 {
		t.Fatalf("versionIndex = %d, %v", i, ok)
	}
	if _, ok := errs[1].versionIndex(); ok {
		t.Fatal("versionIndex of a conflict")
	}
	if !errs[1].isRetryableConflict() || errs[2].isRetryableConflict() {
		t.Fatal("retryable conflict misclassified")
	}
	if !errs[3].isTableNotFound() || errs[2].isTableNotFound() {
		t.Fatal("table not found misclassified")
	}
	if !errs[4].hasMarker(markerGuardLocked) || errs[0].hasMarker(markerGuardLocked) {
		t.Fatal("guard marker misclassified")
	}
	// No marker is a prefix of another's text.
	markers := []string{markerDryRunPassed, markerDryRunFailed, markerAlreadyPrepared, markerFinished,
		versionMarker(1), versionMarker(10), markerCommitted, markerAborted, markerNotPrepared, markerGuardLocked}
	for i, a := range markers {
		for j, b := range markers {
			if i != j && strings.Contains(b, a) {
				t.Fatalf("marker %q is inside %q", a, b)
			}
		}
	}
}

func TestConflictOf(t *testing.T) {
	p := &Participant{cfg: DefaultConfig(), tbl: DefaultConfig().tables()}
	b := &branch{p: p, gid: "g"}
	pl := &plan{checks: []check{{rid: models.NewRecordID("acct", int64(7))}}}
	f := func(e stmtResult, role stmtRole) failure {
		return failure{err: replyOf(e).errorAt(0), role: role, rec: -1}
	}
	lockExists := stmtResult{Status: "ERR", Kind: kindAlreadyExists, Result: cborOf(t, "exists"),
		Details: map[string]any{"kind": "Record", "details": map[string]any{"id": "txc_lock:[acct:7]"}}}
	for _, tc := range []struct {
		name string
		f    failure
		want error
		text string
	}{
		{"version", f(thrown(t, versionMarker(0)), roleCheck), participants.ErrConflict, "acct:7 changed"},
		{"lock", f(lockExists, roleLock), participants.ErrConflict, "locked by another transaction"},
		{"retryable", f(errStmt(t, kindInternal, "", "Transaction conflict. This transaction can be retried"), roleCheck), participants.ErrConflict, ""},
		{"guard", f(errStmt(t, kindInternal, "", "event: "+markerGuardLocked), roleApply), participants.ErrConflict, ""},
		{"apply", f(errStmt(t, kindInternal, "", "Found -1 for field `n`"), roleApply), participants.ErrConstraint, ""},
		{"finished", f(thrown(t, markerFinished), roleCheck), nil, "already committed or rolled back"},
	} {
		err := b.conflictOf(pl, tc.f, "prepare")
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == nil && (errors.Is(err, participants.ErrConflict) || errors.Is(err, participants.ErrConstraint)) {
			t.Errorf("%s: %v is not a conflict or constraint", tc.name, err)
		}
		if !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v lacks %q", tc.name, err, tc.text)
		}
	}
	// The dry-run: a constraint unless it is a conflict.
	if err := b.dryRunFailure(f(errStmt(t, kindInternal, "", "Database index `x` already contains 'a'"), roleApply)); !errors.Is(err, participants.ErrConstraint) {
		t.Errorf("dry-run UNIQUE: %v", err)
	}
	if err := b.dryRunFailure(f(errStmt(t, kindInternal, "", "x. This transaction can be retried"), roleApply)); !errors.Is(err, participants.ErrConflict) {
		t.Errorf("dry-run conflict: %v", err)
	}
}

func TestTransportErrors(t *testing.T) {
	notSent := &transportError{err: errors.New("dial refused")}
	sent := &transportError{err: errors.New("timeout"), sent: true}
	for _, e := range []error{notSent, sent} {
		if !errors.Is(fmt.Errorf("wrapped: %w", e), participants.ErrUnavailable) {
			t.Errorf("%v is not ErrUnavailable", e)
		}
		if errors.Is(e, participants.ErrAmbiguous) {
			t.Errorf("%v is ErrAmbiguous by itself (the caller decides)", e)
		}
	}
	if mayHaveRun(fmt.Errorf("x: %w", notSent)) || !mayHaveRun(fmt.Errorf("x: %w", sent)) {
		t.Error("mayHaveRun")
	}
}

func TestGuardEventSQL(t *testing.T) {
	var skipped []string
	sql := guardEventSQL(testTables(), "users", []uniqueIndex{
		{name: "u_email", cols: []string{"email"}, lockable: true},
		{name: "u_addr", cols: []string{"addr.city", "addr.zip"}, lockable: true},
		{name: "u_tags", cols: []string{"tags[*]"}, lockable: false},
	}, &skipped)
	for _, want := range []string{
		"DEFINE EVENT OVERWRITE txc_guard ON TABLE `users`",
		"type::record('txc_lock', [$txc_rid])",
		"THROW '" + markerGuardLocked + "'",
		"['uniq', 'users', 'u_email', [$after.email]]",
		"['uniq', 'users', 'u_addr', [$after.addr.city, $after.addr.zip]]",
		"IF $after._v = $before._v { UPDATE $txc_rid SET _v = rand::ulid() }",
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("guard lacks %q:\n%s", want, sql)
		}
	}
	if fmt.Sprint(skipped) != "[u_tags]" {
		t.Errorf("skipped = %v", skipped)
	}
}

func TestQuoting(t *testing.T) {
	if got := quoteIdent("we`ird\\t"); got != "`we\\`ird\\\\t`" {
		t.Errorf("quoteIdent = %s", got)
	}
	if got := quoteString("it's\\"); got != `'it\'s\\'` {
		t.Errorf("quoteString = %s", got)
	}
}

func TestLockText(t *testing.T) {
	if got := lockText([]any{models.NewRecordID("acct", int64(1))}); got != "acct:1" {
		t.Errorf("record lock = %s", got)
	}
	if got := lockText([]any{"uniq", "users", "u_email", []any{"a@x"}}); got != "uniq:users.u_email=[a@x]" {
		t.Errorf("unique lock = %s", got)
	}
}
