// Package txctl_test runs txctl against real txcoord processes and the real
// PostgreSQL and SurrealDB started by `make db-up` (env from scripts/pg.sh env
// and scripts/surreal.sh env). Each node reaches its databases through a TCP
// proxy the test can cut, to make a participant unreachable. txctl runs
// in-process (txctl.Main), exactly as the binary does. Without the database
// environment the tests skip, saying so.
//
// With TXCTL_TRANSCRIPT_DIR set, every txctl invocation and its output are
// also appended to DIR/<test>.txt (docs/runbook.md quotes them).
package txctl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/testkit"
	"github.com/txcoord/txcoord/internal/txctl"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

var (
	txcoordBin string // built once in TestMain
)

var suite *testkit.Suite

func TestMain(m *testing.M) {
	var err error
	suite, err = testkit.Setup("test/txctl")
	if err == nil {
		txcoordBin = suite.Binary
	}
	os.Exit(testkit.Main(m, suite, err))
}

func needDBs(t *testing.T) {
	t.Helper()
	suite.Need(t)
}

func freePort(t *testing.T) string { return testkit.FreePort(t) }

// node is one txcoord process with its own data dir and cluster id, talking
// to PostgreSQL ("pg") and SurrealDB ("surreal") through proxies.
type node struct {
	t         *testing.T
	id        string
	dir       string
	dataDir   string
	cfg       string
	addr      string
	raftAddr  string
	clusterID string
	pgProxy   *proxy
	surProxy  *proxy
	proc      *testkit.Process // nil before the first start
}

type nodeOpts struct {
	id        string
	clusterID string // shared by the nodes of one cluster; default: a new one
	// bootstrap false: the node starts empty and waits to be added.
	noBootstrap bool
	// slowElection: a 2s heartbeat timeout leaves the test time to cut a
	// proxy between the participants opening and the first recovery.
	slowElection bool
	// extraYAML is appended to the configuration (tls, auth...).
	extraYAML string
}

func uniqueClusterID() string {
	return fmt.Sprintf("txctl%d", time.Now().UnixNano()%1_000_000_000)
}

func newNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	needDBs(t)
	if o.id == "" {
		o.id = "n1"
	}
	if o.clusterID == "" {
		o.clusterID = uniqueClusterID()
	}
	dir := t.TempDir()
	pgU, err := url.Parse(suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	surU, err := url.Parse(suite.DBs.SurrealURL)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, id: o.id, dir: dir, dataDir: filepath.Join(dir, "data"), addr: freePort(t), raftAddr: freePort(t),
		cfg: filepath.Join(dir, "txcoord.yaml"), clusterID: o.clusterID,
		pgProxy: newProxy(t, pgU.Host), surProxy: newProxy(t, surU.Host)}
	pgU.Host, surU.Host = n.pgProxy.addr(), n.surProxy.addr()
	election := ""
	if o.slowElection {
		election = "  heartbeat_timeout: 2s\n  election_timeout: 2s\n"
	}
	yaml := fmt.Sprintf(`%snode_id: %s
cluster_id: %s
listen: %s
data_dir: %s
log_level: debug
raft:
  bind: %s
  bootstrap: %t
%scoordinator:
  # Only the start-up pass, txctl recover and txctl resolve recover: the
  # test decides when in-doubt state gets resolved.
  recovery_interval: 10m
participants:
  - name: pg
    kind: postgres
    dsn: %q
  - name: surreal
    kind: surrealdb
    url: %q
    namespace: %s
    database: %s
    username: %s
    password_env: TXCTL_TEST_SURREAL_PASS
%s`, insecureUnlessTLS(o.extraYAML), n.id, n.clusterID, n.addr, n.dataDir, n.raftAddr, !o.noBootstrap, election, pgU.String(), surU.String(), suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser, o.extraYAML)
	if err := os.WriteFile(n.cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	return n
}

type startOpts struct {
	failpoint string // armed as NAME=kill
	// onLog runs fn as soon as the process logs a line containing the key
	// (before start returns).
	onLog map[string]func()
	// follower: wait only until the gRPC port answers (a follower never
	// reports SERVING).
	follower bool
	// dial: how to reach the health service (default plaintext).
	dial []grpc.DialOption
}

