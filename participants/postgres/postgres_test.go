package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/participants/conformance"
)

// ---------------------------------------------------------------------------
// Unit tests (no database).

func TestCheckStatement(t *testing.T) {
	ok := []string{
		"SELECT 1",
		"  -- comment\n SELECT v FROM kv WHERE k = $1",
		"/* a /* nested */ comment */ UPDATE kv SET v = $2 WHERE k = $1",
		"INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
		"INSERT INTO temp (a) VALUES (1)", // a table named temp
		"CREATE TABLE temp (a int)",       // a table named temp
		"CREATE UNLOGGED TABLE t (a int)", // not temporary
		"SET LOCAL lock_timeout = '1s'",   // transaction-scoped
		"set local search_path to app",    // lower case
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		"SET CONSTRAINTS ALL IMMEDIATE",
		"SELECT 'BEGIN; COMMIT; LISTEN x; pg_temp'", // inside a literal
		"SELECT E'it\\'s ROLLBACK'",
		"SELECT $$ NOTIFY x $$, $tag$ CREATE TEMP TABLE $tag$",
		`SELECT "pg_notify_log".x FROM "pg_notify_log"`, // quoted identifiers are not pg_notify
		"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
		"DECLARE c CURSOR FOR SELECT * FROM t WITH ORDINALITY",
		"WITH x AS (SELECT 1) SELECT * FROM x",
		"(SELECT 1) UNION (SELECT 2)",
		"COPY t TO '/tmp/file'",
		"SELECT committed, rollback_count FROM stats", // keywords as column names
		"LOCK TABLE kv IN ROW EXCLUSIVE MODE",
		"MERGE INTO temp t USING s ON t.k = s.k WHEN MATCHED THEN DELETE",
		"DO $$ BEGIN PERFORM 1; END $$",
		"SELECT x INTO STRICT y", // not TEMP
	}
	for _, sql := range ok {
		if err := CheckStatement(sql); err != nil {
			t.Errorf("CheckStatement(%q) = %v, want nil", sql, err)
		}
	}
	unsupported := []struct{ sql, mention string }{
		{"BEGIN", "BEGIN"},
		{"  /* c */ begin isolation level serializable", "BEGIN"},
		{"START TRANSACTION", "START"},
		{"COMMIT", "COMMIT"},
		{"END", "END"},
		{"ROLLBACK", "ROLLBACK"},
		{"ABORT", "ABORT"},
		{"SAVEPOINT s1", "SAVEPOINT"},
		{"RELEASE SAVEPOINT s1", "RELEASE"},
		{"ROLLBACK TO SAVEPOINT s1", "ROLLBACK"},
		{"PREPARE TRANSACTION 'x'", "PREPARE"},
		{"COMMIT PREPARED 'x'", "COMMIT"},
		{"ROLLBACK PREPARED 'x'", "ROLLBACK"},
		{"PREPARE q AS SELECT 1", "PREPARE"},
		{"DEALLOCATE ALL", "DEALLOCATE"},
		{"DISCARD ALL", "DISCARD"},
		{"CREATE TEMP TABLE t (a int)", "TEMPORARY"},
		{"create temporary table t (a int)", "TEMPORARY"},
		{"CREATE GLOBAL TEMPORARY TABLE t (a int)", "TEMPORARY"},
		{"CREATE LOCAL TEMP SEQUENCE s", "TEMPORARY"},
		{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "TEMPORARY"},
		{"CREATE TEMP UNLOGGED TABLE t (a int)", "TEMPORARY"},
		{"CREATE TABLE pg_temp.t (a int)", "pg_temp"},
		{`INSERT INTO "pg_temp".t VALUES (1)`, "pg_temp"},
		{"SELECT * INTO TEMP t2 FROM t", "TEMPORARY"},
		{"SELECT * INTO TEMPORARY TABLE t2 FROM t", "TEMPORARY"},
		{"SELECT * INTO LOCAL TEMP t2 FROM t", "TEMPORARY"},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD"},
		{"DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD"},
		{"LISTEN ch", "LISTEN"},
		{"UNLISTEN *", "UNLISTEN"},
		{"NOTIFY ch, 'x'", "NOTIFY"},
		{"SELECT pg_notify('ch', 'x')", "pg_notify"},
		{"WITH x AS (SELECT 1) SELECT PG_NOTIFY('c', 'p') FROM x", "pg_notify"},
		{"SET search_path = app", "SET LOCAL"},
		{"SET SESSION statement_timeout = 0", "SET LOCAL"},
		{"SET ROLE admin", "SET LOCAL"},
		{"SET SESSION AUTHORIZATION bob", "SET LOCAL"},
		{"RESET ALL", "SET LOCAL"},
		{"COPY t FROM STDIN", "COPY"},
		{"COPY (SELECT 1) TO STDOUT", "COPY"},
	}
	for _, c := range unsupported {
		err := CheckStatement(c.sql)
		if !errors.Is(err, participants.ErrUnsupported) {
			t.Errorf("CheckStatement(%q) = %v, want ErrUnsupported", c.sql, err)
			continue
		}
		if !strings.Contains(err.Error(), c.mention) {
			t.Errorf("CheckStatement(%q) = %q, want it to mention %q", c.sql, err, c.mention)
		}
	}
	for _, sql := range []string{"", "   ", "-- only a comment", "/* x */"} {
		if err := CheckStatement(sql); !errors.Is(err, participants.ErrBadOperation) {
			t.Errorf("CheckStatement(%q) = %v, want ErrBadOperation", sql, err)
		}
	}
}

func TestValidateGID(t *testing.T) {
	good := []string{"a", "txc:cluster-1:0000000000000042:pg_a", "A.B_c-d:9", strings.Repeat("x", MaxGIDBytes)}
	for _, g := range good {
		if err := ValidateGID(g); err != nil {
			t.Errorf("ValidateGID(%q) = %v", g, err)
		}
	}
	bad := []string{"", strings.Repeat("x", MaxGIDBytes+1), "a'b", "a b", `a\b`, "a%b", "a;b", "é", "a\x00b", "a/b"}
	for _, g := range bad {
		if err := ValidateGID(g); !errors.Is(err, participants.ErrBadOperation) {
			t.Errorf("ValidateGID(%q) = %v, want ErrBadOperation", g, err)
		}
	}
	if err := validatePrefix(""); err != nil {
		t.Errorf("validatePrefix(\"\") = %v", err)
	}
	if err := validatePrefix("a'"); err == nil {
		t.Errorf("validatePrefix(\"a'\") accepted a quote")
	}
}

