package surrealdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// Integration tests run against a real server when TXCOORD_SURREAL_URL is
// set (the project's dev server: scripts/surreal.sh up; eval "$(scripts/surreal.sh env)").

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// integrationConfig returns a Config for the test server or skips the test.
func integrationConfig(t testing.TB) Config {
	t.Helper()
	url := os.Getenv("TXCOORD_SURREAL_URL")
	if url == "" {
		t.Skip("TXCOORD_SURREAL_URL is not set: skipping SurrealDB integration test (start the dev server with scripts/surreal.sh up)")
	}
	cfg := DefaultConfig()
	cfg.Name = "surreal-test"
	cfg.URL = url
	cfg.Username = envOr("TXCOORD_SURREAL_USER", "root")
	cfg.Password = envOr("TXCOORD_SURREAL_PASS", "root")
	cfg.Namespace = envOr("TXCOORD_SURREAL_NS", "txcoord")
	cfg.Database = envOr("TXCOORD_SURREAL_DB", "test")
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TXCOORD_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openTest(t testing.TB, cfg Config) *Participant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Open(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// tempTable returns a table name unique to this test and removes the
// table when the test ends, so runs do not pile tables up in the shared
// development database.
func tempTable(t testing.TB, prefix string) string {
	t.Helper()
	name := unique(prefix)
	cfg := integrationConfig(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := Open(ctx, cfg, testLogger(t))
		if err != nil {
			t.Logf("cleanup of table %s: %v", name, err)
			return
		}
		defer p.Close()
		if _, err := p.pool.query(ctx, "REMOVE TABLE IF EXISTS "+quoteIdent(name), nil); err != nil {
			t.Logf("cleanup of table %s: %v", name, err)
		}
	})
	return name
}

// unique returns a name unique to this test run.
func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// raw runs SurrealQL directly (setup and inspection), failing on any error.
func raw(t testing.TB, p *Participant, sql string, vars map[string]any) *queryReply {
	t.Helper()
	q, err := p.pool.query(testCtx(t), sql, vars)
	if err != nil {
		t.Fatalf("raw %q: %v", sql, err)
	}
	if errs := q.errors(); len(errs) > 0 {
		t.Fatalf("raw %q: %v", sql, errs[0])
	}
	return q
}

func mustExec(t testing.TB, b participants.Branch, op participants.Operation) participants.Result {
	t.Helper()
	res, err := b.Execute(testCtx(t), op)
	if err != nil {
		t.Fatalf("Execute %v %v: %v", op.Kind, op.Record, err)
	}
	return res
}

func mustBegin(t testing.TB, p *Participant, gid string, opts participants.BranchOptions) participants.Branch {
	t.Helper()
	b, err := p.Begin(testCtx(t), gid, opts)
	if err != nil {
		t.Fatalf("Begin %s: %v", gid, err)
	}
	return b
}

func mustPrepare(t testing.TB, b participants.Branch, want participants.Vote) {
	t.Helper()
	v, err := b.Prepare(testCtx(t))
	if v != want || (want != participants.VoteNo && err != nil) {
		t.Fatalf("Prepare %s = %v, %v; want %v", b.GID(), v, err, want)
	}
}

// readField reads one field of a committed record (outside any branch).
func readField(t testing.TB, p *Participant, rid participants.RecordID, field string) any {
	t.Helper()
	mrid, err := toRecordID(rid)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := p.fetch(testCtx(t), mrid)
	if err != nil {
		t.Fatalf("fetch %v: %v", rid, err)
	}
	if img == nil {
		return nil
	}
	return fromSurreal(img[field])
}

func upsert(rid participants.RecordID, content map[string]any) participants.Operation {
	return participants.Operation{Kind: participants.OpUpsert, Record: rid, Content: content}
}

func TestIntegrationPrepareCommit(t *testing.T) {
	cfg := integrationConfig(t)
	p := openTest(t, cfg)
	ctx := testCtx(t)
	table := tempTable(t, "acct")
	rid := participants.RecordID{Table: table, ID: int64(1)}
	gid := unique("it:c1") + ":1:s"

	b := mustBegin(t, p, gid, participants.BranchOptions{})
	res := mustExec(t, b, upsert(rid, map[string]any{"bal": int64(10), "owner": "ann"}))
	if res.RowsAffected != 1 {
		t.Fatalf("upsert RowsAffected = %d", res.RowsAffected)
	}
	// Read your own staged write.
	res = mustExec(t, b, participants.Operation{Kind: participants.OpRead, Record: rid})
	if len(res.Rows) != 1 || fmt.Sprint(res.Rows[0]) != fmt.Sprintf("[%s:1 10 ann]", table) {
		t.Fatalf("read own write: %v %v", res.Columns, res.Rows)
	}
	if got := readField(t, p, rid, "bal"); got != nil {
		t.Fatalf("staged write visible outside the branch: bal = %v", got)
	}
	mustPrepare(t, b, participants.VoteYes)
	// Prepared, not committed: invisible, and listed in doubt with its lock.
	if got := readField(t, p, rid, "bal"); got != nil {
		t.Fatalf("prepared write visible before commit: bal = %v", got)
	}
	ind, err := p.InDoubt(ctx, gid)
	if err != nil || len(ind) != 1 || ind[0].GID != gid || len(ind[0].Locks) != 1 || ind[0].PreparedAt.IsZero() {
		t.Fatalf("InDoubt = %+v, %v", ind, err)
	}
	if err := p.CommitPrepared(ctx, gid); err != nil {
		t.Fatalf("CommitPrepared: %v", err)
	}
	if got := readField(t, p, rid, "bal"); got != int64(10) {
		t.Fatalf("after commit bal = %v", got)
	}
	if v := readField(t, p, rid, cfg.VersionField); v == nil || v == "" {
		t.Fatalf("version field not set: %v", v)
	}
	// Idempotent; and no intent left.
	for i := 0; i < 3; i++ {
		if err := p.CommitPrepared(ctx, gid); err != nil {
			t.Fatalf("repeated CommitPrepared: %v", err)
		}
	}
	if ind, _ := p.InDoubt(ctx, gid); len(ind) != 0 {
		t.Fatalf("intent left after commit: %+v", ind)
	}
	// Rolling back a committed GID is a protocol violation.
	if err := p.RollbackPrepared(ctx, gid); !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("RollbackPrepared after commit = %v, want ErrProtocolViolation", err)
	}
	// A late prepare of a finished GID votes NO.
	b2 := mustBegin(t, p, gid, participants.BranchOptions{})
	mustExec(t, b2, upsert(rid, map[string]any{"bal": int64(99)}))
	if v, err := b2.Prepare(ctx); v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("prepare of a committed GID = %v, %v", v, err)
	}
	_ = b2.Rollback(ctx)
}

