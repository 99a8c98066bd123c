// Package e2e runs real txcoord processes against the real PostgreSQL and
// SurrealDB started by `make db-up` (env from scripts/pg.sh env and
// scripts/surreal.sh env). Without that environment the tests skip, saying so.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/testkit"
	"github.com/txcoord/txcoord/wal"
	"google.golang.org/grpc"
)

var (
	binary string // built once in TestMain
)

var suite *testkit.Suite

func TestMain(m *testing.M) {
	var err error
	suite, err = testkit.Setup("e2e")
	if err == nil {
		binary = suite.Binary
	}
	os.Exit(testkit.Main(m, suite, err))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func needDBs(t *testing.T) {
	t.Helper()
	suite.Need(t)
}

func freePort(t *testing.T) string { return testkit.FreePort(t) }

// node is one txcoord process with its own data dir and cluster id, so tests
// never touch each other's GIDs.
type node struct {
	t         *testing.T
	dir       string
	cfg       string
	addr      string
	opts      nodeOpts
	clusterID string
	proc      *testkit.Process // nil before the first start
}

type nodeOpts struct {
	maxStatements int
	// coordinatorYAML is added to the coordinator section ("  key: value\n" lines).
	coordinatorYAML string
	extraYAML       string
	// healthDial: how start() reaches the node (TLS nodes need credentials).
	healthDial []grpc.DialOption
	// pgDSN overrides the PostgreSQL participant's DSN.
	pgDSN string
}

func newNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	needDBs(t)
	dir := t.TempDir()
	n := &node{t: t, dir: dir, addr: freePort(t), cfg: filepath.Join(dir, "txcoord.yaml"), opts: o,
		clusterID: fmt.Sprintf("e2e%d", time.Now().UnixNano()%1_000_000_000)}
	maxStmts := ""
	if o.maxStatements > 0 {
		maxStmts = fmt.Sprintf("  max_statements: %d\n", o.maxStatements)
	}
	maxStmts += o.coordinatorYAML
	insecure := "insecure: true\n"
	if strings.Contains(o.extraYAML, "tls:") {
		insecure = ""
	}
	yaml := insecure + fmt.Sprintf(`node_id: n1
cluster_id: %s
listen: %s
data_dir: %s
raft:
  bind: %s
  bootstrap: true
coordinator:
  recovery_interval: 1s
%sparticipants:
  - name: pg
    kind: postgres
    dsn: %q
  - name: surreal
    kind: surrealdb
    url: %q
    namespace: %s
    database: %s
    username: %s
    password_env: E2E_SURREAL_PASS
%s`, n.clusterID, n.addr, filepath.Join(dir, "data"), freePort(t), maxStmts, cmpOr(o.pgDSN, suite.DBs.PGDSN), suite.DBs.SurrealURL, suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser, o.extraYAML)
	if err := os.WriteFile(n.cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	return n
}

// start launches the process (with failpoints name=kill) and waits until it
// serves.
func (n *node) start(failpoints ...string) {
	n.t.Helper()
	args := []string{"serve", "--config", n.cfg}
	for _, fp := range failpoints {
		args = append(args, "--failpoint", fp+"=kill")
	}
	logPath := filepath.Join(n.dir, fmt.Sprintf("txcoord-%d.log", time.Now().UnixNano()))
	n.proc = testkit.Start(n.t, "n1", binary, args, []string{"E2E_SURREAL_PASS=" + suite.DBs.SurrealPass}, logPath)
	n.proc.WaitHealth(n.t, n.addr, n.opts.healthDial, true, 30*time.Second)
}

func (n *node) log() string {
	if n.proc == nil {
		return ""
	}
	return n.proc.Log()
}

// waitExit waits for the process to die (a failpoint's SIGKILL) within d.
func (n *node) waitExit(d time.Duration) {
	n.t.Helper()
	select {
	case <-n.proc.Exited():
	case <-time.After(d):
		n.t.Fatalf("txcoord did not exit within %s; log:\n%s", d, n.log())
	}
	if !n.proc.KilledBySIGKILL() {
		n.t.Fatalf("txcoord exited but not by SIGKILL (%v); log:\n%s", n.proc.State(), n.log())
	}
}

func (n *node) kill() {
	if n.proc != nil {
		n.proc.Kill()
	}
}

func (n *node) stop() {
	if n.proc != nil {
		n.proc.Stop(15 * time.Second)
	}
}

func (n *node) client() *client.Client {
	c, err := client.Dial(context.Background(), n.addr, client.WithRetryPolicy(client.RetryPolicy{Attempts: 3, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}))
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// gidPattern matches this node's GIDs in pg_prepared_xacts.
func (n *node) gidLike() string { return "txc:" + n.clusterID + ":%" }

// pg opens a pool on the test database.
func pg(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// surreal opens an SDK connection (independent of the adapter under test).
func surreal(t *testing.T) *surrealdb.DB { return suite.DBs.Surreal(t) }

// surrealValue reads field v of record table:id, or nil when absent.
func surrealValue(t *testing.T, db *surrealdb.DB, table, id string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := surrealdb.Query[[]any](ctx, db, fmt.Sprintf("SELECT VALUE v FROM type::record('%s', $id)", table), map[string]any{"id": id})
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		t.Fatalf("read %s:%s: %v", table, id, err)
	}
	if len(*res) == 0 {
		return nil
	}
	r := (*res)[0].Result
	if len(r) == 0 {
		return nil
	}
	return r[0]
}

// surrealCount runs a count query returning one number.
func surrealCount(t *testing.T, db *surrealdb.DB, q string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := surrealdb.Query[any](ctx, db, q, nil)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(*res) == 0 {
		return 0
	}
	switch v := (*res)[0].Result.(type) {
	case uint64:
		return int(v)
	case int64:
		return int(v)
	case []any:
		return len(v)
	case nil:
		return 0
	default:
		t.Fatalf("%s: unexpected result %T %v", q, v, v)
	}
	return 0
}

func pgPrepared(t *testing.T, p *pgxpool.Pool, like string) int {
	t.Helper()
	var n int
	if err := p.QueryRow(context.Background(), "select count(*) from pg_prepared_xacts where gid like $1", like).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, d, what, cond)
}

func uniq(prefix string) string {
	return strings.ReplaceAll(fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()), "-", "")
}

// surrealIntents counts this node's intents and locks left in SurrealDB (the
// adapter's default tables txc_intent and txc_lock; both carry the GID).
func surrealIntents(t *testing.T, db *surrealdb.DB, n *node) int {
	t.Helper()
	prefix := "txc:" + n.clusterID + ":"
	total := 0
	for _, table := range []string{"txc_intent", "txc_lock"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := surrealdb.Query[[]any](ctx, db,
			fmt.Sprintf("SELECT VALUE gid FROM %s WHERE string::starts_with(gid, $p)", table), map[string]any{"p": prefix})
		cancel()
		if err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				continue // the table is created with the first intent
			}
			t.Fatalf("count %s: %v", table, err)
		}
		if len(*res) > 0 {
			total += len((*res)[0].Result)
		}
	}
	return total
}

// storedDecision reads txid's record from the node's decision store
// (read-only, so the node must not be running: bbolt locks the file).
func storedDecision(t *testing.T, n *node, txid string) *wal.Record {
	t.Helper()
	s, err := wal.Open(filepath.Join(n.dir, "data", "decisions.db"), wal.Options{ReadOnly: true, OpenTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open the decision store: %v", err)
	}
	defer s.Close()
	rec, err := s.Get(txid)
	if err != nil {
		t.Fatalf("read the decision store: %v", err)
	}
	return rec
}