// start launches the process and waits until it serves.
func (n *node) start(o startOpts) {
	n.t.Helper()
	args := []string{"serve", "--config", n.cfg}
	if o.failpoint != "" {
		args = append(args, "--failpoint", o.failpoint+"=kill")
	}
	logPath := filepath.Join(n.dir, fmt.Sprintf("txcoord-%d.log", time.Now().UnixNano()))
	n.proc = testkit.Start(n.t, n.id, txcoordBin, args, []string{"TXCTL_TEST_SURREAL_PASS=" + suite.DBs.SurrealPass}, logPath)
	proc := n.proc

	var watch sync.WaitGroup
	stopWatch := make(chan struct{})
	var firedMu sync.Mutex
	fired := map[string]bool{}
	if len(o.onLog) > 0 {
		watch.Add(1)
		go func() {
			defer watch.Done()
			for {
				b, _ := os.ReadFile(proc.LogPath)
				firedMu.Lock()
				for key, fn := range o.onLog {
					if !fired[key] && bytes.Contains(b, []byte(key)) {
						fired[key] = true
						fn()
					}
				}
				all := len(fired) == len(o.onLog)
				firedMu.Unlock()
				if all {
					return
				}
				select {
				case <-proc.Exited():
					return
				case <-stopWatch:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	defer func() {
		close(stopWatch)
		watch.Wait()
		for key := range o.onLog {
			if !fired[key] {
				n.t.Fatalf("txcoord %s started without logging %q; log:\n%s", n.id, key, n.log())
			}
		}
	}()
	proc.WaitHealth(n.t, n.addr, o.dial, !o.follower, 60*time.Second)
}

func (n *node) log() string {
	if n.proc == nil {
		return ""
	}
	return n.proc.Log()
}

// waitKilled waits for the process to die by SIGKILL (a failpoint) within d.
func (n *node) waitKilled(d time.Duration) {
	n.t.Helper()
	select {
	case <-n.proc.Exited():
	case <-time.After(d):
		n.t.Fatalf("txcoord %s did not exit within %s; log:\n%s", n.id, d, n.log())
	}
	if !n.proc.KilledBySIGKILL() {
		n.t.Fatalf("txcoord %s exited but not by SIGKILL (%v); log:\n%s", n.id, n.proc.State(), n.log())
	}
}

// stop shuts the process down cleanly (SIGTERM), killing it after 15s.
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
	n.t.Cleanup(func() { c.Close() })
	return c
}

// gidPrefix is the prefix of this cluster's GIDs.
func (n *node) gidPrefix() string { return "txc:" + n.clusterID + ":" }

// result is one txctl invocation.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

// txctl runs the CLI in-process against addr (as TXCOORD_ADDR) and records
// the invocation in the test log (and the transcript, when enabled).
func txctlRun(t *testing.T, addr string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := txctl.Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "TXCOORD_ADDR" {
			return addr
		}
		return ""
	}}
	code := txctl.Main(context.Background(), args, env)
	r := result{args: args, stdout: out.String(), stderr: errb.String(), code: code}
	text := fmt.Sprintf("$ txctl %s\n%s%s(exit %d)\n", shellQuote(args), r.stdout, r.stderr, r.code)
	t.Logf("\n%s", text)
	if dir := os.Getenv("TXCTL_TRANSCRIPT_DIR"); dir != "" {
		name := strings.ReplaceAll(t.Name(), "/", "_") + ".txt"
		if f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(f, "%s\n", text)
			f.Close()
		}
	}
	return r
}

// shellQuote renders args as an operator would type them.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"()$*?;&|<>") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// want fails the test unless the invocation ended with code.
func (r result) want(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("txctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", shellQuote(r.args), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// json decodes stdout.
func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("txctl %s: stdout is not JSON: %v\n%s", strings.Join(r.args, " "), err, r.stdout)
	}
	return m
}

func (r result) contains(t *testing.T, parts ...string) {
	t.Helper()
	all := r.stdout + r.stderr
	for _, p := range parts {
		if !strings.Contains(all, p) {
			t.Errorf("txctl %s: output lacks %q:\n%s", strings.Join(r.args, " "), p, all)
		}
	}
}