func TestIntegrationNotPrepared(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	gid := unique("it:np") + ":1:s"
	if err := p.CommitPrepared(ctx, gid); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared(unknown) = %v, want ErrNotPrepared", err)
	}
	if err := p.RollbackPrepared(ctx, gid); err != nil {
		t.Fatalf("RollbackPrepared(unknown) = %v, want nil", err)
	}
	if err := p.RollbackPrepared(ctx, gid); err != nil {
		t.Fatalf("RollbackPrepared repeated = %v, want nil", err)
	}
	err := p.CommitPrepared(ctx, gid)
	if !errors.Is(err, participants.ErrNotPrepared) || !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("CommitPrepared(rolled back) = %v, want ErrNotPrepared and ErrProtocolViolation", err)
	}
	if !strings.Contains(err.Error(), "protocol violation") {
		t.Fatalf("error does not say protocol violation: %v", err)
	}
}

func TestIntegrationLockConflict(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "lc")
	rid := participants.RecordID{Table: table, ID: "k-1"} // would parse as k - 1 if it were text
	gidA, gidB, gidC := unique("it:lc")+":a", unique("it:lc")+":b", unique("it:lc")+":c"

	a := mustBegin(t, p, gidA, participants.BranchOptions{})
	mustExec(t, a, upsert(rid, map[string]any{"v": "a"}))
	b := mustBegin(t, p, gidB, participants.BranchOptions{})
	mustExec(t, b, upsert(rid, map[string]any{"v": "b"}))
	c := mustBegin(t, p, gidC, participants.BranchOptions{})
	mustExec(t, c, upsert(rid, map[string]any{"v": "c"}))

	mustPrepare(t, a, participants.VoteYes)
	start := time.Now()
	v, err := b.Prepare(ctx)
	if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) || !errors.Is(err, participants.ErrConflict) {
		t.Fatalf("second prepare = %v, %v; want NO wrapping ErrVoteNo and ErrConflict", v, err)
	}
	if errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("a lock conflict is definite, got %v", err)
	}
	t.Logf("conflicting prepare voted NO in %v: %v", time.Since(start), err)
	// A one-phase commit of the locked record fails definitely with ErrConflict.
	err = c.CommitOnePhase(ctx)
	if !errors.Is(err, participants.ErrConflict) || errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("one-phase commit of a locked record = %v, want ErrConflict", err)
	}
	if err := b.Rollback(ctx); err != nil {
		t.Fatalf("Rollback after NO: %v", err)
	}
	if err := p.CommitPrepared(ctx, gidA); err != nil {
		t.Fatal(err)
	}
	if got := readField(t, p, rid, "v"); got != "a" {
		t.Fatalf("v = %v, want a", got)
	}
	// The lock is gone with the commit: a new branch prepares.
	d := mustBegin(t, p, unique("it:lc")+":d", participants.BranchOptions{})
	mustExec(t, d, upsert(rid, map[string]any{"v": "d"}))
	if err := d.CommitOnePhase(ctx); err != nil {
		t.Fatalf("one-phase after the lock was released: %v", err)
	}
	if got := readField(t, p, rid, "v"); got != "d" {
		t.Fatalf("v = %v, want d", got)
	}
}

