// Package devdb_test is a smoke test of the development databases that
// scripts/db-up.sh starts: PostgreSQL with prepared transactions, and the
// SurrealDB server in devdb/surreal-server speaking the standard /rpc protocol.
//
// Run it with the databases up:
//
//	scripts/db-up.sh
//	eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
//	go test ./test/devdb/ -v
//
// Without TXCOORD_PG_DSN_A / TXCOORD_SURREAL_URL the tests skip and say so.
// The tests write only tables and records named after the run, and remove them.
package devdb_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
	"github.com/surrealdb/surrealdb.go/pkg/connection/gorillaws"
	"github.com/surrealdb/surrealdb.go/pkg/models"
)

// callTimeout bounds every database call: a dead server must fail the test,
// not hang it until the go test timeout.
const callTimeout = 10 * time.Second

func env(t *testing.T, names ...string) []string {
	t.Helper()
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = os.Getenv(n)
		if out[i] == "" {
			msg := fmt.Sprintf("SKIP: %s is not set; start the databases with scripts/db-up.sh and "+
				`eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"`, n)
			fmt.Println(msg) // visible without -v too
			t.Skip(msg)
		}
	}
	return out
}

func surrealEnv(t *testing.T) (u, user, pass, ns, db string) {
	v := env(t, "TXCOORD_SURREAL_URL")
	get := func(name, def string) string {
		if s := os.Getenv(name); s != "" {
			return s
		}
		return def
	}
	return v[0], get("TXCOORD_SURREAL_USER", "root"), get("TXCOORD_SURREAL_PASS", "root"),
		get("TXCOORD_SURREAL_NS", "txcoord"), get("TXCOORD_SURREAL_DB", "test")
}

func runID() string { return fmt.Sprintf("%d_%d", time.Now().UnixNano(), os.Getpid()) }

// --- PostgreSQL -------------------------------------------------------------

func TestPostgresPreparedTransactions(t *testing.T) {
	dsns := env(t, "TXCOORD_PG_DSN_A")
	ctx, cancel := context.WithTimeout(context.Background(), 4*callTimeout)
	defer cancel()

	t0 := time.Now()
	conn, err := pgx.Connect(ctx, dsns[0])
	if err != nil {
		t.Fatalf("connect %s: %v", dsns[0], err)
	}
	defer conn.Close(context.Background())
	t.Logf("connect took %v", time.Since(t0))

	var maxPrepared int
	if err := conn.QueryRow(ctx, "SELECT current_setting('max_prepared_transactions')::int").Scan(&maxPrepared); err != nil {
		t.Fatal(err)
	}
	if maxPrepared < 128 {
		t.Fatalf("max_prepared_transactions = %d, want >= 128", maxPrepared)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if fsync != "on" {
		t.Errorf("fsync = %s, want on", fsync)
	}

	id := runID()
	table := "devdb_smoke_" + id
	gid := "devdb-smoke:" + id
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (k text PRIMARY KEY, v int)", table)); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) //nolint:errcheck // cleanup

	for _, stmt := range []string{
		"BEGIN",
		fmt.Sprintf("INSERT INTO %s VALUES ('a', 1)", table),
		fmt.Sprintf("PREPARE TRANSACTION '%s'", gid),
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("pg_prepared_xacts has %d rows for %s, want 1", n, gid)
	}
	// Prepared, not yet committed: invisible.
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s", table)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("prepared row visible before COMMIT PREPARED")
	}
	t1 := time.Now()
	if _, err := conn.Exec(ctx, fmt.Sprintf("COMMIT PREPARED '%s'", gid)); err != nil {
		t.Fatal(err)
	}
	t.Logf("COMMIT PREPARED took %v", time.Since(t1))
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s", table)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("after COMMIT PREPARED: %d rows, want 1", n)
	}
	// A second COMMIT PREPARED of the same gid: 42704 (undefined_object).
	_, err = conn.Exec(ctx, fmt.Sprintf("COMMIT PREPARED '%s'", gid))
	t.Logf("repeated COMMIT PREPARED: %v", err)
	if err == nil || !strings.Contains(err.Error(), "42704") {
		t.Errorf("repeated COMMIT PREPARED: got %v, want SQLSTATE 42704", err)
	}

	if dsnB := os.Getenv("TXCOORD_PG_DSN_B"); dsnB != "" {
		cb, err := pgx.Connect(ctx, dsnB)
		if err != nil {
			t.Fatalf("connect %s: %v", dsnB, err)
		}
		defer cb.Close(context.Background())
		var db string
		if err := cb.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			t.Fatal(err)
		}
		t.Logf("database B: %s", db)
	}
}

