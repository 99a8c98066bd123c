// Package console_test drives the web console in real headless Chromium
// (chromedp) against a real 3-node txcoord cluster and the real PostgreSQL
// and SurrealDB started by `make db-up` (env from scripts/pg.sh env and
// scripts/surreal.sh env). Each node reaches its databases through proxies
// (chaos.Proxy) the test can cut. Every test saves a screenshot of its page
// to $TXCOORD_SCREENSHOT_DIR/<page>.png — .data/console by default, so a
// test run leaves the work tree alone; `make console-screenshots` writes
// them to docs/console, which the README shows.
//
// Without the database environment the tests skip, saying so. Without a
// Chromium they skip too, unless CI is set: under CI a missing browser
// fails (scripts/chromium.sh, run by `make test`, installs it).
package console_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/chaos"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/testkit"
)

var (
	txcoordBin string // built once in TestMain
	chromePath string
	skipWhy    string
)

// Tokens of the test's clients (auth.tokens_file): ops may use the Admin
// service (and so the console), app only the Coordinator service.
const (
	opsToken = "console-test-ops-0123456789abcdef"
	appToken = "console-test-app-0123456789abcdef"
)

var suite *testkit.Suite

func TestMain(m *testing.M) {
	var err error
	suite, err = testkit.Setup("test/console")
	if err == nil && suite.Binary != "" {
		txcoordBin = suite.Binary
		if chromePath = findChromium(); chromePath == "" {
			if os.Getenv("CI") != "" {
				fmt.Println("test/console: FAIL: no Chromium found (chromium, chromium-browser, google-chrome) and CI is set: scripts/chromium.sh installs it (make test runs it)")
				os.Exit(1)
			}
			skipWhy = "no Chromium found (chromium, chromium-browser, google-chrome): run scripts/chromium.sh"
			fmt.Println("test/console: SKIP:", skipWhy)
		}
	}
	if err == nil && suite.Binary == "" {
		skipWhy = "databases not configured: " + testkit.NotConfigured
	}
	os.Exit(testkit.Main(m, suite, err))
}

func findChromium() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func needEnv(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

func freePort(t *testing.T) string { return testkit.FreePort(t) }

// node is one txcoord process with a console, reaching PostgreSQL ("pg")
// and SurrealDB ("surreal") through its own proxies.
type node struct {
	t        *testing.T
	id       string
	dir      string
	cfg      string
	addr     string
	raftAddr string
	console  string // http://host:port
	pg, sur  *chaos.Proxy
	proc     *testkit.Process // nil before the first start
}

// cluster is three nodes bootstrapped together, with access control on.
type cluster struct {
	t     *testing.T
	id    string
	nodes []*node
	admin *client.Client // ops: Admin service
	app   *client.Client // app: Coordinator service
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	needEnv(t)
	c := &cluster{t: t, id: fmt.Sprintf("console%d", time.Now().UnixNano()%1_000_000_000)}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("ops "+opsToken+"\napp "+appToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pgU, err := url.Parse(suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	surU, err := url.Parse(suite.DBs.SurrealURL)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		n := &node{t: t, id: fmt.Sprintf("n%d", i), dir: filepath.Join(dir, fmt.Sprintf("n%d", i)),
			addr: freePort(t), raftAddr: freePort(t), console: "http://" + freePort(t)}
		if n.pg, err = chaos.NewProxy(n.id+"-pg", "127.0.0.1:0", pgU.Host, nil); err != nil {
			t.Fatal(err)
		}
		if n.sur, err = chaos.NewProxy(n.id+"-surreal", "127.0.0.1:0", surU.Host, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.pg.Close(); n.sur.Close() })
		os.MkdirAll(n.dir, 0o755)
		c.nodes = append(c.nodes, n)
	}
	var peers strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&peers, "    - {id: %s, raft: %q, grpc: %q}\n", n.id, n.raftAddr, n.addr)
	}
	for _, n := range c.nodes {
		pg, sur := *pgU, *surU
		pg.Host, sur.Host = n.pg.Addr(), n.sur.Addr()
		yaml := fmt.Sprintf(`insecure: true
node_id: %s
cluster_id: %s
listen: %q
data_dir: %q
log_level: debug
raft:
  bind: %q
  bootstrap: true
  peers:
%scoordinator:
  # Only elections, and the console's apply, recover: the test decides
  # when in-doubt state gets resolved.
  recovery_interval: 10m
console:
  enabled: true
  listen: %q
auth:
  tokens_file: %q
  clients:
    - {name: ops, admin: true}
    - {name: app, coordinator: true, participants: ["*"]}
participants:
  - {name: pg, kind: postgres, dsn: %q}
  - {name: surreal, kind: surrealdb, url: %q, namespace: %s, database: %s, username: %s, password_env: CONSOLE_TEST_SURREAL_PASS}
`, n.id, c.id, n.addr, filepath.Join(n.dir, "data"), n.raftAddr, peers.String(), strings.TrimPrefix(n.console, "http://"),
			tokens, pg.String(), sur.String(), suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser)
		n.cfg = filepath.Join(n.dir, "txcoord.yaml")
		if err := os.WriteFile(n.cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.stop)
	}
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.addr)
	}
	policy := client.WithRetryPolicy(client.RetryPolicy{Attempts: 5, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if c.admin, err = client.Dial(context.Background(), strings.Join(addrs, ","), client.WithToken(opsToken, true), policy); err != nil {
		t.Fatal(err)
	}
	if c.app, err = client.Dial(context.Background(), strings.Join(addrs, ","), client.WithToken(appToken, true), policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.admin.Close(); c.app.Close() })
	return c
}