func TestIntegrationUniqueIndex(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "users")
	raw(t, p, fmt.Sprintf("DEFINE TABLE %s SCHEMALESS; DEFINE INDEX %s_email ON %s FIELDS email UNIQUE;", table, table, table), nil)
	rid := func(id int64) participants.RecordID { return participants.RecordID{Table: table, ID: id} }
	create := func(id int64, email string) participants.Operation {
		return participants.Operation{Kind: participants.OpCreate, Record: rid(id), Content: map[string]any{"email": email}}
	}
	seed := mustBegin(t, p, unique("it:uq")+":seed", participants.BranchOptions{})
	mustExec(t, seed, create(1, "x@example.com"))
	if err := seed.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}

	// A value already taken: the dry-run at prepare catches the UNIQUE violation.
	dup := mustBegin(t, p, unique("it:uq")+":dup", participants.BranchOptions{})
	mustExec(t, dup, create(2, "x@example.com"))
	v, err := dup.Prepare(ctx)
	if v != participants.VoteNo || !errors.Is(err, participants.ErrConstraint) {
		t.Fatalf("prepare of a duplicate UNIQUE value = %v, %v; want NO wrapping ErrConstraint", v, err)
	}
	t.Logf("duplicate UNIQUE value: %v", err)
	if ind, _ := p.InDoubt(ctx, dup.GID()); len(ind) != 0 {
		t.Fatalf("a failed dry-run left an intent: %+v", ind)
	}

	// A value taken by another prepared branch: its UNIQUE lock refuses the
	// second prepare, although the value is not committed yet (the dry-run
	// alone would pass, and the second commit would fail forever).
	gidA := unique("it:uq") + ":a"
	a := mustBegin(t, p, gidA, participants.BranchOptions{})
	mustExec(t, a, create(3, "y@example.com"))
	mustPrepare(t, a, participants.VoteYes)
	if ind, _ := p.InDoubt(ctx, gidA); len(ind) != 1 || len(ind[0].Locks) != 2 {
		t.Fatalf("want a record lock and a UNIQUE lock, got %+v", ind)
	}
	b := mustBegin(t, p, unique("it:uq")+":b", participants.BranchOptions{})
	mustExec(t, b, create(4, "y@example.com"))
	v, err = b.Prepare(ctx)
	if v != participants.VoteNo || !errors.Is(err, participants.ErrConflict) {
		t.Fatalf("prepare of a value locked by a prepared branch = %v, %v; want NO wrapping ErrConflict", v, err)
	}
	if err := p.CommitPrepared(ctx, gidA); err != nil {
		t.Fatal(err)
	}
	// Absent values take no lock: two records without email prepare together.
	n1 := mustBegin(t, p, unique("it:uq")+":n1", participants.BranchOptions{})
	mustExec(t, n1, participants.Operation{Kind: participants.OpCreate, Record: rid(5), Content: map[string]any{"name": "n1"}})
	n2 := mustBegin(t, p, unique("it:uq")+":n2", participants.BranchOptions{})
	mustExec(t, n2, participants.Operation{Kind: participants.OpCreate, Record: rid(6), Content: map[string]any{"name": "n2"}})
	mustPrepare(t, n1, participants.VoteYes)
	mustPrepare(t, n2, participants.VoteYes)
	for _, g := range []string{n1.GID(), n2.GID()} {
		if err := p.CommitPrepared(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIntegrationConstraintsAtPrepare(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "strict")
	raw(t, p, fmt.Sprintf("DEFINE TABLE %[1]s SCHEMAFULL; DEFINE FIELD n ON %[1]s TYPE int ASSERT $value >= 0;", table), nil)
	rid := participants.RecordID{Table: table, ID: int64(1)}
	for name, content := range map[string]map[string]any{
		"assert":        {"n": int64(-1)},
		"type":          {"n": "not a number"},
		"schemafull":    {"n": int64(1), "undefined_field": true},
		"version field": {"n": int64(1)}, // SCHEMAFULL without the version field defined
	} {
		b := mustBegin(t, p, unique("it:cs")+":1", participants.BranchOptions{})
		mustExec(t, b, upsert(rid, content))
		v, err := b.Prepare(ctx)
		if v != participants.VoteNo || !errors.Is(err, participants.ErrConstraint) {
			t.Fatalf("%s: prepare = %v, %v; want NO wrapping ErrConstraint", name, v, err)
		}
		t.Logf("%s: %v", name, err)
	}
	// With the version field defined, a valid write prepares and commits.
	raw(t, p, fmt.Sprintf("DEFINE FIELD %s ON %s TYPE option<string>;", DefaultConfig().VersionField, table), nil)
	p.schemas.forget(table)
	b := mustBegin(t, p, unique("it:cs")+":ok", participants.BranchOptions{})
	mustExec(t, b, upsert(rid, map[string]any{"n": int64(7)}))
	mustPrepare(t, b, participants.VoteYes)
	if err := p.CommitPrepared(ctx, b.GID()); err != nil {
		t.Fatal(err)
	}
	if got := readField(t, p, rid, "n"); got != int64(7) {
		t.Fatalf("n = %v", got)
	}
}

func TestIntegrationVersionCheck(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "vc")
	r1 := participants.RecordID{Table: table, ID: "r1"}
	r2 := participants.RecordID{Table: table, ID: "r2"}
	seed := mustBegin(t, p, unique("it:vc")+":seed", participants.BranchOptions{})
	mustExec(t, seed, upsert(r1, map[string]any{"n": int64(1)}))
	if err := seed.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		write func(t *testing.T) // a concurrent write between the branch's read and its prepare
	}{
		{"one-phase commit", func(t *testing.T) {
			w := mustBegin(t, p, unique("it:vc")+":w", participants.BranchOptions{})
			mustExec(t, w, participants.Operation{Kind: participants.OpMerge, Record: r1, Content: map[string]any{"n": int64(2)}})
			if err := w.CommitOnePhase(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"prepared and committed", func(t *testing.T) {
			w := mustBegin(t, p, unique("it:vc")+":w", participants.BranchOptions{})
			mustExec(t, w, participants.Operation{Kind: participants.OpMerge, Record: r1, Content: map[string]any{"n": int64(3)}})
			mustPrepare(t, w, participants.VoteYes)
			if err := p.CommitPrepared(ctx, w.GID()); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete", func(t *testing.T) {
			w := mustBegin(t, p, unique("it:vc")+":w", participants.BranchOptions{})
			mustExec(t, w, participants.Operation{Kind: participants.OpDelete, Record: r1})
			if err := w.CommitOnePhase(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"create", func(t *testing.T) { // r1 was deleted by the previous case
			w := mustBegin(t, p, unique("it:vc")+":w", participants.BranchOptions{})
			mustExec(t, w, participants.Operation{Kind: participants.OpCreate, Record: r1, Content: map[string]any{"n": int64(9)}})
			if err := w.CommitOnePhase(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustBegin(t, p, unique("it:vc")+":b", participants.BranchOptions{})
			mustExec(t, b, participants.Operation{Kind: participants.OpRead, Record: r1})
			mustExec(t, b, upsert(r2, map[string]any{"from": "b"}))
			tc.write(t)
			v, err := b.Prepare(ctx)
			if v != participants.VoteNo || !errors.Is(err, participants.ErrConflict) {
				t.Fatalf("prepare after a concurrent %s = %v, %v; want NO wrapping ErrConflict", tc.name, v, err)
			}
			if !strings.Contains(err.Error(), "changed since the branch read it") {
				t.Fatalf("want a version mismatch, got %v", err)
			}
			_ = b.Rollback(ctx)
		})
	}
	if got := readField(t, p, r2, "from"); got != nil {
		t.Fatalf("r2 written by a branch that voted NO: %v", got)
	}

	// Rows an OpQuery returns with their id and version are validated too.
	b := mustBegin(t, p, unique("it:vc")+":q", participants.BranchOptions{})
	mustExec(t, b, participants.Operation{Kind: participants.OpQuery, SQL: "SELECT * FROM type::table($t) WHERE n != NONE",
		Vars: map[string]any{"t": table}})
	mustExec(t, b, upsert(r2, map[string]any{"from": "q"}))
	w := mustBegin(t, p, unique("it:vc")+":w", participants.BranchOptions{})
	mustExec(t, w, participants.Operation{Kind: participants.OpMerge, Record: r1, Content: map[string]any{"n": int64(42)}})
	if err := w.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Prepare(ctx); v != participants.VoteNo || !errors.Is(err, participants.ErrConflict) {
		t.Fatalf("prepare after a change to a queried row = %v, %v; want NO wrapping ErrConflict", v, err)
	}
}

func TestIntegrationConcurrentPhaseTwo(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "p2")
	const repeats = 8
	for _, commit := range []bool{true, false} {
		gid := unique("it:p2") + ":1"
		rid := participants.RecordID{Table: table, ID: gid}
		b := mustBegin(t, p, gid, participants.BranchOptions{})
		mustExec(t, b, upsert(rid, map[string]any{"v": int64(1)}))
		mustPrepare(t, b, participants.VoteYes)
		var wg sync.WaitGroup
		errs := make([]error, repeats)
		for i := 0; i < repeats; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if commit {
					errs[i] = p.CommitPrepared(ctx, gid)
				} else {
					errs[i] = p.RollbackPrepared(ctx, gid)
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("commit=%v repeat %d: %v", commit, i, err)
			}
		}
		got := readField(t, p, rid, "v")
		if commit && got != int64(1) || !commit && got != nil {
			t.Fatalf("commit=%v: v = %v", commit, got)
		}
		var locks []any
		raw(t, p, "SELECT VALUE id FROM type::table($t) WHERE gid = $g", map[string]any{"t": p.tbl.lock, "g": gid}).last(&locks)
		if len(locks) != 0 {
			t.Fatalf("commit=%v: locks left: %v", commit, locks)
		}
		var outcome any
		raw(t, p, "SELECT VALUE outcome FROM ONLY type::record($t, $g)", map[string]any{"t": p.tbl.marker, "g": gid}).last(&outcome)
		if want := map[bool]string{true: "commit", false: "abort"}[commit]; outcome != want {
			t.Fatalf("marker outcome = %v, want %s", outcome, want)
		}
	}
}

func TestIntegrationIntentSurvivesReopen(t *testing.T) {
	cfg := integrationConfig(t)
	p1 := openTest(t, cfg)
	ctx := testCtx(t)
	table := tempTable(t, "reopen")
	prefix := unique("it:ro") + ":"
	var gids []string
	for i := 0; i < 3; i++ {
		gid := fmt.Sprintf("%s%d", prefix, i)
		b := mustBegin(t, p1, gid, participants.BranchOptions{})
		mustExec(t, b, upsert(participants.RecordID{Table: table, ID: int64(i)}, map[string]any{"i": int64(i)}))
		mustExec(t, b, upsert(participants.RecordID{Table: table, ID: []any{"pair", int64(i)}}, map[string]any{"i": int64(i)}))
		mustPrepare(t, b, participants.VoteYes)
		gids = append(gids, gid)
	}
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Begin(ctx, prefix+"x", participants.BranchOptions{}); err == nil {
		t.Fatalf("Begin after Close succeeded")
	}
	p2 := openTest(t, cfg)
	ind, err := p2.InDoubt(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(ind) != 3 {
		t.Fatalf("InDoubt after reopen = %+v, want 3", ind)
	}
	for i, b := range ind {
		if b.GID != gids[i] || len(b.Locks) != 2 || b.PreparedAt.IsZero() || time.Since(b.PreparedAt) > time.Minute {
			t.Fatalf("InDoubt[%d] = %+v", i, b)
		}
	}
	t.Logf("in doubt after reopen: %+v", ind[0])
	for _, gid := range gids {
		if err := p2.CommitPrepared(ctx, gid); err != nil {
			t.Fatal(err)
		}
	}
	if got := readField(t, p2, participants.RecordID{Table: table, ID: []any{"pair", int64(2)}}, "i"); got != int64(2) {
		t.Fatalf("array-id record after commit: %v", got)
	}
	if ind, _ := p2.InDoubt(ctx, prefix); len(ind) != 0 {
		t.Fatalf("in doubt after commit: %+v", ind)
	}
}

func TestIntegrationInDoubtPaging(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	prefix := unique("it:pg") + ":"
	table := tempTable(t, "pg")
	const n = inDoubtPage + 7
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			gid := fmt.Sprintf("%s%04d", prefix, i)
			b := mustBegin(t, p, gid, participants.BranchOptions{})
			mustExec(t, b, upsert(participants.RecordID{Table: table, ID: int64(i)}, map[string]any{"i": int64(i)}))
			mustPrepare(t, b, participants.VoteYes)
		}()
	}
	wg.Wait()
	// A GID that shares the prefix's first characters but not the prefix.
	other := strings.TrimSuffix(prefix, ":") + "x:1"
	ob := mustBegin(t, p, other, participants.BranchOptions{})
	mustExec(t, ob, upsert(participants.RecordID{Table: table, ID: "other"}, nil))
	mustPrepare(t, ob, participants.VoteYes)

	ind, err := p.InDoubt(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(ind) != n {
		t.Fatalf("InDoubt listed %d, want %d", len(ind), n)
	}
	for i, b := range ind {
		if want := fmt.Sprintf("%s%04d", prefix, i); b.GID != want {
			t.Fatalf("InDoubt[%d] = %s, want %s", i, b.GID, want)
		}
	}
	for _, b := range append(ind, participants.InDoubtBranch{GID: other}) {
		if err := p.RollbackPrepared(ctx, b.GID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIntegrationReadYourWrites(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "ryw")
	rid := func(id any) participants.RecordID { return participants.RecordID{Table: table, ID: id} }
	seed := mustBegin(t, p, unique("it:ryw")+":seed", participants.BranchOptions{})
	mustExec(t, seed, upsert(rid(int64(1)), map[string]any{"n": int64(1), "tags": []any{"a"}, "addr": map[string]any{"city": "Oslo", "zip": "0150"}}))
	mustExec(t, seed, upsert(rid(int64(2)), map[string]any{"n": int64(2)}))
	if err := seed.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}

	b := mustBegin(t, p, unique("it:ryw")+":b", participants.BranchOptions{})
	res := mustExec(t, b, participants.Operation{Kind: participants.OpMerge, Record: rid(int64(1)),
		Content: map[string]any{"n": int64(10), "addr": map[string]any{"city": "Bergen"}}})
	if fmt.Sprint(res.Columns) != "[id addr n tags]" ||
		fmt.Sprint(res.Rows[0][1]) != "map[city:Bergen zip:0150]" || res.Rows[0][2] != int64(10) {
		t.Fatalf("merge result: %v %v", res.Columns, res.Rows)
	}
	if res := mustExec(t, b, participants.Operation{Kind: participants.OpDelete, Record: rid(int64(2))}); res.RowsAffected != 1 {
		t.Fatalf("delete RowsAffected = %d", res.RowsAffected)
	}
	if res := mustExec(t, b, participants.Operation{Kind: participants.OpRead, Record: rid(int64(2))}); len(res.Rows) != 0 {
		t.Fatalf("deleted record still visible in the branch: %v", res.Rows)
	}
	mustExec(t, b, participants.Operation{Kind: participants.OpCreate, Record: rid(int64(3)), Content: map[string]any{"n": int64(3)}})

	// A query sees committed data plus the branch's writes.
	res = mustExec(t, b, participants.Operation{Kind: participants.OpQuery,
		SQL: "SELECT n FROM type::table($t) WHERE n >= $min ORDER BY n;", Vars: map[string]any{"t": table, "min": 3}})
	if fmt.Sprint(res.Rows) != "[[3] [10]]" {
		t.Fatalf("query in branch: %v %v", res.Columns, res.Rows)
	}
	// Outside the branch nothing changed: the query's transaction was cancelled.
	if got := readField(t, p, rid(int64(1)), "n"); got != int64(1) {
		t.Fatalf("committed n = %v", got)
	}
	if got := readField(t, p, rid(int64(3)), "n"); got != nil {
		t.Fatalf("the query's staged create persisted: n = %v", got)
	}
	// Creating an existing record fails the operation, and the branch.
	_, err := b.Execute(ctx, participants.Operation{Kind: participants.OpCreate, Record: rid(int64(1)), Content: map[string]any{}})
	if !errors.Is(err, participants.ErrConstraint) {
		t.Fatalf("create of an existing record = %v, want ErrConstraint", err)
	}
	if _, err := b.Execute(ctx, participants.Operation{Kind: participants.OpRead, Record: rid(int64(1))}); !errors.Is(err, participants.ErrBranchFailed) {
		t.Fatalf("execute after a failure = %v, want ErrBranchFailed", err)
	}
	_ = b.Rollback(ctx)

	// Writes the read-only check refuses, and OpSQL.
	c := mustBegin(t, p, unique("it:ryw")+":c", participants.BranchOptions{})
	for _, sql := range []string{
		"UPDATE type::table($t) SET n = 0",
		"SELECT * FROM (UPSERT x:1 SET a = 1)",
		"SELECT * FROM x; DELETE x",
		"SELECT fn::mine() FROM x",
	} {
		if _, err := c.Execute(ctx, participants.Operation{Kind: participants.OpQuery, SQL: sql}); !errors.Is(err, participants.ErrUnsupported) {
			t.Fatalf("query %q = %v, want ErrUnsupported", sql, err)
		}
		_ = c.Rollback(ctx)
		c = mustBegin(t, p, unique("it:ryw")+":c", participants.BranchOptions{})
	}
	if _, err := c.Execute(ctx, participants.Operation{Kind: participants.OpSQL, SQL: "SELECT 1"}); !errors.Is(err, participants.ErrUnsupported) {
		t.Fatalf("OpSQL = %v, want ErrUnsupported", err)
	}
}

func TestIntegrationSerializableLocksReads(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "ser")
	r1 := participants.RecordID{Table: table, ID: "r1"}
	r2 := participants.RecordID{Table: table, ID: "r2"}
	for _, iso := range []participants.Isolation{participants.ReadCommitted, participants.Serializable} {
		a := mustBegin(t, p, unique("it:ser")+":a", participants.BranchOptions{Isolation: iso})
		mustExec(t, a, participants.Operation{Kind: participants.OpRead, Record: r1})
		mustExec(t, a, upsert(r2, map[string]any{"iso": iso.String()}))
		mustPrepare(t, a, participants.VoteYes)

		b := mustBegin(t, p, unique("it:ser")+":b", participants.BranchOptions{})
		mustExec(t, b, upsert(r1, map[string]any{"by": "b"}))
		v, err := b.Prepare(ctx)
		if iso == participants.Serializable {
			if v != participants.VoteNo || !errors.Is(err, participants.ErrConflict) {
				t.Fatalf("write of a record read by a prepared serializable branch = %v, %v; want NO", v, err)
			}
		} else {
			if v != participants.VoteYes {
				t.Fatalf("read committed: prepare of b = %v, %v; want YES (reads are validated, not locked)", v, err)
			}
			if err := p.CommitPrepared(ctx, b.GID()); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.CommitPrepared(ctx, a.GID()); err != nil {
			t.Fatal(err)
		}
	}
	// A serializable branch that only reads still locks, so it takes part in phase two.
	ro := mustBegin(t, p, unique("it:ser")+":ro", participants.BranchOptions{Isolation: participants.Serializable})
	mustExec(t, ro, participants.Operation{Kind: participants.OpRead, Record: r1})
	mustPrepare(t, ro, participants.VoteYes)
	if err := p.CommitPrepared(ctx, ro.GID()); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationGuard(t *testing.T) {
	cfg := integrationConfig(t)
	table := tempTable(t, "guarded")
	cfg.GuardTables = []string{table}
	p := openTest(t, cfg)
	ctx := testCtx(t)
	raw(t, p, fmt.Sprintf("DEFINE INDEX %[1]s_email ON %[1]s FIELDS email UNIQUE;", table), nil)
	// Re-install so that the guard covers the new index.
	if err := p.installGuard(ctx, table); err != nil {
		t.Fatal(err)
	}
	r1 := participants.RecordID{Table: table, ID: int64(1)}
	mr1, _ := toRecordID(r1)
	plain := func(sql string, vars map[string]any) *stmtError {
		t.Helper()
		q, err := p.pool.query(ctx, sql, vars)
		if err != nil {
			t.Fatal(err)
		}
		if errs := q.errors(); len(errs) > 0 {
			return errs[0]
		}
		return nil
	}
	if e := plain("CREATE $r SET n = 1, email = 'a@x'", map[string]any{"r": mr1}); e != nil {
		t.Fatalf("plain create: %v", e)
	}
	if v := readField(t, p, r1, cfg.VersionField); v == nil || v == "" {
		t.Fatalf("guard did not version a plain create: %v", v)
	}

	// A plain write between a branch's read and its prepare: NO.
	b := mustBegin(t, p, unique("it:gd")+":b", participants.BranchOptions{})
	mustExec(t, b, participants.Operation{Kind: participants.OpRead, Record: r1})
	mustExec(t, b, upsert(participants.RecordID{Table: table, ID: int64(2)}, map[string]any{"n": int64(2)}))
	if e := plain("UPDATE $r SET n = 5", map[string]any{"r": mr1}); e != nil {
		t.Fatalf("plain update: %v", e)
	}
	if v, err := b.Prepare(ctx); v != participants.VoteNo || !errors.Is(err, participants.ErrConflict) {
		t.Fatalf("prepare after a plain write = %v, %v; want NO wrapping ErrConflict", v, err)
	}

	// A plain write of a record (or UNIQUE value) locked by a prepared branch fails.
	a := mustBegin(t, p, unique("it:gd")+":a", participants.BranchOptions{})
	mustExec(t, a, participants.Operation{Kind: participants.OpMerge, Record: r1, Content: map[string]any{"n": int64(100)}})
	mustExec(t, a, participants.Operation{Kind: participants.OpCreate, Record: participants.RecordID{Table: table, ID: int64(3)},
		Content: map[string]any{"email": "taken@x"}})
	mustPrepare(t, a, participants.VoteYes)
	if e := plain("UPDATE $r SET n = n + 1", map[string]any{"r": mr1}); e == nil || !e.hasMarker(markerGuardLocked) {
		t.Fatalf("plain update of a locked record = %v, want the guard to refuse it", e)
	}
	if e := plain("DELETE $r", map[string]any{"r": mr1}); e == nil || !e.hasMarker(markerGuardLocked) {
		t.Fatalf("plain delete of a locked record = %v, want the guard to refuse it", e)
	}
	if e := plain(fmt.Sprintf("CREATE %s:9 SET email = 'taken@x'", table), nil); e == nil || !e.hasMarker(markerGuardLocked) {
		t.Fatalf("plain create of a locked UNIQUE value = %v, want the guard to refuse it", e)
	}
	// Re-preparing the same GID (dry-run with the guard and its own locks) votes YES again.
	if err := p.CommitPrepared(ctx, a.GID()); err != nil {
		t.Fatal(err)
	}
	if got := readField(t, p, r1, "n"); got != int64(100) {
		t.Fatalf("n = %v, want 100 (the prepared branch's write)", got)
	}
	if e := plain("UPDATE $r SET n = n + 1", map[string]any{"r": mr1}); e != nil {
		t.Fatalf("plain update after commit: %v", e)
	}
	if got := readField(t, p, r1, "n"); got != int64(101) {
		t.Fatalf("n = %v, want 101", got)
	}
}

func TestIntegrationRepeatedPrepare(t *testing.T) {
	cfg := integrationConfig(t)
	table := tempTable(t, "rp")
	cfg.GuardTables = []string{table}
	p := openTest(t, cfg)
	ctx := testCtx(t)
	raw(t, p, fmt.Sprintf("DEFINE FIELD n ON %s TYPE int;", table), nil) // constrained: the dry-run runs
	gid := unique("it:rp") + ":1"
	rid := participants.RecordID{Table: table, ID: int64(1)}
	for i := 0; i < 2; i++ {
		// Two branches with the same GID model a coordinator that re-sends
		// prepare: the second sees the intent and votes YES again.
		b := mustBegin(t, p, gid, participants.BranchOptions{})
		mustExec(t, b, upsert(rid, map[string]any{"n": int64(1)}))
		mustPrepare(t, b, participants.VoteYes)
	}
	if err := p.CommitPrepared(ctx, gid); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationGC(t *testing.T) {
	cfg := integrationConfig(t)
	// Its own marker table: collecting with a clock two hours ahead would
	// delete every marker of other runs sharing the database.
	cfg.MarkerTable = tempTable(t, "txc_done_gc")
	now := time.Now()
	var offset atomic.Int64
	cfg.Knobs = &TestingKnobs{Now: func() time.Time { return now.Add(time.Duration(offset.Load())) }}
	p := openTest(t, cfg)
	ctx := testCtx(t)
	gid := unique("it:gc") + ":1"
	b := mustBegin(t, p, gid, participants.BranchOptions{})
	mustExec(t, b, upsert(participants.RecordID{Table: tempTable(t, "gc"), ID: int64(1)}, map[string]any{"n": int64(1)}))
	mustPrepare(t, b, participants.VoteYes)
	if err := p.CommitPrepared(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GC(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := p.CommitPrepared(ctx, gid); err != nil {
		t.Fatalf("marker younger than the retention was collected: %v", err)
	}
	offset.Store(int64(2 * time.Hour))
	n, err := p.GC(ctx, time.Hour)
	if err != nil || n < 1 {
		t.Fatalf("GC = %d, %v; want at least this test's marker", n, err)
	}
	if err := p.CommitPrepared(ctx, gid); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared after its marker was collected = %v, want ErrNotPrepared", err)
	}
	// Past the retention the record is gone: false (presumed abort).
	if ok, err := p.Committed(ctx, gid); ok || err != nil {
		t.Fatalf("Committed after its marker was collected = %v, %v; want false", ok, err)
	}
}

// TestIntegrationMarkerCollector: the participant collects markers older
// than MarkerRetention by itself; younger ones stay.
func TestIntegrationMarkerCollector(t *testing.T) {
	cfg := integrationConfig(t)
	cfg.MarkerTable = tempTable(t, "txc_done_col") // see TestIntegrationGC
	cfg.MarkerRetention = time.Hour
	cfg.MarkerGCInterval = 50 * time.Millisecond
	var offset atomic.Int64
	cfg.Knobs = &TestingKnobs{Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }}
	p := openTest(t, cfg)
	ctx := testCtx(t)
	gid := unique("it:col") + ":1"
	b := mustBegin(t, p, gid, participants.BranchOptions{})
	mustExec(t, b, upsert(participants.RecordID{Table: tempTable(t, "col"), ID: int64(1)}, map[string]any{"n": int64(1)}))
	if err := b.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // several collections
	if ok, err := p.Committed(ctx, gid); !ok || err != nil {
		t.Fatalf("Committed of a marker younger than the retention = %v, %v", ok, err)
	}
	offset.Store(int64(2 * time.Hour))
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := p.Committed(ctx, gid)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector did not delete a marker older than the retention")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationOnePhaseRecordsCommit: a one-phase commit writes the GID's
// done marker in its own transaction; one that wrote nothing records
// nothing; a GID with an abort tombstone cannot commit in one phase, and
// its writes stay invisible.
func TestIntegrationOnePhaseRecordsCommit(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	tbl := tempTable(t, "opr")
	committed := func(gid string) bool {
		t.Helper()
		ok, err := p.Committed(ctx, gid)
		if err != nil {
			t.Fatalf("Committed(%s): %v", gid, err)
		}
		return ok
	}

	gid := unique("it:opr") + ":1"
	b := mustBegin(t, p, gid, participants.BranchOptions{})
	mustExec(t, b, upsert(participants.RecordID{Table: tbl, ID: int64(1)}, map[string]any{"n": int64(1)}))
	if err := b.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}
	if !committed(gid) {
		t.Fatal("one-phase commit not recorded")
	}
	// The marker is the same done marker CommitPrepared writes: a stray
	// commit of the GID is a no-op, a rollback is refused.
	if err := p.CommitPrepared(ctx, gid); err != nil {
		t.Fatalf("CommitPrepared of a one-phase GID = %v, want nil", err)
	}
	if err := p.RollbackPrepared(ctx, gid); !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("RollbackPrepared of a one-phase GID = %v, want ErrProtocolViolation", err)
	}

	ro := unique("it:opr") + ":ro"
	b = mustBegin(t, p, ro, participants.BranchOptions{})
	mustExec(t, b, participants.Operation{Kind: participants.OpRead, Record: participants.RecordID{Table: tbl, ID: int64(1)}})
	if err := b.CommitOnePhase(ctx); err != nil {
		t.Fatal(err)
	}
	if committed(ro) {
		t.Fatal("a branch that wrote nothing recorded a commit")
	}

	tomb := unique("it:opr") + ":tomb"
	if err := p.RollbackPrepared(ctx, tomb); err != nil {
		t.Fatal(err)
	}
	rid := participants.RecordID{Table: tbl, ID: int64(2)}
	b = mustBegin(t, p, tomb, participants.BranchOptions{})
	mustExec(t, b, upsert(rid, map[string]any{"n": int64(2)}))
	err := b.CommitOnePhase(ctx)
	if err == nil || errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("one-phase commit of a tombstoned GID = %v, want a definite failure", err)
	}
	if v := readField(t, p, rid, "n"); v != nil {
		t.Fatalf("write of a failed one-phase commit is visible: %v", v)
	}
	if committed(tomb) {
		t.Fatal("tombstone reported as a commit")
	}
}

func TestIntegrationRecordIDs(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "ids")
	ids := []any{int64(123), "123", "k-1", []any{"a", int64(1)}, map[string]any{"x": int64(1), "y": "z"}}
	b := mustBegin(t, p, unique("it:id")+":1", participants.BranchOptions{})
	for i, id := range ids {
		mustExec(t, b, upsert(participants.RecordID{Table: table, ID: id}, map[string]any{"i": int64(i)}))
	}
	mustPrepare(t, b, participants.VoteYes)
	ind, _ := p.InDoubt(ctx, b.GID())
	if len(ind) != 1 || len(ind[0].Locks) != len(ids) {
		t.Fatalf("want %d distinct locks (123 and '123' apart), got %+v", len(ids), ind)
	}
	if err := p.CommitPrepared(ctx, b.GID()); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got := readField(t, p, participants.RecordID{Table: table, ID: id}, "i"); got != int64(i) {
			t.Fatalf("record %v: i = %v, want %d", id, got, i)
		}
	}
}

func TestIntegrationMissingTable(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	table := tempTable(t, "fresh")
	rid := participants.RecordID{Table: table, ID: int64(1)}
	// Read-only on a table that does not exist.
	ro := mustBegin(t, p, unique("it:mt")+":ro", participants.BranchOptions{})
	if res := mustExec(t, ro, participants.Operation{Kind: participants.OpRead, Record: rid}); len(res.Rows) != 0 {
		t.Fatalf("read of a missing table: %v", res.Rows)
	}
	if res := mustExec(t, ro, participants.Operation{Kind: participants.OpQuery, SQL: "SELECT * FROM type::table($t)",
		Vars: map[string]any{"t": table}}); len(res.Rows) != 0 {
		t.Fatalf("query of a missing table: %v", res.Rows)
	}
	mustPrepare(t, ro, participants.VoteReadOnly)
	// Create into it, deleting a record that never existed on the way.
	b := mustBegin(t, p, unique("it:mt")+":b", participants.BranchOptions{})
	mustExec(t, b, participants.Operation{Kind: participants.OpDelete, Record: participants.RecordID{Table: tempTable(t, "never"), ID: int64(1)}})
	mustExec(t, b, participants.Operation{Kind: participants.OpCreate, Record: rid, Content: map[string]any{"n": int64(1)}})
	mustPrepare(t, b, participants.VoteYes)
	if err := p.CommitPrepared(ctx, b.GID()); err != nil {
		t.Fatal(err)
	}
	if got := readField(t, p, rid, "n"); got != int64(1) {
		t.Fatalf("n = %v", got)
	}
}

// TestIntegrationNoLostUpdates: workers increment one counter through
// read + upsert + prepare + commit, retrying on NO. Every YES must count.
func TestIntegrationNoLostUpdates(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	rid := participants.RecordID{Table: tempTable(t, "ctr"), ID: "c"}
	const workers, perWorker = 8, 15
	var committed, noVotes atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				for attempt := 0; attempt < 200; attempt++ {
					gid := unique("it:lu") + ":1"
					b, err := p.Begin(ctx, gid, participants.BranchOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					res, err := b.Execute(ctx, participants.Operation{Kind: participants.OpRead, Record: rid})
					if err != nil {
						t.Error(err)
						return
					}
					n := int64(0)
					if len(res.Rows) == 1 {
						n = res.Rows[0][1].(int64)
					}
					if _, err := b.Execute(ctx, upsert(rid, map[string]any{"n": n + 1})); err != nil {
						t.Error(err)
						return
					}
					v, err := b.Prepare(ctx)
					if v != participants.VoteYes {
						if !errors.Is(err, participants.ErrConflict) {
							t.Errorf("NO without ErrConflict: %v", err)
						}
						noVotes.Add(1)
						_ = b.Rollback(ctx)
						continue
					}
					if err := p.CommitPrepared(ctx, gid); err != nil {
						t.Error(err)
						return
					}
					committed.Add(1)
					break
				}
			}
		}()
	}
	wg.Wait()
	got := readField(t, p, rid, "n")
	t.Logf("%d workers: %d increments committed, %d NO votes (conflicts), final counter %v, %v",
		workers, committed.Load(), noVotes.Load(), got, time.Since(start))
	if got != committed.Load() {
		t.Fatalf("counter = %v, committed increments = %d: lost updates", got, committed.Load())
	}
}