func TestQuoteAndLikePattern(t *testing.T) {
	if got := quoteLiteral("a'b"); got != "'a''b'" {
		t.Errorf("quoteLiteral = %s", got)
	}
	cases := map[string]string{
		"":        "%",
		"txc:a:":  "txc:a:%",
		"a_b":     `a\_b%`,
		`a%b\c`:   `a\%b\\c%`,
		"cf-1:x_": `cf-1:x\_%`,
	}
	for in, want := range cases {
		if got := likePrefixPattern(in); got != want {
			t.Errorf("likePrefixPattern(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.Name = "pg_a"
	valid.DSN = "postgres://u:secret@127.0.0.1:5432/db"
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Name", func(c *Config) { c.Name = "" }},
		{"Name", func(c *Config) { c.Name = "bad name" }},
		{"DSN", func(c *Config) { c.DSN = "" }},
		{"DSN", func(c *Config) { c.DSN = "postgres://u:secret@host:notaport/db" }},
		{"MaxConns", func(c *Config) { c.MaxConns = 0 }},
		{"MinConns", func(c *Config) { c.MinConns = c.MaxConns + 1 }},
		{"StatementTimeout", func(c *Config) { c.StatementTimeout = 0 }},
		{"PhaseTimeout", func(c *Config) { c.PhaseTimeout = -1 }},
		{"LockTimeout", func(c *Config) { c.LockTimeout = c.StatementTimeout }},
		{"LockTimeout", func(c *Config) { c.LockTimeout = -time.Second }},
		{"MaxResultRows", func(c *Config) { c.MaxResultRows = 0 }},
		{"MarkerTable", func(c *Config) { c.MarkerTable = "no_schema" }},
		{"MarkerTable", func(c *Config) { c.MarkerTable = `public."Quoted"` }},
		{"MarkerRetention", func(c *Config) { c.MarkerRetention = 0 }},
		{"MarkerGCInterval", func(c *Config) { c.MarkerGCInterval = c.MarkerRetention + time.Second }},
	}
	for _, c := range cases {
		cfg := valid
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted a bad value", c.field)
			continue
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %q does not name the field", c.field, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %q leaks the password", c.field, err)
		}
	}
	noMarkers := valid
	noMarkers.MarkerTable, noMarkers.MarkerRetention, noMarkers.MarkerGCInterval = "", 0, 0
	if err := noMarkers.Validate(); err != nil {
		t.Errorf("config without markers: %v", err)
	}
}

func TestRedactDSN(t *testing.T) {
	cases := []string{
		"postgres://user:s3cr3t@host:5432/db?sslmode=disable",
		"postgresql://user:s3cr3t@host/db",
		"postgres://user@host/db?password=s3cr3t",
		"host=h user=u password=s3cr3t dbname=d",
		"host=h password = 's3cr3t with space' dbname=d",
	}
	for _, dsn := range cases {
		got := RedactDSN(dsn)
		if strings.Contains(got, "s3cr3t") {
			t.Errorf("RedactDSN(%q) = %q leaks the password", dsn, got)
		}
	}
	var buf strings.Builder
	cfg := DefaultConfig()
	cfg.Name, cfg.DSN = "pg_a", "postgres://user:s3cr3t@host/db"
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", slog.Any("cfg", cfg))
	if strings.Contains(buf.String(), "s3cr3t") || !strings.Contains(buf.String(), "pg_a") {
		t.Errorf("logged config = %s", buf.String())
	}
}