// gidPrefix is the prefix of this cluster's GIDs.
func (c *cluster) gidPrefix() string { return "txc:" + c.id + ":" }

// node returns the node with id.
func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	c.t.Fatalf("no node %q", id)
	return nil
}

// start launches the process (with failpoint NAME=kill armed, if given)
// and waits until its gRPC port answers health checks.
func (n *node) start(failpoint string) {
	n.t.Helper()
	args := []string{"serve", "--config", n.cfg}
	if failpoint != "" {
		args = append(args, "--failpoint", failpoint+"=kill")
	}
	logPath := filepath.Join(n.dir, fmt.Sprintf("txcoord-%d.log", time.Now().UnixNano()))
	n.proc = testkit.Start(n.t, n.id, txcoordBin, args, []string{"CONSOLE_TEST_SURREAL_PASS=" + suite.DBs.SurrealPass}, logPath)
	n.proc.WaitHealth(n.t, n.addr, nil, false, 60*time.Second)
}

func (n *node) log() string {
	if n.proc == nil {
		return ""
	}
	return n.proc.Log()
}

func (n *node) running() bool { return n.proc != nil && n.proc.Running() }

// stop shuts the process down (SIGTERM, SIGKILL after 15s).
func (n *node) stop() {
	if n.proc != nil {
		n.proc.Stop(15 * time.Second)
	}
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

// leader waits until a node leads and serves, and returns it.
func (c *cluster) leader(d time.Duration) *node {
	c.t.Helper()
	var found *node
	eventually(c.t, d, "a ready leader", func() bool {
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.admin.NodeStatus(ctx, n.addr)
			cancel()
			if err == nil && st.State == "Leader" && st.Ready {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, d, what, cond)
}

func pgPool(t *testing.T) *pgxpool.Pool {
	return suite.DBs.PGPool(t, `CREATE TABLE IF NOT EXISTS console_kv (k text PRIMARY KEY, v text NOT NULL)`)
}

// writeBoth runs one transaction writing key=val to both stores.
func writeBoth(ctx context.Context, t *testing.T, c *client.Client, labels map[string]string, key, val string) (*client.Tx, error) {
	t.Helper()
	tx, err := c.Begin(ctx, client.TxOptions{Timeout: 20 * time.Second, Labels: labels})
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(ctx, "pg", "INSERT INTO console_kv (k, v) VALUES ($1, $2)", key, val); err != nil {
		t.Fatalf("pg insert: %v", err)
	}
	if _, err := tx.Do(ctx, "surreal", client.Upsert("console_kv", key, map[string]any{"v": val})); err != nil {
		t.Fatalf("surreal upsert: %v", err)
	}
	return tx, tx.Commit(ctx)
}

// browser is one headless Chromium; tabs made from it share cookies unless
// made with their own browser context.
type browser struct {
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromePath), chromedp.WindowSize(1280, 800),
		chromedp.Flag("hide-scrollbars", true), chromedp.Flag("force-device-scale-factor", "1"))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox as root
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// Start it now, so a broken browser fails here, clearly. The first
	// action on a chromedp context starts the browser (or tab) for the
	// context it is given: it must be ctx itself, not a context with a
	// timeout whose end would close it; the timer bounds it instead.
	startFirst(t, ctx, "start Chromium ("+chromePath+")")
	return &browser{ctx: ctx}
}

// tab opens a tab; isolated gives it its own cookies (a stranger).
func (b *browser) tab(t *testing.T, isolated bool) context.Context {
	t.Helper()
	var opts []chromedp.ContextOption
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(b.ctx, opts...)
	t.Cleanup(cancel)
	startFirst(t, ctx, "open a tab")
	return ctx
}

// startFirst runs the first action of a chromedp context on the context
// itself, bounded by 30 s through a timer that cancels it.
func startFirst(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() { chromedp.Cancel(ctx) })
	defer timer.Stop()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// do runs browser steps, bounded by d.
func do(t *testing.T, ctx context.Context, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(cctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// open navigates and returns the HTTP status of the page.
func open(t *testing.T, ctx context.Context, u string) int64 {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.Run(cctx, chromedp.NavigateResponse(u))
	if err != nil {
		t.Fatalf("browser: open %s: %v", u, err)
	}
	return resp.Status
}

// eval evaluates JavaScript in the page and decodes the result into T.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(cctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: eval %q: %v", js, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true, within d.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(cctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
			t.Fatalf("browser: %s: not true after %s (last error %v); page text:\n%s", what, d, err, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// screenshot saves the viewport (1280x800) to <name>.png in
// $TXCOORD_SCREENSHOT_DIR (default .data/console at the repository root).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(cctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	dir := os.Getenv("TXCOORD_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", ".data", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signIn signs the tab in with a token through the form.
func signIn(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	open(t, ctx, base+"/login")
	do(t, ctx, 20*time.Second, "sign in",
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin")),
	)
	// Done when the answer is loaded: a page of the console, or the form
	// again with the reason it was refused.
	waitJS(t, ctx, 20*time.Second, "sign-in answered", `document.readyState === 'complete' && (location.pathname !== '/login' || !!document.querySelector('#login-reason'))`)
}