func TestIntegrationOpenUnreachable(t *testing.T) {
	cfg := integrationConfig(t)
	cfg.URL = "ws://127.0.0.1:1/rpc"
	start := time.Now()
	_, err := Open(testCtx(t), cfg, testLogger(t))
	if !errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("Open of an unreachable server = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v", d)
	}
	cfg = integrationConfig(t)
	cfg.Password = "wrong-" + unique("pw")
	_, err = Open(testCtx(t), cfg, testLogger(t))
	if err == nil || errors.Is(err, participants.ErrUnavailable) {
		t.Logf("Open with a wrong password = %v (the dev server does not enforce auth)", err)
	}
	if err != nil && strings.Contains(err.Error(), cfg.Password) {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestIntegrationCloseLeavesNoGoroutines(t *testing.T) {
	cfg := integrationConfig(t)
	base := runtime.NumGoroutine()
	p, err := Open(testCtx(t), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ { // use several pooled connections
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := mustBegin(t, p, unique("it:gl")+":1", participants.BranchOptions{})
			mustExec(t, b, upsert(participants.RecordID{Table: "gl", ID: int64(i)}, map[string]any{"i": int64(i)}))
			if err := b.CommitOnePhase(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, base)
}

// BenchmarkPrepareCommit measures prepare+commit pairs of a one-record
// branch (load, prepare, commit: three requests) at 1 and 16 clients.
func BenchmarkPrepareCommit(b *testing.B) {
	cfg := integrationConfig(b)
	cfg.PoolSize = 16
	p := openTest(b, cfg)
	table := tempTable(b, "bench")
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			ctx := context.Background()
			run := unique("r") // b.N grows across calls: GIDs must not repeat
			var next atomic.Int64
			start := time.Now()
			var wg sync.WaitGroup
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						gid := fmt.Sprintf("bench:%s:%d:%d", run, clients, i)
						br, err := p.Begin(ctx, gid, participants.BranchOptions{})
						if err != nil {
							b.Error(err)
							return
						}
						if _, err := br.Execute(ctx, upsert(participants.RecordID{Table: table, ID: i}, map[string]any{"n": i})); err != nil {
							b.Error(err)
							return
						}
						if v, err := br.Prepare(ctx); v != participants.VoteYes {
							b.Errorf("prepare: %v %v", v, err)
							return
						}
						if err := p.CommitPrepared(ctx, gid); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
		})
	}
}

