package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// A Run whose call ends in the client's deadline after the transaction
// began still names its txid (the server announces it in a header before
// running any statement), so the unknown outcome can be resolved: WaitOutcome
// gives a definite outcome, and the stores agree with it.
func TestRunTimeoutNamesTxID(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.start()
	p, sdb := pg(t), surreal(t)
	setupSchema(t, p)
	c := n.client()
	defer c.Close()

	key := uniq("runtimeout")
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	r, err := c.RunTx(ctx, client.TxOptions{},
		client.On("surreal", client.Upsert("e2e_kv", key, map[string]any{"v": "slow"})),
		client.On("pg", client.SQL("INSERT INTO e2e_kv (k, v) SELECT $1, 'slow' FROM pg_sleep(3)", key)))
	cancel()
	var ce *client.Error
	if !errors.Is(err, client.ErrOutcomeUnknown) || !errors.As(err, &ce) {
		t.Fatalf("Run past the client's deadline: want ErrOutcomeUnknown, got %v", err)
	}
	if r == nil || r.TxID == "" || ce.TxID != r.TxID {
		t.Fatalf("the timed-out Run does not name its transaction: result %+v, error txid %q", r, ce.TxID)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	outcome, err := c.WaitOutcome(wctx, r.TxID)
	if err != nil {
		t.Fatalf("WaitOutcome(%s): %v", r.TxID, err)
	}
	inPG, inSur := pgValue(t, p, key) != nil, surrealValue(t, sdb, "e2e_kv", key) != nil
	want := outcome == pb.Outcome_COMMITTED
	if inPG != want || inSur != want {
		t.Fatalf("outcome %s but postgres has the row: %v, surrealdb: %v", outcome, inPG, inSur)
	}
	t.Logf("timed-out Run %s resolved as %s", r.TxID, outcome)
	assertNothingInDoubt(t, n)
}