// list returns m[key] as a list of objects.
func list(m map[string]any, key string) []map[string]any {
	var out []map[string]any
	xs, _ := m[key].([]any)
	for _, x := range xs {
		if o, ok := x.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

// branchesOf returns the in-doubt rows of txid, by participant.
func branchesOf(m map[string]any, txid string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, b := range list(m, "branches") {
		if b["txid"] == txid {
			out[b["participant"].(string)] = b
		}
	}
	return out
}

func pgPool(t *testing.T) *pgxpool.Pool {
	return suite.DBs.PGPool(t, `CREATE TABLE IF NOT EXISTS txctl_kv (k text PRIMARY KEY, v text NOT NULL)`)
}

func pgValue(t *testing.T, p *pgxpool.Pool, k string) any {
	t.Helper()
	var v *string
	err := p.QueryRow(context.Background(), "SELECT v FROM txctl_kv WHERE k = $1", k).Scan(&v)
	if err != nil && !strings.Contains(err.Error(), "no rows") {
		t.Fatal(err)
	}
	if v == nil {
		return nil
	}
	return *v
}

func pgPrepared(t *testing.T, p *pgxpool.Pool, prefix string) int {
	t.Helper()
	var n int
	if err := p.QueryRow(context.Background(), "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", prefix+"%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// surreal opens an SDK connection (independent of the adapter under test).
func surreal(t *testing.T) *surrealdb.DB { return suite.DBs.Surreal(t) }

// surrealValue reads field v of txctl_kv:id, or nil when absent.
func surrealValue(t *testing.T, db *surrealdb.DB, id string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := surrealdb.Query[[]any](ctx, db, "SELECT VALUE v FROM type::record('txctl_kv', $id)", map[string]any{"id": id})
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		t.Fatalf("read txctl_kv:%s: %v", id, err)
	}
	if len(*res) == 0 || len((*res)[0].Result) == 0 {
		return nil
	}
	return (*res)[0].Result[0]
}

// surrealIntents counts this cluster's intents and locks left in SurrealDB
// (the adapter's tables txc_intent and txc_lock carry the GID).
func surrealIntents(t *testing.T, db *surrealdb.DB, prefix string) int {
	t.Helper()
	total := 0
	for _, table := range []string{"txc_intent", "txc_lock"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := surrealdb.Query[[]any](ctx, db,
			fmt.Sprintf("SELECT VALUE gid FROM %s WHERE string::starts_with(gid, $p)", table), map[string]any{"p": prefix})
		cancel()
		if err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				continue
			}
			t.Fatalf("count %s: %v", table, err)
		}
		if len(*res) > 0 {
			total += len((*res)[0].Result)
		}
	}
	return total
}

// writeBoth runs one transaction writing key=val to both stores, up to Commit.
func writeBoth(ctx context.Context, t *testing.T, c *client.Client, key, val string) (*client.Tx, error) {
	t.Helper()
	tx, err := c.Begin(ctx, client.TxOptions{Timeout: 20 * time.Second, Labels: map[string]string{"test": t.Name(), "order": key}})
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(ctx, "pg", "INSERT INTO txctl_kv (k, v) VALUES ($1, $2)", key, val); err != nil {
		t.Fatalf("pg insert: %v", err)
	}
	if _, err := tx.Do(ctx, "surreal", client.Upsert("txctl_kv", key, map[string]any{"v": val})); err != nil {
		t.Fatalf("surreal upsert: %v", err)
	}
	return tx, tx.Commit(ctx)
}

func uniq(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, time.Now().UnixNano())
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, d, what, cond)
}

// crashInDoubt starts n with a kill failpoint, runs one transaction into it
// and returns its txid once the process died, with both branches prepared.
func crashInDoubt(t *testing.T, n *node, failpoint, key string) string {
	t.Helper()
	n.start(startOpts{failpoint: failpoint})
	c := n.client()
	tx, err := writeBoth(context.Background(), t, c, key, "v")
	n.waitKilled(15 * time.Second)
	if err == nil {
		t.Fatalf("commit through a %s kill returned success", failpoint)
	}
	t.Logf("commit through the %s kill: %v", failpoint, err)
	return tx.ID()
}

// restartCut restarts n with the given proxies cut as soon as both
// participants are open (before the first election, so before the start-up
// recovery): the databases are down when the node comes back.
func restartCut(n *node, cut ...*proxy) {
	n.start(startOpts{onLog: map[string]func(){
		"surrealdb participant open": func() {
			for _, p := range cut {
				p.Cut()
			}
		},
	}})
}

// hashDir returns path → sha256 of every file under dir.
func hashDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[path] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalHashes(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// editAuditReason rewrites the reason of audit entry seq in a stopped
// node's decisions.db with bbolt directly (bucket "audit", key the 8-byte
// big-endian seq, value the entry as JSON), as a tamperer would.
// editAuditDetail rewrites a decision entry's COMMIT as ABORT in the file.
func editAuditDetail(t *testing.T, path string, seq uint64) {
	t.Helper()
	editAuditField(t, path, seq, func(e map[string]any) {
		e["detail"] = strings.Replace(e["detail"].(string), "COMMIT", "ABORT", 1)
	})
}

func editAuditReason(t *testing.T, path string, seq uint64, reason string) {
	t.Helper()
	editAuditField(t, path, seq, func(e map[string]any) { e["reason"] = reason })
}

func editAuditField(t *testing.T, path string, seq uint64, edit func(map[string]any)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		if b == nil {
			return fmt.Errorf("no audit bucket")
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		var e map[string]any
		if err := json.Unmarshal(b.Get(k[:]), &e); err != nil {
			return fmt.Errorf("audit entry %d: %w", seq, err)
		}
		edit(e)
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(k[:], v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (r result) notContains(t *testing.T, parts ...string) {
	t.Helper()
	all := r.stdout + r.stderr
	for _, p := range parts {
		if strings.Contains(all, p) {
			t.Errorf("txctl %s: output has %q:\n%s", strings.Join(r.args, " "), p, all)
		}
	}
}

// insecureUnlessTLS: a node without tls must say it runs insecure (loopback).
func insecureUnlessTLS(extra string) string {
	if strings.Contains(extra, "tls:") {
		return ""
	}
	return "insecure: true\n"
}