func TestPreparedXactsDisabledMessage(t *testing.T) {
	err := preparedXactsDisabled("pg_a", "orders")
	if !errors.Is(err, ErrPreparedTransactionsDisabled) {
		t.Fatalf("error %v does not wrap ErrPreparedTransactionsDisabled", err)
	}
	for _, want := range []string{"max_prepared_transactions = 128", "postgresql.conf", "restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
}

func TestReason(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{&pgconn.PgError{Severity: "ERROR", Code: "23505"}, participants.ErrConstraint},
		{&pgconn.PgError{Severity: "ERROR", Code: "23514"}, participants.ErrConstraint},
		{&pgconn.PgError{Severity: "ERROR", Code: "40001"}, participants.ErrConflict},
		{&pgconn.PgError{Severity: "ERROR", Code: "40P01"}, participants.ErrConflict},
		{&pgconn.PgError{Severity: "ERROR", Code: "55P03"}, participants.ErrConflict},
		{&pgconn.PgError{Severity: "FATAL", Code: "57P01"}, participants.ErrUnavailable},
		{&pgconn.PgError{Severity: "ERROR", Code: "53300"}, participants.ErrUnavailable},
		{&pgconn.PgError{Severity: "ERROR", Code: "42601"}, participants.ErrBadOperation},
		{&pgconn.PgError{Severity: "ERROR", Code: "55000"}, nil},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), participants.ErrUnavailable},
		{errors.New("something else"), nil},
	}
	for _, c := range cases {
		if got := reason(c.err); got != c.want {
			t.Errorf("reason(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if !definiteServerError(&pgconn.PgError{Severity: "ERROR", SeverityUnlocalized: "ERROR"}) ||
		definiteServerError(&pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL"}) ||
		definiteServerError(context.Canceled) {
		t.Errorf("definiteServerError misclassifies")
	}
}

func TestPhaseTwoErrorClassification(t *testing.T) {
	p := &Participant{cfg: Config{Name: "pg_a"}, log: slog.New(slog.DiscardHandler)}
	busy := &pgconn.PgError{Severity: "ERROR", Code: "55000", Message: "prepared transaction with identifier \"g\" is busy"}
	if err := p.phaseTwoError("commit prepared", "g", busy); !errors.Is(err, participants.ErrUnavailable) {
		t.Errorf("55000 = %v, want ErrUnavailable", err)
	}
	if err := p.phaseTwoError("commit prepared", "g", lostConnErr()); !errors.Is(err, participants.ErrUnavailable) {
		t.Errorf("lost connection = %v, want ErrUnavailable", err)
	}
	wrongDB := &pgconn.PgError{Severity: "ERROR", Code: "0A000"}
	if err := p.phaseTwoError("commit prepared", "g", wrongDB); errors.Is(err, participants.ErrUnavailable) {
		t.Errorf("0A000 = %v, want a non-retryable error", err)
	}
}

func lostConnErr() error { return fmt.Errorf("read: %w", io.ErrUnexpectedEOF) }

func TestFullXID(t *testing.T) {
	cases := []struct {
		xid32, xmax string
		want        uint64
		ok          bool
	}{
		{"100", "200", 100, true},
		{"100", fmt.Sprint(uint64(3)<<32 | 200), uint64(3)<<32 | 100, true},
		{"4294967200", fmt.Sprint(uint64(3)<<32 | 50), uint64(2)<<32 | 4294967200, true},
		{"300", "200", 300, true}, // in progress above xmax
		{"10", fmt.Sprint(uint64(2)<<32 | 4294967290), uint64(3)<<32 | 10, true},
		{"4294967290", "5", 0, false}, // would be in epoch -1
		{"x", "200", 0, false},
	}
	for _, c := range cases {
		got, ok := fullXID(c.xid32, c.xmax)
		if got != c.want || ok != c.ok {
			t.Errorf("fullXID(%s, %s) = %d, %v; want %d, %v", c.xid32, c.xmax, got, ok, c.want, c.ok)
		}
	}
}

func TestXIDMemoIsBounded(t *testing.T) {
	m := newXIDMemo(3)
	for i := 0; i < 5; i++ {
		m.put(fmt.Sprint("g", i), uint64(i))
	}
	if len(m.m) != 3 {
		t.Fatalf("memo holds %d entries, want 3", len(m.m))
	}
	for i := 0; i < 2; i++ {
		if _, ok := m.get(fmt.Sprint("g", i)); ok {
			t.Errorf("g%d should have been evicted", i)
		}
	}
	if x, ok := m.get("g4"); !ok || x != 4 {
		t.Errorf("g4 = %d, %v", x, ok)
	}
}

func TestResultValue(t *testing.T) {
	u := [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	var n pgtype.Numeric
	if err := n.Scan("12.50"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in, want any
	}{
		{int32(7), int64(7)},
		{int16(-2), int64(-2)},
		{float32(1.5), float64(1.5)},
		{u, "12345678-9abc-def0-0123-456789abcdef"},
		{n, "12.50"},
		{pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true}, "infinity"},
		{[]any{int32(1), nil}, []any{int64(1), nil}},
	}
	for _, c := range cases {
		if got := resultValue(c.in); fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", c.want) {
			t.Errorf("resultValue(%#v) = %#v, want %#v", c.in, got, c.want)
		}
	}
}

func TestArgValue(t *testing.T) {
	if v, err := argValue(map[string]any{"a": int64(1)}); err != nil || v != `{"a":1}` {
		t.Errorf("map arg = %v, %v", v, err)
	}
	if _, err := argValue([]any{int64(1), "x"}); !errors.Is(err, participants.ErrBadOperation) {
		t.Errorf("mixed array = %v, want ErrBadOperation", err)
	}
	if _, err := argValue(struct{}{}); !errors.Is(err, participants.ErrBadOperation) {
		t.Errorf("struct arg = %v, want ErrBadOperation", err)
	}
}

// ---------------------------------------------------------------------------
// Integration tests against a real PostgreSQL (TXCOORD_PG_DSN_A).

const dsnEnv = "TXCOORD_PG_DSN_A"

func testDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv(dsnEnv)
	if dsn == "" {
		t.Skipf("%s is not set: skipping tests against a real PostgreSQL "+
			"(point it at a database whose server has max_prepared_transactions > 0)", dsnEnv)
	}
	return dsn
}

func testConfig(dsn string) Config {
	cfg := DefaultConfig()
	cfg.Name = "pg_test"
	cfg.DSN = dsn
	cfg.MaxConns = 12
	cfg.MinConns = 1
	cfg.LockTimeout = 300 * time.Millisecond
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func openTest(t testing.TB, cfg Config) *Participant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Open(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

const testSchema = `
CREATE TABLE IF NOT EXISTS cf_kv (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE IF NOT EXISTS cf_child (
	k      text PRIMARY KEY,
	parent text NOT NULL REFERENCES cf_kv (k) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE IF NOT EXISTS cf_checked (k text PRIMARY KEY, n int NOT NULL CHECK (n > 0));`

// pgHarness runs the conformance suite: keys are rows of cf_kv, the
// violation is a deferred foreign key that fails at PREPARE.
type pgHarness struct {
	cfg Config
	db  *pgxpool.Pool // reads committed values outside branches
}

func newHarness(t *testing.T, cfg Config) *pgHarness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := pgxpool.New(ctx, cfg.DSN)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(db.Close)
	if _, err := db.Exec(ctx, testSchema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	return &pgHarness{cfg: cfg, db: db}
}

func (h *pgHarness) Open(t testing.TB) participants.Participant { return openTest(t, h.cfg) }

func (h *pgHarness) Write(key, value string) participants.Operation {
	return participants.Operation{Kind: participants.OpSQL,
		SQL:  `INSERT INTO cf_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`,
		Args: []any{key, value}}
}

func (h *pgHarness) Read(key string) participants.Operation {
	return participants.Operation{Kind: participants.OpSQL, SQL: `SELECT v FROM cf_kv WHERE k = $1`, Args: []any{key}}
}

func (h *pgHarness) Value(t testing.TB, res participants.Result) (string, bool) {
	t.Helper()
	if len(res.Rows) == 0 {
		return "", false
	}
	v, ok := res.Rows[0][0].(string)
	if !ok || len(res.Columns) != 1 || res.Columns[0] != "v" {
		t.Fatalf("unexpected read result %+v", res)
	}
	return v, true
}

func (h *pgHarness) Violation(key string) participants.Operation {
	return participants.Operation{Kind: participants.OpSQL,
		SQL: `INSERT INTO cf_child (k, parent) VALUES ($1, $1 || '_no_such_parent')`, Args: []any{key}}
}

func (h *pgHarness) Committed(t testing.TB, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v string
	err := h.db.QueryRow(ctx, `SELECT v FROM cf_kv WHERE k = $1`, key).Scan(&v)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return "", false
		}
		t.Fatalf("read committed %s: %v", key, err)
	}
	return v, true
}

func TestConformance(t *testing.T) {
	dsn := testDSN(t)
	conformance.Run(t, newHarness(t, testConfig(dsn)))
}

func bg(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var gidSeq struct {
	sync.Mutex
	n int
}

// testGID returns a fresh GID and, when the test ends, rolls back a
// prepared transaction it may have left under that GID (a failing test
// stops before its own cleanup): a prepared transaction left behind holds
// back the database's xmin horizon, so VACUUM stops removing dead rows and
// every later test and benchmark on the database slows down.
func testGID(t testing.TB, name string) string {
	gidSeq.Lock()
	gidSeq.n++
	gid := fmt.Sprintf("pgt-%d-%d:%s:%d", os.Getpid(), time.Now().UnixNano()%1e9, name, gidSeq.n)
	gidSeq.Unlock()
	if dsn := os.Getenv(dsnEnv); dsn != "" {
		t.Cleanup(func() { rollbackLeftover(t, dsn, gid) })
	}
	return gid
}

// rollbackLeftover rolls back gid if it is still prepared.
func rollbackLeftover(t testing.TB, dsn, gid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Logf("cleanup of %s: %v", gid, err)
		return
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()`, gid).Scan(&n); err != nil || n == 0 {
		return
	}
	if _, err := conn.Exec(ctx, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
		t.Logf("cleanup: ROLLBACK PREPARED %s: %v", gid, err)
		return
	}
	t.Logf("cleanup: rolled back %s, left prepared by the test", gid)
}

func sqlOp(sql string, args ...any) participants.Operation {
	return participants.Operation{Kind: participants.OpSQL, SQL: sql, Args: args}
}

func TestExecuteErrors(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()

	t.Run("CheckAtExecuteFailsBranch", func(t *testing.T) {
		b, err := p.Begin(bg(t), testGID(t, "chk"), participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Execute(bg(t), sqlOp(`INSERT INTO cf_checked (k, n) VALUES ($1, $2)`, "x", int64(-1)))
		if !errors.Is(err, participants.ErrConstraint) {
			t.Fatalf("CHECK violation = %v, want ErrConstraint", err)
		}
		if _, err := b.Execute(bg(t), sqlOp("SELECT 1")); !errors.Is(err, participants.ErrBranchFailed) {
			t.Fatalf("Execute after failure = %v, want ErrBranchFailed", err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) || !errors.Is(err, participants.ErrConstraint) {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
		if err := b.Rollback(bg(t)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("UnsupportedKind", func(t *testing.T) {
		b, _ := p.Begin(bg(t), testGID(t, "kind"), participants.BranchOptions{})
		defer b.Rollback(bg(t))
		_, err := b.Execute(bg(t), participants.Operation{Kind: participants.OpRead, Record: participants.RecordID{Table: "t", ID: "1"}})
		if !errors.Is(err, participants.ErrUnsupported) || !strings.Contains(err.Error(), "READ") {
			t.Fatalf("OpRead = %v, want ErrUnsupported naming READ", err)
		}
	})
	t.Run("UnsupportedStatement", func(t *testing.T) {
		b, _ := p.Begin(bg(t), testGID(t, "temp"), participants.BranchOptions{})
		defer b.Rollback(bg(t))
		_, err := b.Execute(bg(t), sqlOp("CREATE TEMP TABLE t (a int)"))
		if !errors.Is(err, participants.ErrUnsupported) {
			t.Fatalf("CREATE TEMP = %v, want ErrUnsupported", err)
		}
	})
	t.Run("SyntaxError", func(t *testing.T) {
		b, _ := p.Begin(bg(t), testGID(t, "syntax"), participants.BranchOptions{})
		defer b.Rollback(bg(t))
		if _, err := b.Execute(bg(t), sqlOp("SELEC 1")); !errors.Is(err, participants.ErrBadOperation) {
			t.Fatalf("syntax error = %v, want ErrBadOperation", err)
		}
	})
	t.Run("MultipleStatementsRefusedByServer", func(t *testing.T) {
		b, _ := p.Begin(bg(t), testGID(t, "multi"), participants.BranchOptions{})
		defer b.Rollback(bg(t))
		if _, err := b.Execute(bg(t), sqlOp("SELECT 1; COMMIT")); err == nil {
			t.Fatalf("two statements in one Execute were accepted")
		}
	})
	t.Run("TooManyRows", func(t *testing.T) {
		small := cfg
		small.MaxResultRows = 10
		p2 := openTest(t, small)
		defer p2.Close()
		b, _ := p2.Begin(bg(t), testGID(t, "rows"), participants.BranchOptions{})
		defer b.Rollback(bg(t))
		if _, err := b.Execute(bg(t), sqlOp("SELECT generate_series(1, 11)")); !errors.Is(err, participants.ErrBadOperation) {
			t.Fatalf("11 rows with MaxResultRows=10 = %v, want ErrBadOperation", err)
		}
	})
	t.Run("DeadlinePassed", func(t *testing.T) {
		b, _ := p.Begin(bg(t), testGID(t, "deadline"), participants.BranchOptions{Deadline: time.Now().Add(50 * time.Millisecond)})
		defer b.Rollback(bg(t))
		if _, err := b.Execute(bg(t), sqlOp("SELECT pg_sleep(1)")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("statement past the deadline = %v, want DeadlineExceeded", err)
		}
		if _, err := b.Execute(bg(t), sqlOp("SELECT 1")); !errors.Is(err, participants.ErrBranchFailed) {
			t.Fatalf("after deadline = %v, want ErrBranchFailed", err)
		}
	})
	t.Run("BadGIDAndIsolation", func(t *testing.T) {
		if _, err := p.Begin(bg(t), "bad gid", participants.BranchOptions{}); !errors.Is(err, participants.ErrBadOperation) {
			t.Fatalf("Begin(bad gid) = %v", err)
		}
		if _, err := p.Begin(bg(t), "ok", participants.BranchOptions{Isolation: 42}); !errors.Is(err, participants.ErrBadOperation) {
			t.Fatalf("Begin(isolation 42) = %v", err)
		}
	})
	_ = h
}

func TestValueConversion(t *testing.T) {
	cfg := testConfig(testDSN(t))
	p := openTest(t, cfg)
	defer p.Close()
	b, err := p.Begin(bg(t), testGID(t, "values"), participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback(bg(t))
	res, err := b.Execute(bg(t), sqlOp(`SELECT
		1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8, 1.5::float4 AS f4, 2.25::float8 AS f8,
		12.50::numeric AS num, 'NaN'::numeric AS nan, true AS b, 'txt'::text AS t, '\x0102'::bytea AS by,
		'12345678-9abc-def0-0123-456789abcdef'::uuid AS u,
		'2024-01-02 03:04:05+00'::timestamptz AS tz, '2024-01-02'::date AS d,
		'{"a": 1, "b": [true, null]}'::jsonb AS j, ARRAY[1, 2, NULL]::int4[] AS arr,
		'1 day 02:00'::interval AS iv, NULL::text AS nul,
		$1::int8[] AS arg_arr, ($2::jsonb)->>'k' AS arg_json, $3::bytea AS arg_bytes, $4::timestamptz AS arg_time`,
		[]any{int64(5), int64(6)}, map[string]any{"k": "v"}, []byte{9, 8}, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)))
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	got := map[string]any{}
	for i, c := range res.Columns {
		got[c] = res.Rows[0][i]
	}
	want := map[string]any{
		"i2": int64(1), "i4": int64(2), "i8": int64(3), "f4": float64(1.5), "f8": 2.25,
		"num": "12.50", "nan": "NaN", "b": true, "t": "txt", "by": []byte{1, 2},
		"u":  "12345678-9abc-def0-0123-456789abcdef",
		"tz": time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "d": time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"j":   map[string]any{"a": float64(1), "b": []any{true, nil}},
		"arr": []any{int64(1), int64(2), nil}, "iv": "1 day 02:00:00", "nul": nil,
		"arg_arr": []any{int64(5), int64(6)}, "arg_json": "v", "arg_bytes": []byte{9, 8},
		"arg_time": time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for k, w := range want {
		g := got[k]
		if gt, ok := g.(time.Time); ok {
			g = gt.UTC()
		}
		if fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", w) {
			t.Errorf("%s = %#v, want %#v", k, g, w)
		}
	}
	if res.RowsAffected != 1 {
		t.Errorf("RowsAffected = %d, want 1", res.RowsAffected)
	}
}

// TestAmbiguousPrepare kills the branch's backend just before PREPARE
// TRANSACTION: the outcome must be reported as ErrAmbiguous (never as a
// definite NO), and rollback by GID must then succeed.
func TestAmbiguousPrepare(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	cfg.Knobs = &TestingKnobs{BeforePrepareTransaction: func(gid string, pid uint32) { terminate(t, h.db, pid) }}
	p := openTest(t, cfg)
	defer p.Close()
	gid := testGID(t, "amb")
	b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := "amb-" + gid
	if _, err := b.Execute(bg(t), h.Write(key, "x")); err != nil {
		t.Fatal(err)
	}
	v, err := b.Prepare(bg(t))
	if v != participants.VoteNo || !errors.Is(err, participants.ErrAmbiguous) || errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("Prepare with a killed backend = %v, %v; want NO with ErrAmbiguous only", v, err)
	}
	if err := p.RollbackPrepared(bg(t), gid); err != nil {
		t.Fatalf("RollbackPrepared: %v", err)
	}
	if _, ok := h.Committed(t, key); ok {
		t.Fatalf("write of the killed branch is visible")
	}
	if list, _ := p.InDoubt(bg(t), gid); len(list) != 0 {
		t.Fatalf("InDoubt = %v", list)
	}
	// The pool recovers: a new branch works.
	b2, err := p.Begin(bg(t), testGID(t, "amb2"), participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Execute(bg(t), sqlOp("SELECT 1")); err != nil {
		t.Fatalf("after a killed connection: %v", err)
	}
	_ = b2.Rollback(bg(t))
}

func TestAmbiguousCommitOnePhase(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	cfg.Knobs = &TestingKnobs{BeforeCommit: func(gid string, pid uint32) { terminate(t, h.db, pid) }}
	p := openTest(t, cfg)
	defer p.Close()
	b, _ := p.Begin(bg(t), testGID(t, "amb1pc"), participants.BranchOptions{})
	if _, err := b.Execute(bg(t), h.Write("amb1pc-"+b.GID(), "x")); err != nil {
		t.Fatal(err)
	}
	if err := b.CommitOnePhase(bg(t)); !errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("CommitOnePhase with a killed backend = %v, want ErrAmbiguous", err)
	}
}

func terminate(t testing.TB, db *pgxpool.Pool, pid uint32) {
	var ok bool
	if err := db.QueryRow(context.Background(), `SELECT pg_terminate_backend($1, 5000)`, int64(pid)).Scan(&ok); err != nil || !ok {
		t.Errorf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
}

// TestWithoutMarkers: with MarkerTable "" the adapter tells committed from
// rolled back only for xids it recorded (Prepare, InDoubt).
func TestWithoutMarkers(t *testing.T) {
	cfg := testConfig(testDSN(t))
	cfg.MarkerTable, cfg.MarkerRetention, cfg.MarkerGCInterval = "", 0, 0
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()

	prepare := func(p *Participant, gid string) {
		t.Helper()
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), h.Write("nm-"+gid, "v")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteYes || err != nil {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
	}
	g1 := testGID(t, "nm")
	prepare(p, g1)
	for i := 0; i < 2; i++ {
		if err := p.CommitPrepared(bg(t), g1); err != nil {
			t.Fatalf("CommitPrepared #%d (xid known): %v", i+1, err)
		}
	}
	g2 := testGID(t, "nm")
	prepare(p, g2)
	if err := p.RollbackPrepared(bg(t), g2); err != nil {
		t.Fatal(err)
	}
	if err := p.CommitPrepared(bg(t), g2); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared of rolled back = %v, want ErrNotPrepared", err)
	}
	// A fresh process knows nothing about g1: it cannot tell, so it says so.
	p2 := openTest(t, cfg)
	defer p2.Close()
	if err := p2.CommitPrepared(bg(t), g1); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared of a committed GID unknown to this process = %v, want ErrNotPrepared", err)
	}
	// Nor can Committed: it must not answer false (a presumed abort).
	if ok, err := p.Committed(bg(t), g1); ok || !errors.Is(err, participants.ErrUnsupported) {
		t.Fatalf("Committed without markers = %v, %v; want ErrUnsupported", ok, err)
	}
	// ... unless it listed the branch in InDoubt before committing it.
	g3 := testGID(t, "nm")
	prepare(p, g3)
	if list, err := p2.InDoubt(bg(t), g3); err != nil || len(list) != 1 {
		t.Fatalf("InDoubt = %v, %v", list, err)
	}
	for i := 0; i < 2; i++ {
		if err := p2.CommitPrepared(bg(t), g3); err != nil {
			t.Fatalf("CommitPrepared #%d after InDoubt: %v", i+1, err)
		}
	}
}

// TestCloseAbandonsOpenBranches: Close returns while a branch is open and
// while another is blocked on a lock; both end rolled back.
func TestCloseAbandonsOpenBranches(t *testing.T) {
	cfg := testConfig(testDSN(t))
	cfg.LockTimeout = 20 * time.Second
	h := newHarness(t, cfg)
	holder := openTest(t, cfg)
	defer holder.Close()
	p := openTest(t, cfg)

	key := "close-" + testGID(t, "k")
	bh, _ := holder.Begin(bg(t), testGID(t, "holder"), participants.BranchOptions{})
	if _, err := bh.Execute(bg(t), h.Write(key, "holder")); err != nil {
		t.Fatal(err)
	}
	open, _ := p.Begin(bg(t), testGID(t, "open"), participants.BranchOptions{})
	if _, err := open.Execute(bg(t), h.Write(key+"-2", "open")); err != nil {
		t.Fatal(err)
	}
	blocked, _ := p.Begin(bg(t), testGID(t, "blocked"), participants.BranchOptions{})
	errc := make(chan error, 1)
	go func() {
		_, err := blocked.Execute(bg(t), h.Write(key, "blocked"))
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond) // let it block on the row lock
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := <-errc; err == nil {
		t.Fatalf("blocked Execute succeeded after Close")
	}
	if _, err := open.Execute(bg(t), sqlOp("SELECT 1")); !errors.Is(err, participants.ErrBranchFailed) {
		t.Fatalf("Execute on an abandoned branch = %v, want ErrBranchFailed", err)
	}
	if _, err := p.Begin(bg(t), testGID(t, "after"), participants.BranchOptions{}); !errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("Begin after Close = %v, want ErrUnavailable", err)
	}
	if err := bh.Rollback(bg(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Committed(t, key+"-2"); ok {
		t.Fatalf("abandoned branch's write is visible")
	}
}

func TestMarkerCollection(t *testing.T) {
	cfg := testConfig(testDSN(t))
	// Its own table: a 1 s retention on the shared table would collect the
	// markers of other test runs.
	cfg.MarkerTable = "public.txcoord_commit_marker_gctest"
	cfg.MarkerRetention = time.Second
	cfg.MarkerGCInterval = 100 * time.Millisecond
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()
	gid := testGID(t, "gc")
	b, _ := p.Begin(bg(t), gid, participants.BranchOptions{})
	if _, err := b.Execute(bg(t), h.Write("gc-"+gid, "v")); err != nil {
		t.Fatal(err)
	}
	if err := b.CommitOnePhase(bg(t)); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.Committed(bg(t), gid); !ok || err != nil {
		t.Fatalf("Committed before collection = %v, %v", ok, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		if err := h.db.QueryRow(bg(t), `SELECT count(*) FROM public.txcoord_commit_marker_gctest WHERE gid = $1`, gid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("marker of %s not collected", gid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Past MarkerRetention the record is gone: false (presumed abort).
	if ok, err := p.Committed(bg(t), gid); ok || err != nil {
		t.Fatalf("Committed after collection = %v, %v; want false", ok, err)
	}
}

// TestOnePhaseRecordsCommit: a one-phase commit inserts the GID's marker in
// its own transaction, whatever the statements' command tags say; a branch
// that wrote nothing records nothing (and a READ ONLY one still commits);
// a GID with an abort tombstone cannot commit in one phase.
func TestOnePhaseRecordsCommit(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()
	run := func(t *testing.T, gid string, queue bool, ops ...participants.Operation) error {
		t.Helper()
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if queue {
				err = b.(queuer).Queue(op)
			} else {
				_, err = b.Execute(bg(t), op)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		return b.CommitOnePhase(bg(t))
	}
	recorded := func(t *testing.T, gid string) bool {
		t.Helper()
		ok, err := p.Committed(bg(t), gid)
		if err != nil {
			t.Fatalf("Committed(%s): %v", gid, err)
		}
		return ok
	}
	for _, queue := range []bool{false, true} {
		name := "executed"
		if queue {
			name = "queued"
		}
		t.Run(name, func(t *testing.T) {
			gid := testGID(t, "1pc-w")
			if err := run(t, gid, queue, h.Write("1pcw-"+gid, "x")); err != nil {
				t.Fatal(err)
			}
			if !recorded(t, gid) {
				t.Fatal("one-phase write not recorded")
			}
			// A data-modifying WITH answers SELECT: still recorded.
			gid = testGID(t, "1pc-with")
			if err := run(t, gid, queue, sqlOp(`WITH w AS (INSERT INTO cf_kv (k, v) VALUES ($1, 'x') RETURNING k) SELECT k FROM w`, "1pcwith-"+gid)); err != nil {
				t.Fatal(err)
			}
			if !recorded(t, gid) {
				t.Fatal("one-phase write through WITH not recorded")
			}
			gid = testGID(t, "1pc-ro")
			if err := run(t, gid, queue, sqlOp("SELECT 1")); err != nil {
				t.Fatal(err)
			}
			if recorded(t, gid) {
				t.Fatal("a branch that wrote nothing recorded a commit")
			}
			gid = testGID(t, "1pc-readonly")
			if err := run(t, gid, queue, sqlOp("SET TRANSACTION READ ONLY"), sqlOp("SELECT 1")); err != nil {
				t.Fatalf("one-phase commit of a READ ONLY transaction: %v", err)
			}
			if recorded(t, gid) {
				t.Fatal("a READ ONLY branch recorded a commit")
			}
		})
	}
	t.Run("Tombstoned", func(t *testing.T) {
		gid := testGID(t, "1pc-tomb")
		key := "1pct-" + gid
		if err := p.RollbackPrepared(bg(t), gid); err != nil { // abort tombstone
			t.Fatal(err)
		}
		err := run(t, gid, false, h.Write(key, "x"))
		if err == nil || errors.Is(err, participants.ErrAmbiguous) {
			t.Fatalf("one-phase commit of a tombstoned GID = %v; want a definite failure", err)
		}
		if _, ok := h.Committed(t, key); ok {
			t.Fatal("write of a failed one-phase commit is visible")
		}
		if recorded(t, gid) {
			t.Fatal("tombstone reported as a commit")
		}
	})
}

// TestSerializableConflictVotesNo: write skew between two SERIALIZABLE
// branches; one of them must fail with ErrConflict (at Execute or Prepare).
func TestSerializableConflictVotesNo(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()
	tag := testGID(t, "ssi")
	k1, k2 := "ssi1-"+tag, "ssi2-"+tag
	opts := participants.BranchOptions{Isolation: participants.Serializable}
	var branches []participants.Branch
	var gids []string
	conflicts := 0
	for i, k := range []string{k1, k2} {
		gid := testGID(t, fmt.Sprint("ssi", i))
		b, err := p.Begin(bg(t), gid, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), sqlOp(`SELECT count(*) FROM cf_kv WHERE k IN ($1, $2)`, k1, k2)); err != nil {
			t.Fatal(err)
		}
		branches, gids = append(branches, b), append(gids, gid)
		_ = k
	}
	for i, b := range branches {
		k := []string{k1, k2}[i]
		if _, err := b.Execute(bg(t), h.Write(k, "x")); err != nil {
			if !errors.Is(err, participants.ErrConflict) {
				t.Fatalf("Execute = %v", err)
			}
			conflicts++
		}
	}
	for i, b := range branches {
		v, err := b.Prepare(bg(t))
		if v == participants.VoteYes {
			defer p.RollbackPrepared(bg(t), gids[i])
			continue
		}
		if errors.Is(err, participants.ErrConflict) && errors.Is(err, participants.ErrVoteNo) {
			conflicts++
		} else if !errors.Is(err, participants.ErrBranchFailed) {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
	}
	if conflicts == 0 {
		t.Fatalf("write skew between SERIALIZABLE branches was not detected")
	}
}

// TestInDoubtOnlyThisDatabase needs a second database on the same server
// (TXCOORD_PG_DSN_B): its prepared transactions must not be listed or
// committable through the first.
func TestInDoubtOnlyThisDatabase(t *testing.T) {
	cfgA := testConfig(testDSN(t))
	dsnB := os.Getenv("TXCOORD_PG_DSN_B")
	if dsnB == "" {
		t.Skip("TXCOORD_PG_DSN_B is not set")
	}
	cfgB := testConfig(dsnB)
	cfgB.Name = "pg_test_b"
	newHarness(t, cfgA)
	hb := newHarness(t, cfgB)
	pa, pb := openTest(t, cfgA), openTest(t, cfgB)
	defer pa.Close()
	defer pb.Close()
	gid := testGID(t, "otherdb")
	b, _ := pb.Begin(bg(t), gid, participants.BranchOptions{})
	if _, err := b.Execute(bg(t), hb.Write("odb-"+gid, "v")); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Prepare(bg(t)); v != participants.VoteYes {
		t.Fatalf("Prepare = %v, %v", v, err)
	}
	defer pb.RollbackPrepared(bg(t), gid)
	if list, err := pa.InDoubt(bg(t), gid); err != nil || len(list) != 0 {
		t.Fatalf("InDoubt in database A lists B's branch: %v, %v", list, err)
	}
	if err := pa.CommitPrepared(bg(t), gid); err == nil || errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("CommitPrepared of another database's GID = %v, want a non-retryable error", err)
	}
	if list, err := pb.InDoubt(bg(t), gid); err != nil || len(list) != 1 {
		t.Fatalf("InDoubt in database B = %v, %v", list, err)
	}
}

// TestCloseLeavesNoGoroutines is the package's goroutine-leak check: the
// pool, the marker collector and context watchers all stop with Close.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	cfg := testConfig(testDSN(t))
	cfg.MarkerGCInterval = 50 * time.Millisecond
	h := newHarness(t, cfg)
	before := runtime.NumGoroutine()
	p := openTest(t, cfg)
	gid := testGID(t, "leak")
	b, _ := p.Begin(bg(t), gid, participants.BranchOptions{})
	if _, err := b.Execute(bg(t), h.Write("leak-"+gid, "v")); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Prepare(bg(t)); v != participants.VoteYes {
		t.Fatalf("Prepare = %v, %v", v, err)
	}
	if err := p.CommitPrepared(bg(t), gid); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before Open, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenRefusesWithoutPreparedTransactions needs a server running with
// max_prepared_transactions = 0 (TXCOORD_PG_DSN_NO2PC).
func TestOpenRefusesWithoutPreparedTransactions(t *testing.T) {
	dsn := os.Getenv("TXCOORD_PG_DSN_NO2PC")
	if dsn == "" {
		t.Skip("TXCOORD_PG_DSN_NO2PC (a server with max_prepared_transactions = 0) is not set")
	}
	p, err := Open(bg(t), testConfig(dsn), testLogger(t))
	if err == nil {
		p.Close()
		t.Fatalf("Open succeeded against a server without prepared transactions")
	}
	if !errors.Is(err, ErrPreparedTransactionsDisabled) || !strings.Contains(err.Error(), "max_prepared_transactions = 128") {
		t.Fatalf("Open = %v, want ErrPreparedTransactionsDisabled with instructions", err)
	}
	t.Logf("Open refused as expected: %v", err)
}

// TestOpenErrorClasses: a server that cannot be reached is ErrUnavailable
// (the node starts and keeps trying); a server that refuses the database
// is not (waiting would not fix it), and the message says what to fix.
func TestOpenErrorClasses(t *testing.T) {
	u, err := url.Parse(testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	missing := *u
	missing.Path = "/txcoord_no_such_database"
	_, err = Open(bg(t), testConfig(missing.String()), testLogger(t))
	if err == nil || errors.Is(err, participants.ErrUnavailable) || !strings.Contains(err.Error(), "fix the dsn") {
		t.Fatalf("Open of a missing database = %v, want a refusal that is not ErrUnavailable and names the fix", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()
	down := *u
	down.Host = closedPort
	cfg := testConfig(down.String())
	cfg.ConnectTimeout = 2 * time.Second
	if _, err = Open(bg(t), cfg, testLogger(t)); !errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("Open of a server nobody listens for = %v, want ErrUnavailable", err)
	}
}

// TestRollbackOfCommittedIsRefused: the adapter refuses to report a
// rollback of a GID it knows committed as done — a one-phase commit by its
// marker, a two-phase one by the xid this process saw.
func TestRollbackOfCommittedIsRefused(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()
	t.Run("OnePhase", func(t *testing.T) {
		gid := testGID(t, "rbc1")
		b, _ := p.Begin(bg(t), gid, participants.BranchOptions{})
		if _, err := b.Execute(bg(t), h.Write("rbc-"+gid, "v")); err != nil {
			t.Fatal(err)
		}
		if err := b.CommitOnePhase(bg(t)); err != nil {
			t.Fatal(err)
		}
		if err := p.RollbackPrepared(bg(t), gid); err == nil {
			t.Fatalf("RollbackPrepared of a GID committed in one phase succeeded")
		}
	})
	t.Run("TwoPhase", func(t *testing.T) {
		gid := testGID(t, "rbc2")
		b, _ := p.Begin(bg(t), gid, participants.BranchOptions{})
		if _, err := b.Execute(bg(t), h.Write("rbc-"+gid, "v")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteYes {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
		receipt := participants.BranchReceipt(b)
		if err := p.CommitPrepared(bg(t), gid); err != nil {
			t.Fatal(err)
		}
		if err := p.RollbackPrepared(bg(t), gid); err == nil {
			t.Fatalf("RollbackPrepared of a committed GID succeeded")
		}
		if err := p.CommitPreparedReceipt(bg(t), gid, receipt); err != nil {
			t.Fatalf("CommitPrepared after the refused rollback: %v", err)
		}
	})
}

// TestPipelinedPrepare: a branch that ran a writing statement sends its
// xid read and PREPARE TRANSACTION in one round trip. A write that touched
// no row still votes READ_ONLY and leaves nothing prepared; a deferred
// constraint failing at PREPARE votes NO.
func TestPipelinedPrepare(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()

	t.Run("WriteOfNoRowVotesReadOnly", func(t *testing.T) {
		gid := testGID(t, "pipe-ro")
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), sqlOp(`UPDATE cf_kv SET v = 'x' WHERE k = $1`, "no-such-key-"+gid)); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteReadOnly || err != nil {
			t.Fatalf("Prepare = %v, %v; want READ_ONLY", v, err)
		}
		if list, err := p.InDoubt(bg(t), gid); err != nil || len(list) != 0 {
			t.Fatalf("InDoubt = %v, %v; want nothing prepared", list, err)
		}
	})
	t.Run("WriteVotesYesAndCommits", func(t *testing.T) {
		gid := testGID(t, "pipe-yes")
		key := "pipe-" + gid
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), h.Write(key, "v1")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteYes || err != nil {
			t.Fatalf("Prepare = %v, %v; want YES", v, err)
		}
		for range 2 { // the second is a retry: 42704 and the xid say committed
			if err := p.CommitPrepared(bg(t), gid); err != nil {
				t.Fatalf("CommitPrepared: %v", err)
			}
		}
		if v, ok := h.Committed(t, key); !ok || v != "v1" {
			t.Fatalf("committed value %q, %v", v, ok)
		}
	})
	// A two-phase branch writes no marker, so an abort tombstone does not
	// stop its PREPARE: it votes YES, and with no commit decision it is
	// rolled back (by the coordinator's in-doubt scan; here, by hand).
	t.Run("TombstoneDoesNotStopPrepare", func(t *testing.T) {
		gid := testGID(t, "pipe-tomb")
		if err := p.RollbackPrepared(bg(t), gid); err != nil { // writes the abort tombstone
			t.Fatal(err)
		}
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		key := "pipe-" + gid
		if _, err := b.Execute(bg(t), h.Write(key, "late")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteYes || err != nil {
			t.Fatalf("Prepare of a rolled-back GID = %v, %v; want YES", v, err)
		}
		if err := p.RollbackPrepared(bg(t), gid); err != nil {
			t.Fatal(err)
		}
		if _, ok := h.Committed(t, key); ok {
			t.Fatal("write of the rolled-back branch is visible")
		}
		if list, _ := p.InDoubt(bg(t), gid); len(list) != 0 {
			t.Fatalf("InDoubt = %v", list)
		}
	})
	t.Run("DeferredConstraintVotesNo", func(t *testing.T) {
		gid := testGID(t, "pipe-fk")
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), h.Violation("pipe-"+gid)); err != nil {
			t.Fatal(err)
		}
		v, err := b.Prepare(bg(t))
		if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) || !errors.Is(err, participants.ErrConstraint) {
			t.Fatalf("Prepare = %v, %v; want NO with ErrConstraint", v, err)
		}
		if list, _ := p.InDoubt(bg(t), gid); len(list) != 0 {
			t.Fatalf("InDoubt = %v", list)
		}
	})
}

// queuer is the optional branch capability the coordinator uses for
// one-shot runs.
type queuer = participants.Queuer

// The adapter's branches have the capability.
var _ participants.Queuer = (*branch)(nil)

// TestQueue: statements queued on a branch go with Prepare or
// CommitOnePhase in one round trip; their results come back afterwards;
// a failing one is a definite NO (or a failed one-phase commit) with the
// statement's classification.
func TestQueue(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()
	begin := func(t *testing.T, name string) (participants.Branch, queuer, string) {
		t.Helper()
		gid := testGID(t, name)
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		q, ok := b.(queuer)
		if !ok {
			t.Fatal("postgres branch does not queue")
		}
		return b, q, gid
	}

	t.Run("PrepareCommit", func(t *testing.T) {
		b, q, gid := begin(t, "q-yes")
		k1, k2 := "q1-"+gid, "q2-"+gid
		for _, op := range []participants.Operation{h.Write(k1, "a"), h.Write(k2, "b"), h.Read(k1)} {
			if err := q.Queue(op); err != nil {
				t.Fatal(err)
			}
		}
		if res := q.QueuedResults(); res != nil {
			t.Fatalf("results before prepare: %v", res)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteYes || err != nil {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
		res := q.QueuedResults()
		if len(res) != 3 || res[0].RowsAffected != 1 || res[1].RowsAffected != 1 {
			t.Fatalf("results %+v", res)
		}
		if v, ok := h.Value(t, res[2]); !ok || v != "a" {
			t.Fatalf("read own write: %q, %v", v, ok)
		}
		if _, ok := h.Committed(t, k1); ok {
			t.Fatal("visible before COMMIT PREPARED")
		}
		if err := p.CommitPrepared(bg(t), gid); err != nil {
			t.Fatal(err)
		}
		if v, ok := h.Committed(t, k2); !ok || v != "b" {
			t.Fatalf("committed %q, %v", v, ok)
		}
	})
	t.Run("QueuedReadsVoteReadOnly", func(t *testing.T) {
		b, q, _ := begin(t, "q-ro")
		if err := q.Queue(sqlOp("SELECT 41 + 1 AS n")); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteReadOnly || err != nil {
			t.Fatalf("Prepare = %v, %v", v, err)
		}
		if res := q.QueuedResults(); len(res) != 1 || len(res[0].Rows) != 1 || res[0].Rows[0][0] != int64(42) {
			t.Fatalf("results %+v", res)
		}
	})
	t.Run("RefusedAtQueue", func(t *testing.T) {
		b, q, _ := begin(t, "q-bad")
		if err := q.Queue(sqlOp("LISTEN x")); !errors.Is(err, participants.ErrUnsupported) {
			t.Fatalf("Queue(LISTEN) = %v", err)
		}
		if v, err := b.Prepare(bg(t)); v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) {
			t.Fatalf("Prepare after a refused statement = %v, %v", v, err)
		}
	})
	t.Run("FailingStatementVotesNo", func(t *testing.T) {
		for name, tc := range map[string]struct {
			op   participants.Operation
			want error
		}{
			"syntax":     {sqlOp("UPDATE no_such_table SET x = 1"), participants.ErrBadOperation},
			"constraint": {h.Violation("q-fk"), participants.ErrConstraint}, // deferred: fails at PREPARE
			"unique":     {sqlOp("INSERT INTO cf_kv (k, v) VALUES ('q-dup', 'a'), ('q-dup', 'b')"), participants.ErrConstraint},
		} {
			t.Run(name, func(t *testing.T) {
				b, q, gid := begin(t, "q-no")
				key := "qn-" + gid
				if err := q.Queue(h.Write(key, "x")); err != nil {
					t.Fatal(err)
				}
				if err := q.Queue(tc.op); err != nil {
					t.Fatal(err)
				}
				v, err := b.Prepare(bg(t))
				if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) || !errors.Is(err, tc.want) || errors.Is(err, participants.ErrAmbiguous) {
					t.Fatalf("Prepare = %v, %v; want a definite NO with %v", v, err, tc.want)
				}
				if _, ok := h.Committed(t, key); ok {
					t.Fatal("write of a NO branch is visible")
				}
				if list, _ := p.InDoubt(bg(t), gid); len(list) != 0 {
					t.Fatalf("InDoubt = %v", list)
				}
				if q.QueuedResults() != nil {
					t.Fatal("results of a NO branch")
				}
			})
		}
	})
	t.Run("OnePhase", func(t *testing.T) {
		b, q, gid := begin(t, "q-1pc")
		key := "q1pc-" + gid
		if err := q.Queue(h.Write(key, "one")); err != nil {
			t.Fatal(err)
		}
		if err := b.CommitOnePhase(bg(t)); err != nil {
			t.Fatal(err)
		}
		if res := q.QueuedResults(); len(res) != 1 || res[0].RowsAffected != 1 {
			t.Fatalf("results %+v", res)
		}
		if v, ok := h.Committed(t, key); !ok || v != "one" {
			t.Fatalf("committed %q, %v", v, ok)
		}
	})
	t.Run("OnePhaseFailingStatement", func(t *testing.T) {
		b, q, gid := begin(t, "q-1pc-no")
		key := "q1pcn-" + gid
		if err := q.Queue(h.Write(key, "x")); err != nil {
			t.Fatal(err)
		}
		if err := q.Queue(sqlOp("INSERT INTO cf_kv (k, v) VALUES ($1, 'a'), ($1, 'b')", key+"-dup")); err != nil {
			t.Fatal(err)
		}
		err := b.CommitOnePhase(bg(t))
		if !errors.Is(err, participants.ErrConstraint) || errors.Is(err, participants.ErrAmbiguous) {
			t.Fatalf("CommitOnePhase = %v; want a definite constraint failure", err)
		}
		if _, ok := h.Committed(t, key); ok {
			t.Fatal("write of a failed one-phase commit is visible")
		}
	})
	t.Run("ExecuteAfterQueuePanics", func(t *testing.T) {
		b, q, _ := begin(t, "q-panic")
		if err := q.Queue(sqlOp("SELECT 1")); err != nil {
			t.Fatal(err)
		}
		defer b.Rollback(bg(t)) //nolint:errcheck // cleanup
		defer func() {
			if recover() == nil {
				t.Fatal("Execute after Queue did not panic")
			}
		}()
		b.Execute(bg(t), sqlOp("SELECT 1")) //nolint:errcheck // panics
	})
}

// TestQueueAmbiguous: a backend killed while the queued statements and
// PREPARE (or COMMIT) are in flight is an unknown outcome, never a failure.
func TestQueueAmbiguous(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	cfg.Knobs = &TestingKnobs{
		BeforePrepareTransaction: func(gid string, pid uint32) { terminate(t, h.db, pid) },
		BeforeCommit:             func(gid string, pid uint32) { terminate(t, h.db, pid) },
	}
	p := openTest(t, cfg)
	defer p.Close()
	gid := testGID(t, "q-amb")
	b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.(queuer).Queue(h.Write("qa-"+gid, "x")); err != nil {
		t.Fatal(err)
	}
	v, err := b.Prepare(bg(t))
	if v != participants.VoteNo || !errors.Is(err, participants.ErrAmbiguous) || errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("Prepare with a killed backend = %v, %v; want NO with ErrAmbiguous only", v, err)
	}
	if err := p.RollbackPrepared(bg(t), gid); err != nil {
		t.Fatal(err)
	}
	gid2 := testGID(t, "q-amb1pc")
	b2, err := p.Begin(bg(t), gid2, participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.(queuer).Queue(h.Write("qa-"+gid2, "x")); err != nil {
		t.Fatal(err)
	}
	if err := b2.CommitOnePhase(bg(t)); !errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("CommitOnePhase with a killed backend = %v; want ErrAmbiguous", err)
	}
}

func TestStartsWithSelect(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT 1":                         true,
		"  select v from t":                true,
		"(SELECT 1) UNION (SELECT 2)":      true,
		"-- c\nSELECT 1":                   true,
		"/* a /* nested */ */ select 1":    true,
		"SELECTED":                         false,
		"selectx()":                        false,
		"UPDATE t SET v = 1":               false,
		"WITH x AS (DELETE FROM t) SELECT": false,
		"":                                 false,
		"select":                           true,
	} {
		if got := startsWithSelect(sql); got != want {
			t.Errorf("startsWithSelect(%q) = %v, want %v", sql, got, want)
		}
	}
}

// TestCheckStatementCache: cached verdicts equal CheckStatement's, and the
// cache stays bounded.
func TestCheckStatementCache(t *testing.T) {
	p := &Participant{checked: map[string]error{}}
	for range 2 {
		for _, sql := range []string{"SELECT 1", "LISTEN x", "SET search_path = x", "BEGIN"} {
			if got, want := p.checkStatement(sql), CheckStatement(sql); (got == nil) != (want == nil) {
				t.Fatalf("%q: cached %v, direct %v", sql, got, want)
			}
		}
	}
	for i := range 3 * checkCacheSize {
		p.checkStatement(fmt.Sprintf("SELECT %d", i))
	}
	if n := len(p.checked); n > checkCacheSize {
		t.Fatalf("cache holds %d verdicts, bound %d", n, checkCacheSize)
	}
}
