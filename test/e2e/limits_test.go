package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
)

// TestLimitsNameTheLimit: each server limit, reached on a real process,
// refuses with the right gRPC code and a message naming the limit's field:
// max_request_bytes (ResourceExhausted), max_statements per Run and per
// interactive transaction (InvalidArgument), max_active in total
// (ResourceExhausted), max_timeout (InvalidArgument); and a transaction that
// outlives its timeout is rolled back (its write never becomes visible).
// Per-client max_active and rate are covered by TestAuthorizationLimitsAndSecrets.
func TestLimitsNameTheLimit(t *testing.T) {
	needDBs(t)
	n := newNode(t, nodeOpts{coordinatorYAML: "  max_statements: 3\n  max_active: 2\n  max_timeout: 1m\n  default_timeout: 30s\n  max_request_bytes: 4096\n"})
	n.start()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := n.client()
	one := client.On("pg", client.SQL("SELECT 1"))
	wantErr := func(what string, err error, code codes.Code, field string) {
		t.Helper()
		if codeOf(err) != code || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: want %s naming %s, got %v", what, code, field, err)
		}
	}

	// Request size: a statement of 5000 bytes in one request.
	big := client.On("pg", client.SQL("SELECT '"+strings.Repeat("x", 5000)+"'"))
	_, _, err := c.Run(ctx, client.TxOptions{}, big)
	wantErr("5000-byte request", err, codes.ResourceExhausted, "max_request_bytes")

	// Statements per transaction: in one Run, and one by one.
	_, _, err = c.Run(ctx, client.TxOptions{}, one, one, one, one)
	wantErr("Run of 4 statements", err, codes.InvalidArgument, "max_statements")
	if _, _, err := c.Run(ctx, client.TxOptions{}, one, one, one); err != nil {
		t.Errorf("Run of 3 statements: %v", err)
	}
	tx, err := c.Begin(ctx, client.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := tx.Exec(ctx, "pg", "SELECT 1"); err != nil {
			t.Fatalf("statement %d: %v", i+1, err)
		}
	}
	_, err = tx.Exec(ctx, "pg", "SELECT 1")
	wantErr("4th statement", err, codes.InvalidArgument, "max_statements")
	tx.Rollback(ctx)

	// Active transactions in total (2).
	a, err1 := c.Begin(ctx, client.TxOptions{})
	b, err2 := c.Begin(ctx, client.TxOptions{})
	if err1 != nil || err2 != nil {
		t.Fatalf("two transactions: %v %v", err1, err2)
	}
	_, err = c.Begin(ctx, client.TxOptions{})
	wantErr("third active transaction", err, codes.ResourceExhausted, "max_active")
	a.Rollback(ctx)
	b.Rollback(ctx)

	// Duration: above max_timeout is refused; past its timeout a
	// transaction is rolled back.
	_, err = c.Begin(ctx, client.TxOptions{Timeout: 2 * time.Minute})
	wantErr("timeout above max_timeout", err, codes.InvalidArgument, "max_timeout")
	table := fmt.Sprintf("e2e_expiry_%s", n.clusterID)
	pg, err := pgx.Connect(ctx, suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	if _, err := pg.Exec(ctx, "CREATE TABLE "+table+" (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	defer pg.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	short, err := c.Begin(ctx, client.TxOptions{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Exec(ctx, "pg", "INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the expired transaction rolled back", func() bool {
		info, err := c.GetTransaction(ctx, short.ID())
		return err == nil && info.GetOutcome() == pb.Outcome_ABORTED
	})
	if err := short.Commit(ctx); err == nil {
		t.Error("commit after expiry succeeded")
	}
	var count int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&count); err != nil || count != 0 {
		t.Errorf("the expired transaction's row is visible: %d %v", count, err)
	}
}
