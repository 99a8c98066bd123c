package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/participants"
	surrealadapter "github.com/txcoord/txcoord/participants/surrealdb"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/wal"
	"google.golang.org/grpc/codes"
)

var schemaOnce sync.Once

func setupSchema(t *testing.T, p *pgxpool.Pool) {
	t.Helper()
	var err error
	schemaOnce.Do(func() {
		_, err = p.Exec(context.Background(), `
			CREATE TABLE IF NOT EXISTS e2e_kv (k text PRIMARY KEY, v text NOT NULL);
			CREATE TABLE IF NOT EXISTS e2e_parent (id int PRIMARY KEY);
			CREATE TABLE IF NOT EXISTS e2e_child (id text PRIMARY KEY,
				parent int REFERENCES e2e_parent(id) DEFERRABLE INITIALLY DEFERRED)`)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func pgValue(t *testing.T, p *pgxpool.Pool, k string) any {
	t.Helper()
	var v *string
	err := p.QueryRow(context.Background(), "SELECT v FROM e2e_kv WHERE k = $1", k).Scan(&v)
	if err != nil && !strings.Contains(err.Error(), "no rows") {
		t.Fatal(err)
	}
	if v == nil {
		return nil
	}
	return *v
}

// writeBoth runs one transaction writing key=val to both stores, up to Commit.
func writeBoth(ctx context.Context, t *testing.T, c *client.Client, key, val string) (*client.Tx, error) {
	t.Helper()
	tx, err := c.Begin(ctx, client.TxOptions{Timeout: 20 * time.Second, Labels: map[string]string{"test": t.Name()}})
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(ctx, "pg", "INSERT INTO e2e_kv (k, v) VALUES ($1, $2)", key, val); err != nil {
		t.Fatalf("pg insert: %v", err)
	}
	if _, err := tx.Do(ctx, "surreal", client.Upsert("e2e_kv", key, map[string]any{"v": val})); err != nil {
		t.Fatalf("surreal upsert: %v", err)
	}
	return tx, tx.Commit(ctx)
}

func TestCommitAndRollbackAcrossStores(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.start()
	p, sdb := pg(t), surreal(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()
	ctx := context.Background()

	key := uniq("commit")
	tx, err := writeBoth(ctx, t, c, key, "one")
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got := pgValue(t, p, key); got != "one" {
		t.Fatalf("postgres has %v", got)
	}
	if got := surrealValue(t, sdb, "e2e_kv", key); got != "one" {
		t.Fatalf("surrealdb has %v", got)
	}
	info, err := c.GetTransaction(ctx, tx.ID())
	if err != nil || info.Outcome != pb.Outcome_COMMITTED || len(info.Branches) != 2 {
		t.Fatalf("GetTransaction: %v %v", info, err)
	}
	// A client retrying Commit after success gets success again.
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}

	key2 := uniq("rollback")
	tx2, err := c.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, "pg", "INSERT INTO e2e_kv (k, v) VALUES ($1, 'x')", key2); err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Do(ctx, "surreal", client.Create("e2e_kv", key2, map[string]any{"v": "x"})); err != nil {
		t.Fatal(err)
	}
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatalf("repeated rollback: %v", err)
	}
	if pgValue(t, p, key2) != nil || surrealValue(t, sdb, "e2e_kv", key2) != nil {
		t.Fatal("rolled back writes are visible")
	}

	// One-shot Run across both stores.
	key3 := uniq("run")
	txid, res, err := c.Run(ctx, client.TxOptions{},
		client.On("pg", client.SQL("INSERT INTO e2e_kv (k, v) VALUES ($1, 'run')", key3)),
		client.On("surreal", client.Upsert("e2e_kv", key3, map[string]any{"v": "run"})))
	if err != nil || txid == "" || len(res) != 2 || res[0].RowsAffected != 1 {
		t.Fatalf("run: %s %v %v", txid, res, err)
	}
	if pgValue(t, p, key3) != "run" || surrealValue(t, sdb, "e2e_kv", key3) != "run" {
		t.Fatal("Run's writes are missing")
	}
	// Reads come back through the API too.
	_, res, err = c.Run(ctx, client.TxOptions{}, client.On("pg", client.SQL("SELECT v FROM e2e_kv WHERE k = $1", key3)))
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 || res[0].Rows[0][0] != "run" {
		t.Fatalf("read back: %v %v", res, err)
	}
}

// A PostgreSQL branch failing a deferred constraint at PREPARE aborts the
// whole transaction, and the error names the participant.
func TestConstraintAtPrepareAborts(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.start()
	p, sdb := pg(t), surreal(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()
	ctx := context.Background()

	key := uniq("fk")
	tx, err := c.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "pg", "INSERT INTO e2e_child (id, parent) VALUES ($1, -1)", key); err != nil {
		t.Fatalf("deferred FK must not fail at execute: %v", err)
	}
	if _, err := tx.Do(ctx, "surreal", client.Upsert("e2e_kv", key, map[string]any{"v": "fk"})); err != nil {
		t.Fatal(err)
	}
	err = tx.Commit(ctx)
	var ce *client.Error
	if !errors.Is(err, client.ErrAborted) || !errors.As(err, &ce) || ce.Participant != "pg" || !strings.Contains(ce.Message, `"pg"`) {
		t.Fatalf("want ErrAborted naming participant pg, got %v", err)
	}
	if surrealValue(t, sdb, "e2e_kv", key) != nil {
		t.Fatal("surreal write of an aborted transaction is visible")
	}
	if n := pgPrepared(t, p, n.gidLike()); n != 0 {
		t.Fatalf("%d prepared transactions left", n)
	}
}

// assertNothingInDoubt checks that no branch of this node is prepared in
// PostgreSQL and no intent or lock is left in SurrealDB.
func assertNothingInDoubt(t *testing.T, n *node) {
	t.Helper()
	p, sdb := pg(t), surreal(t)
	eventually(t, 20*time.Second, "no prepared PostgreSQL branches", func() bool { return pgPrepared(t, p, n.gidLike()) == 0 })
	eventually(t, 20*time.Second, "no SurrealDB intents", func() bool { return surrealIntents(t, sdb, n) == 0 })
}

func TestBadInput(t *testing.T) {
	n := newNode(t, nodeOpts{maxStatements: 3})
	n.start()
	p := pg(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()
	ctx := context.Background()

	check := func(name string, err error, code codes.Code, field string) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != code || (field != "" && ce.Field != field) {
			t.Errorf("%s: want %s naming %q, got %v (field %q)", name, code, field, err, fieldOf(err))
			return
		}
		if field != "" && !strings.Contains(ce.Message, field) {
			t.Errorf("%s: message does not name the field %s: %s", name, field, ce.Message)
		}
	}

	tx, err := c.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "nosuch", "SELECT 1")
	check("unknown participant", err, codes.InvalidArgument, "statement.participant")
	_, err = tx.Exec(ctx, "pg", "   ")
	check("empty statement", err, codes.InvalidArgument, "statement.sql.sql")
	_, err = tx.Exec(ctx, "pg", "SELECT $1::text", strings.Repeat("x", 1<<20+1))
	check("oversized payload", err, codes.InvalidArgument, "statement")
	_, err = tx.Do(ctx, "pg", client.Upsert("t", "1", nil))
	check("record op on postgres", err, codes.InvalidArgument, "statement.sql")
	// The transaction is still usable after rejected input.
	for i := 0; i < 3; i++ {
		if _, err := tx.Exec(ctx, "pg", "SELECT 1"); err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	_, err = tx.Exec(ctx, "pg", "SELECT 1")
	check("too many statements", err, codes.InvalidArgument, "statement")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "pg", "SELECT 1")
	check("execute after commit", err, codes.FailedPrecondition, "txid")

	steps := []client.Step{}
	for i := 0; i < 4; i++ {
		steps = append(steps, client.On("pg", client.SQL("SELECT 1")))
	}
	_, _, err = c.Run(ctx, client.TxOptions{}, steps...)
	check("too many statements in Run", err, codes.InvalidArgument, "statements")
	_, _, err = c.Run(ctx, client.TxOptions{}, client.On("surreal", client.Upsert("", "x", nil)))
	check("record without table", err, codes.InvalidArgument, "statements[0].record.record")

	_, err = c.GetTransaction(ctx, "not-a-txid")
	check("malformed txid", err, codes.InvalidArgument, "txid")
	_, err = c.GetTransaction(ctx, "")
	check("empty txid", err, codes.InvalidArgument, "txid")
	_, err = c.Begin(ctx, client.TxOptions{Timeout: 24 * time.Hour})
	check("timeout too long", err, codes.InvalidArgument, "options.timeout")
	unknownExec := execOn(ctx, c, "0000000000000000beef")
	check("unknown txid", unknownExec, codes.FailedPrecondition, "txid")
}