// --- SurrealDB through the Go SDK ------------------------------------------

// dialSDK opens an SDK connection, signs in and selects ns/db.
//
// It uses the SDK's gorillaws connection: the gws one (lxzan/gws) is not a
// dependency of this module. gorillaws can panic the process when the server
// dies mid-request (surrealdb.go#395); these tests never stop the server.
func dialSDK(t *testing.T, ctx context.Context) *surrealdb.DB {
	t.Helper()
	rawURL, user, pass, ns, dbName := surrealEnv(t)
	u, err := url.ParseRequestURI(rawURL)
	if err != nil {
		t.Fatalf("TXCOORD_SURREAL_URL %q: %v", rawURL, err)
	}
	conf := connection.NewConfig(u)
	conf.Logger = nil
	conn := gorillaws.New(conf)
	conn.Timeout = callTimeout
	db, err := surrealdb.FromConnection(ctx, conn)
	if err != nil {
		t.Fatalf("connect %s: %v", rawURL, err)
	}
	if _, err := db.SignIn(ctx, surrealdb.Auth{Username: user, Password: pass}); err != nil {
		t.Fatalf("signin as %s: %v", user, err)
	}
	if err := db.Use(ctx, ns, dbName); err != nil {
		t.Fatalf("use %s/%s: %v", ns, dbName, err)
	}
	return db
}

// stmt is one statement's reply to the query RPC as SurrealDB 3 sends it;
// the SDK's QueryResult drops kind and details.
type stmt struct {
	Status  string          `cbor:"status"`
	Time    string          `cbor:"time"`
	Result  cbor.RawMessage `cbor:"result"`
	Kind    string          `cbor:"kind"`
	Details cbor.RawMessage `cbor:"details"`
	Type    cbor.RawMessage `cbor:"type"`
}

func diag(raw []byte) string {
	if len(raw) == 0 {
		return "<absent>"
	}
	s, err := cbor.Diagnose(raw)
	if err != nil {
		return fmt.Sprintf("<undecodable %x: %v>", raw, err)
	}
	return s
}

func TestSurrealSDK(t *testing.T) {
	_, _, _, ns, dbName := surrealEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*callTimeout)
	defer cancel()

	t0 := time.Now()
	db := dialSDK(t, ctx)
	defer db.Close(context.Background())
	t.Logf("connect+signin+use took %v", time.Since(t0))

	v, err := db.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server version %s", v.Version)

	table := "devdb_smoke_" + runID()
	defer surrealdb.Query[any](context.Background(), db, "REMOVE TABLE IF EXISTS "+table, nil) //nolint:errcheck // cleanup

	// An atomic text-block transaction.
	res, err := surrealdb.Query[any](ctx, db, fmt.Sprintf("BEGIN; CREATE %s:1 SET v = 1; COMMIT;", table), nil)
	if err != nil {
		t.Fatalf("BEGIN; CREATE; COMMIT: %v", err)
	}
	for i, r := range *res {
		t.Logf("BEGIN; CREATE; COMMIT: statement %d: status=%s result=%v", i, r.Status, r.Result)
		if r.Status != "OK" {
			t.Fatalf("statement %d: status %s", i, r.Status)
		}
	}
	got, err := surrealdb.Select[map[string]any](ctx, db, models.NewRecordID(table, 1))
	if err != nil || got == nil || fmt.Sprint((*got)["v"]) != "1" {
		t.Fatalf("select %s:1 = %v, %v; want v=1", table, got, err)
	}

	// CREATE of an existing record fails, through the SDK...
	_, err = surrealdb.Query[any](ctx, db, fmt.Sprintf("CREATE %s:1 SET v = 2", table), nil)
	t.Logf("SDK error for a duplicate CREATE: %T %q", err, err)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate CREATE through the SDK: got %v, want an 'already exists' error", err)
	}

	// ...and through a raw query RPC, which keeps kind and details.
	var raw connection.RPCResponse[[]stmt]
	sql := fmt.Sprintf("RETURN 1; CREATE %s:1 SET v = 2; BEGIN; CREATE %s:2; THROW 'boom'; COMMIT;", table, table)
	if err := surrealdb.Send(ctx, db, &raw, "query", sql, map[string]any{}); err != nil {
		t.Fatalf("raw query RPC: %v", err)
	}
	if raw.Result == nil || len(*raw.Result) < 3 {
		t.Fatalf("raw query RPC: want a result per statement, got %+v", raw.Result)
	}
	for i, s := range *raw.Result {
		t.Logf("statement %d: status=%s kind=%q result=%s details=%s type=%s",
			i, s.Status, s.Kind, diag(s.Result), diag(s.Details), diag(s.Type))
	}
	r := *raw.Result
	if r[0].Status != "OK" || diag(r[0].Result) != "1" {
		t.Errorf("RETURN 1: status %s result %s", r[0].Status, diag(r[0].Result))
	}
	if r[1].Status != "ERR" || r[1].Kind != "AlreadyExists" || len(r[1].Details) == 0 {
		t.Errorf("duplicate CREATE: status=%s kind=%q details=%s; want ERR AlreadyExists with details",
			r[1].Status, r[1].Kind, diag(r[1].Details))
	}
	thrown := false
	for _, s := range r[2:] {
		thrown = thrown || (s.Status == "ERR" && s.Kind == "Thrown")
	}
	if !thrown {
		t.Errorf("THROW inside the block: no statement with status ERR and kind Thrown")
	}
	// The THROW rolled back the block: no :2.
	var none connection.RPCResponse[[]stmt]
	if err := surrealdb.Send(ctx, db, &none, "query", fmt.Sprintf("SELECT * FROM %s:2", table), map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if got := diag((*none.Result)[0].Result); got != "[]" {
		t.Errorf("%s:2 after a rolled-back block: %s, want []", table, got)
	}
	t.Logf("ns/db %s/%s, table %s", ns, dbName, table)
}