// TestIntegrationGuardRaces: branches and plain writers that bypass the
// coordinator increment one counter at once. With the guard no increment is
// lost; without it the test only reports how many were. The plain writers
// use text transactions: in 3.0.2 single statements outside BEGIN/COMMIT
// lose updates to each other under concurrency (measured: 200 concurrent
// `UPDATE ... SET n = n + 1` all report OK, n ends at 184-189), with or
// without this adapter.
func TestIntegrationGuardRaces(t *testing.T) {
	for _, guarded := range []bool{true, false} {
		t.Run(fmt.Sprintf("guarded=%v", guarded), func(t *testing.T) {
			cfg := integrationConfig(t)
			table := tempTable(t, "race")
			if guarded {
				cfg.GuardTables = []string{table}
			}
			p := openTest(t, cfg)
			ctx := testCtx(t)
			rid := participants.RecordID{Table: table, ID: "c"}
			mrid, _ := toRecordID(rid)
			raw(t, p, "UPSERT $r SET n = 0", map[string]any{"r": mrid})
			const workers, perWorker = 4, 25
			var branchIncs, plainIncs, refused atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(2)
				go func() { // through the coordinator's protocol
					defer wg.Done()
					for i := 0; i < perWorker; i++ {
						for attempt := 0; attempt < 500; attempt++ {
							gid := unique("it:race") + ":1"
							b, _ := p.Begin(ctx, gid, participants.BranchOptions{})
							res, err := b.Execute(ctx, participants.Operation{Kind: participants.OpRead, Record: rid})
							if err != nil {
								t.Error(err)
								return
							}
							n := res.Rows[0][1].(int64)
							if _, err := b.Execute(ctx, upsert(rid, map[string]any{"n": n + 1})); err != nil {
								t.Error(err)
								return
							}
							if v, _ := b.Prepare(ctx); v != participants.VoteYes {
								_ = b.Rollback(ctx)
								continue
							}
							if err := p.CommitPrepared(ctx, gid); err != nil {
								t.Error(err)
								return
							}
							branchIncs.Add(1)
							break
						}
					}
				}()
				go func() { // a plain writer
					defer wg.Done()
					for i := 0; i < perWorker; i++ {
						for attempt := 0; attempt < 500; attempt++ {
							q, err := p.pool.query(ctx, "BEGIN; UPDATE $r SET n = n + 1; COMMIT;", map[string]any{"r": mrid})
							if err != nil {
								t.Error(err)
								return
							}
							if errs := q.errors(); len(errs) > 0 {
								refused.Add(1) // locked by a prepared branch, or a write conflict
								continue
							}
							plainIncs.Add(1)
							break
						}
					}
				}()
			}
			wg.Wait()
			got := readField(t, p, rid, "n").(int64)
			want := branchIncs.Load() + plainIncs.Load()
			t.Logf("guarded=%v: %d branch + %d plain increments, %d plain writes refused or conflicting; counter %d, lost %d",
				guarded, branchIncs.Load(), plainIncs.Load(), refused.Load(), got, want-got)
			if guarded && got != want {
				t.Fatalf("counter %d, want %d: lost updates with the guard", got, want)
			}
		})
	}
}