func fieldOf(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Field
	}
	return ""
}

// execOn executes on a txid this client did not begin.
func execOn(ctx context.Context, c *client.Client, txid string) error {
	_, err := c.Resume(txid).Exec(ctx, "pg", "SELECT 1")
	return err
}

// Crash tests: the coordinator is SIGKILLed at a named failpoint during
// Commit; the client sees an unknown outcome (never a failure); after a
// restart, recovery resolves it and both stores agree.
func TestCrashAtFailpoints(t *testing.T) {
	cases := []struct {
		failpoint  string
		wantCommit bool
	}{
		{"before-decision", false},
		{"after-decision", true},
		{"mid-commit", true},
		{"before-forget", true},
		{"unstored-decision", true},
	}
	for _, tc := range cases {
		t.Run(tc.failpoint, func(t *testing.T) {
			n := newNode(t, nodeOpts{})
			n.start(tc.failpoint)
			p, sdb := pg(t), surreal(t)
			setupSchema(t, p)
			c := n.client()
			defer c.Close()
			ctx := context.Background()

			key := uniq("crash")
			tx, err := writeBoth(ctx, t, c, key, "v")
			n.waitExit(10 * time.Second)
			switch {
			case tc.failpoint == "unstored-decision":
				// Phase two finished before the crash, so the reply may
				// have left first; either answer is true, a failure is not.
				if err != nil && !errors.Is(err, client.ErrOutcomeUnknown) {
					t.Fatalf("commit through a crash after phase two: want committed or unknown, got %v", err)
				}
				// The participants committed on a decision the decision
				// store had not committed yet: the crash left it only in
				// the Raft log.
				if pv, sv := pgValue(t, p, key), surrealValue(t, sdb, "e2e_kv", key); pv != "v" || sv != "v" {
					t.Fatalf("phase two before the crash: postgres=%v surrealdb=%v, want both committed", pv, sv)
				}
				if rec := storedDecision(t, n, tx.ID()); rec != nil {
					t.Fatalf("the decision store committed the decision before the crash (%+v): the failpoint missed its window", rec)
				}
			case !errors.Is(err, client.ErrOutcomeUnknown):
				t.Fatalf("commit through a crash must report an unknown outcome, got %v", err)
			}
			if tc.failpoint == "before-decision" {
				// Both branches are prepared and hold their locks right now.
				if got := pgPrepared(t, p, n.gidLike()); got != 1 {
					t.Fatalf("want 1 prepared PostgreSQL branch while the coordinator is down, got %d", got)
				}
			}

			n.start() // same data dir, no failpoint
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			outcome, err := c.WaitOutcome(wctx, tx.ID())
			cancel()
			if err != nil {
				t.Fatalf("outcome not resolved: %v; log:\n%s", err, n.log())
			}
			want := pb.Outcome_ABORTED
			if tc.wantCommit {
				want = pb.Outcome_COMMITTED
			}
			if outcome != want {
				t.Fatalf("outcome %s, want %s", outcome, want)
			}
			assertNothingInDoubt(t, n)
			if tc.failpoint == "unstored-decision" {
				// Restart replayed the entry from the Raft log into the store.
				n.stop()
				if rec := storedDecision(t, n, tx.ID()); rec == nil || rec.Outcome != wal.OutcomeCommit {
					t.Fatalf("after the restart the decision store holds %+v, want the COMMIT decision replayed from the Raft log", rec)
				}
			}
			pv, sv := pgValue(t, p, key), surrealValue(t, sdb, "e2e_kv", key)
			if tc.wantCommit && (pv != "v" || sv != "v") {
				t.Fatalf("committed transaction incomplete: postgres=%v surrealdb=%v", pv, sv)
			}
			if !tc.wantCommit && (pv != nil || sv != nil) {
				t.Fatalf("aborted transaction visible: postgres=%v surrealdb=%v", pv, sv)
			}
		})
	}
}