// TestSurrealReconnect: a fresh connection after closing one sees the data.
func TestSurrealReconnect(t *testing.T) {
	surrealEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*callTimeout)
	defer cancel()
	table := "devdb_smoke_" + runID()

	db1 := dialSDK(t, ctx)
	if _, err := surrealdb.Query[any](ctx, db1, fmt.Sprintf("CREATE %s:1 SET v = 1", table), nil); err != nil {
		t.Fatal(err)
	}
	if err := db1.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}

	t0 := time.Now()
	db2 := dialSDK(t, ctx)
	defer db2.Close(context.Background())
	t.Logf("reconnect took %v", time.Since(t0))
	defer surrealdb.Query[any](context.Background(), db2, "REMOVE TABLE IF EXISTS "+table, nil) //nolint:errcheck // cleanup
	got, err := surrealdb.Select[map[string]any](ctx, db2, models.NewRecordID(table, 1))
	if err != nil || got == nil || fmt.Sprint((*got)["v"]) != "1" {
		t.Fatalf("select %s:1 on a fresh connection = %v, %v", table, got, err)
	}
}

// --- SurrealDB over a bare WebSocket ---------------------------------------

// rawConn speaks the /rpc protocol directly, to see the exact envelopes.
type rawConn struct {
	t  *testing.T
	ws *websocket.Conn
	n  int
}

func dialRaw(t *testing.T) *rawConn {
	t.Helper()
	rawURL, _, _, _, _ := surrealEnv(t)
	d := websocket.Dialer{Subprotocols: []string{"cbor"}, HandshakeTimeout: callTimeout}
	ws, resp, err := d.Dial(rawURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", rawURL, err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "cbor" {
		t.Fatalf("server chose subprotocol %q, want cbor", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	return &rawConn{t: t, ws: ws}
}

type envelope struct {
	ID     any             `cbor:"id"`
	Result cbor.RawMessage `cbor:"result"`
	Error  cbor.RawMessage `cbor:"error"`
}

// call sends {id, method, params, extra...} and returns the reply with the
// same id, and the raw reply frame.
func (c *rawConn) call(method string, params []any, extra map[string]any) (envelope, []byte) {
	c.t.Helper()
	c.n++
	id := fmt.Sprintf("req-%d", c.n)
	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	for k, v := range extra {
		req[k] = v
	}
	msg, err := cbor.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ws.SetWriteDeadline(time.Now().Add(callTimeout)) //nolint:errcheck // the write reports it
	if err := c.ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		c.t.Fatalf("%s: write: %v", method, err)
	}
	for {
		c.ws.SetReadDeadline(time.Now().Add(callTimeout)) //nolint:errcheck // the read reports it
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("%s: read: %v", method, err)
		}
		if typ != websocket.BinaryMessage {
			c.t.Fatalf("%s: got a frame of type %d, want binary", method, typ)
		}
		var env envelope
		if err := cbor.Unmarshal(data, &env); err != nil {
			c.t.Fatalf("%s: reply %s: %v", method, diag(data), err)
		}
		if env.ID == id {
			return env, data
		}
		c.t.Logf("%s: skipping frame %s", method, diag(data))
	}
}