func TestIntegrationSchemaIntrospection(t *testing.T) {
	cfg := integrationConfig(t)
	names := map[string]string{}
	for _, k := range []string{"plain", "full", "field", "uniq", "index", "event", "view", "rel", "guarded", "missing"} {
		names[k] = tempTable(t, k)
	}
	cfg.GuardTables = []string{names["guarded"]}
	p := openTest(t, cfg)
	raw(t, p, fmt.Sprintf(`DEFINE TABLE %[1]s SCHEMALESS;
DEFINE TABLE %[2]s SCHEMAFULL;
DEFINE FIELD n ON %[3]s TYPE int;
DEFINE INDEX %[4]s_e ON %[4]s FIELDS email, addr.city UNIQUE;
DEFINE INDEX %[5]s_n ON %[5]s FIELDS n;
DEFINE EVENT ev ON %[6]s THEN {};
DEFINE TABLE %[7]s AS SELECT count() AS c FROM %[1]s GROUP ALL;
DEFINE TABLE %[8]s TYPE RELATION IN %[1]s OUT %[1]s;`,
		names["plain"], names["full"], names["field"], names["uniq"], names["index"], names["event"], names["view"], names["rel"]), nil)
	var list []string
	for _, n := range names {
		list = append(list, n)
	}
	got, err := p.schemas.get(testCtx(t), p.pool, list)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]tableSchema{
		"plain":   {exists: true},
		"full":    {exists: true, constrained: true},
		"field":   {exists: true, constrained: true},
		"uniq":    {exists: true, constrained: true},
		"index":   {exists: true},
		"event":   {exists: true, constrained: true},
		"view":    {exists: true, constrained: true},
		"rel":     {exists: true, constrained: true},
		"guarded": {exists: true, guarded: true},
		"missing": {},
	} {
		g := got[names[k]]
		if g.exists != want.exists || g.constrained != want.constrained || g.guarded != want.guarded {
			t.Errorf("%s: exists=%v constrained=%v guarded=%v; want %v %v %v", k,
				g.exists, g.constrained, g.guarded, want.exists, want.constrained, want.guarded)
		}
	}
	u := got[names["uniq"]].unique
	if len(u) != 1 || fmt.Sprint(u[0].cols) != "[email addr.city]" || !u[0].lockable {
		t.Errorf("unique indexes = %+v", u)
	}
	if len(got[names["index"]].unique) != 0 {
		t.Errorf("a plain index counted as UNIQUE")
	}
}

