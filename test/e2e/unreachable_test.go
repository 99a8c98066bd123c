package e2e

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/chaos"
	"github.com/txcoord/txcoord/client"
)

// A node whose PostgreSQL participant cannot be reached at start starts
// anyway: it serves transactions on SurrealDB, refuses those that need
// PostgreSQL with UNAVAILABLE naming the participant and the reason, and
// takes them once the database is reachable (the participant keeps
// trying to open in the background).
func TestStartsWithParticipantUnreachable(t *testing.T) {
	u, err := url.Parse(suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t) // nothing listens here until the proxy starts
	via := *u
	via.Host = port
	n := newNode(t, nodeOpts{pgDSN: via.String()})
	n.start()
	c := n.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sKey := uniq("unreach-s")
	if _, _, err := c.Run(ctx, client.TxOptions{}, client.On("surreal", client.Upsert("e2e_kv", sKey, map[string]any{"v": "s"}))); err != nil {
		t.Fatalf("a SurrealDB-only Run while PostgreSQL is unreachable: %v", err)
	}
	pKey := uniq("unreach-p")
	run := func() error {
		_, _, err := c.Run(ctx, client.TxOptions{},
			client.On("pg", client.SQL("INSERT INTO e2e_kv (k, v) VALUES ($1, 'p')", pKey)),
			client.On("surreal", client.Upsert("e2e_kv", pKey, map[string]any{"v": "p"})))
		return err
	}
	err = run()
	var ce *client.Error
	if !errors.Is(err, client.ErrAborted) && !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ce) ||
		!strings.Contains(ce.Message, "not open yet") {
		t.Fatalf("a Run that needs the unreachable participant: want a refusal saying it is not open yet, got %v", err)
	}
	t.Logf("refused as expected: %v", err)

	proxy, err := chaos.NewProxy("pg", port, u.Host, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	setupSchema(t, pg(t))
	deadline := time.Now().Add(45 * time.Second) // the adapter retries after 1, 2, 4, 8, 16 s
	for {
		err = run()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL reachable for 45 s, and Runs on it still fail: %v\n%s", err, n.log())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if pgValue(t, pg(t), pKey) != "p" || surrealValue(t, surreal(t), "e2e_kv", pKey) != "p" {
		t.Fatal("the Run committed but its writes are missing")
	}
	assertNothingInDoubt(t, n)
}