func TestSurrealRawProtocol(t *testing.T) {
	_, user, pass, ns, dbName := surrealEnv(t)
	a := dialRaw(t)
	defer a.ws.Close()

	// session: null means this socket's session.
	null := map[string]any{"session": nil}
	if env, frame := a.call("signin", []any{map[string]any{"user": user, "pass": pass}}, null); env.Error != nil {
		t.Fatalf("signin: %s", diag(frame))
	}
	if env, frame := a.call("use", []any{ns, dbName}, null); env.Error != nil {
		t.Fatalf("use: %s", diag(frame))
	}
	env, frame := a.call("query", []any{"RETURN session::ns()"}, nil)
	t.Logf("query reply frame: %s", diag(frame))
	if env.Error != nil || !strings.Contains(diag(env.Result), fmt.Sprintf("%q", ns)) {
		t.Fatalf("session::ns() on the socket that ran use: %s", diag(frame))
	}

	// An RPC-level error: {id, error: {...}}.
	_, frame = a.call("query", []any{"SELECT * FROM ;"}, nil)
	t.Logf("RPC error frame (parse error): %s", diag(frame))
	_, frame = a.call("nosuchmethod", []any{}, nil)
	t.Logf("RPC error frame (unknown method): %s", diag(frame))
	env, frame = a.call("signin", []any{map[string]any{"user": user, "pass": pass + "-wrong"}}, nil)
	t.Logf("RPC error frame (bad password): %s", diag(frame))
	if env.Error == nil {
		t.Errorf("signin with a wrong password succeeded: %s", diag(frame))
	}

	// Sockets have separate sessions: a new socket has no ns selected.
	b := dialRaw(t)
	defer b.ws.Close()
	env, frame = b.call("query", []any{"RETURN session::ns()"}, nil)
	if env.Error != nil || strings.Contains(diag(env.Result), fmt.Sprintf("%q", ns)) {
		t.Errorf("a second socket sees the first one's session: %s", diag(frame))
	}
	b.call("use", []any{ns, dbName}, nil)

	// Reading a record of a table that does not exist is an error in 3.x.
	table := "devdb_smoke_" + runID()
	_, frame = b.call("query", []any{fmt.Sprintf("SELECT * FROM %s:1", table)}, nil)
	t.Logf("SELECT from a missing table: %s", diag(frame))

	// An interactive transaction left open on a closed socket is cancelled.
	if env, frame := b.call("query", []any{"DEFINE TABLE " + table}, nil); env.Error != nil {
		t.Fatalf("define table: %s", diag(frame))
	}
	defer b.call("query", []any{"REMOVE TABLE IF EXISTS " + table}, nil)
	env, frame = a.call("begin", nil, nil)
	if env.Error != nil {
		t.Fatalf("begin: %s", diag(frame))
	}
	t.Logf("begin reply frame: %s", diag(frame))
	txn := env.Result
	env, frame = a.call("query", []any{fmt.Sprintf("CREATE %s:1 SET v = 1", table)}, map[string]any{"txn": txn})
	if env.Error != nil {
		t.Fatalf("query in txn: %s", diag(frame))
	}
	env, _ = b.call("query", []any{fmt.Sprintf("SELECT * FROM %s:1", table)}, nil)
	if s := diag(env.Result); !strings.Contains(s, "[]") {
		t.Errorf("uncommitted record visible to another socket: %s", s)
	}
	a.ws.Close()
	// Poll with a harmless read inside the transaction until it is gone
	// (committing or cancelling here would race with the server's cancel).
	deadline := time.Now().Add(callTimeout)
	for {
		env, frame = b.call("query", []any{"RETURN 1"}, map[string]any{"txn": txn})
		if env.Error != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transaction of a closed socket was not cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("query in the transaction after its socket closed: %s", diag(frame))
	env, frame = b.call("query", []any{fmt.Sprintf("SELECT * FROM %s:1", table)}, nil)
	if s := diag(env.Result); !strings.Contains(s, `"result": []`) {
		t.Errorf("record of a cancelled transaction exists: %s", diag(frame))
	}
}