// TestIntegrationCommittedFenceRace: Committed and a one-phase commit of
// the same GID racing: the first to commit wins, and the answers agree —
// false only if the commit failed definitely, true only if it succeeded.
func TestIntegrationCommittedFenceRace(t *testing.T) {
	p := openTest(t, integrationConfig(t))
	ctx := testCtx(t)
	tbl := tempTable(t, "fence")
	wins := map[bool]int{}
	for i := range 20 {
		gid := unique("it:fence") + ":" + strconv.Itoa(i)
		b := mustBegin(t, p, gid, participants.BranchOptions{})
		mustExec(t, b, upsert(participants.RecordID{Table: tbl, ID: int64(i)}, map[string]any{"n": int64(i)}))
		var wg sync.WaitGroup
		var commitErr, fenceErr error
		var got bool
		wg.Add(2)
		go func() { defer wg.Done(); commitErr = b.CommitOnePhase(ctx) }()
		go func() { defer wg.Done(); got, fenceErr = p.Committed(ctx, gid) }()
		wg.Wait()
		if fenceErr != nil {
			t.Fatalf("Committed(%s): %v", gid, fenceErr)
		}
		if errors.Is(commitErr, participants.ErrAmbiguous) {
			t.Fatalf("CommitOnePhase(%s) = %v: ambiguous without a lost connection", gid, commitErr)
		}
		if got != (commitErr == nil) {
			t.Fatalf("Committed(%s) = %v but CommitOnePhase = %v", gid, got, commitErr)
		}
		again, err := p.Committed(ctx, gid)
		if err != nil || again != got {
			t.Fatalf("Committed(%s) again = %v, %v; first %v", gid, again, err, got)
		}
		wins[got]++
	}
	t.Logf("commit won %d, fence won %d", wins[true], wins[false])
}