// A SurrealDB branch whose record is locked by another prepared transaction
// votes NO: the whole transaction aborts, naming the participant, and the
// PostgreSQL branch is rolled back too.
func TestSurrealLockConflictAborts(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.start()
	p := pg(t)
	setupSchema(t, p)
	ctx := context.Background()
	key := uniq("lock")

	// Another transaction manager (a different GID prefix, which txcoord's
	// recovery must leave alone) holds the record's lock, prepared.
	cfg := surrealadapter.DefaultConfig()
	cfg.Name, cfg.URL, cfg.Namespace, cfg.Database, cfg.Username, cfg.Password = "surreal", suite.DBs.SurrealURL, suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser, suite.DBs.SurrealPass
	other, err := surrealadapter.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherGID := "other:" + key + ":surreal"
	br, err := other.Begin(ctx, otherGID, participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.Execute(ctx, participants.Operation{Kind: participants.OpUpsert,
		Record: participants.RecordID{Table: "e2e_kv", ID: key}, Content: map[string]any{"v": "other"}}); err != nil {
		t.Fatal(err)
	}
	if vote, err := br.Prepare(ctx); vote != participants.VoteYes || err != nil {
		t.Fatalf("holder did not prepare: %v %v", vote, err)
	}
	defer other.RollbackPrepared(context.Background(), otherGID)

	c := n.client()
	defer c.Close()
	_, err = writeBoth(ctx, t, c, key, "mine")
	var ce *client.Error
	if !errors.Is(err, client.ErrAborted) || !errors.As(err, &ce) || ce.Participant != "surreal" || !strings.Contains(ce.Message, `"surreal"`) {
		t.Fatalf("want ErrAborted naming participant surreal, got %v", err)
	}
	t.Logf("abort reported to the client: %s", ce.Message)
	if !strings.Contains(strings.ToLower(ce.Message), "conflict") {
		t.Errorf("abort message should say it was a conflict: %s", ce.Message)
	}
	if pgValue(t, p, key) != nil {
		t.Fatal("postgres write of the aborted transaction is visible")
	}
	assertNothingInDoubt(t, n)
	// txcoord's recovery scans ran meanwhile; the foreign branch is intact.
	branches, err := other.InDoubt(ctx, "other:"+key)
	if err != nil || len(branches) != 1 {
		t.Fatalf("foreign prepared branch touched by txcoord: %v %v", branches, err)
	}
}
