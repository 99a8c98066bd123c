package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// One cluster for the whole story, as an operator lives it: the cluster
// page, a workload in the list, a transaction left in doubt by a failpoint
// with its participant cut off, the plan applied once the participant is
// back, the audit entry, and a stranger who gets nothing.
func TestConsole(t *testing.T) {
	needEnv(t)
	start := time.Now()
	c := newCluster(t)
	for _, n := range c.nodes {
		n.start("")
	}
	leader := c.leader(60 * time.Second)
	b := newBrowser(t)
	t.Logf("cluster and browser up in %s (leader %s)", time.Since(start).Round(time.Millisecond), leader.id)

	// (5) comes first: a browser that never signed in.
	t.Run("unauthenticated browser gets no data", func(t *testing.T) { testNoData(t, c, b, leader) })

	tab := b.tab(t, false)
	signIn(t, tab, leader.console, opsToken)
	t.Run("cluster page: 3 nodes, one leader", func(t *testing.T) { testClusterPage(t, c, b, tab, leader) })
	var txids []string
	t.Run("workload appears in the transaction list", func(t *testing.T) { txids = testTransactions(t, c, tab, leader) })
	t.Run("charts from the coordinator's figures", func(t *testing.T) { testCharts(t, tab, leader) })
	var stuck string
	var newLeader *node
	t.Run("in doubt: failpoint, participant cut", func(t *testing.T) { stuck, newLeader = testInDoubt(t, c, b, leader) })
	if stuck == "" {
		return
	}
	t.Run("apply the plan, audited", func(t *testing.T) { testApply(t, c, b, newLeader, stuck) })
	_ = txids
	t.Logf("TestConsole took %s", time.Since(start).Round(time.Millisecond))
}

// testNoData: pages answer 401 with the sign-in form and nothing else;
// fragments and JSON answer 401 with no data, in the browser and outside
// it; a client without admin rights is refused after signing in.
func testNoData(t *testing.T, c *cluster, b *browser, leader *node) {
	tab := b.tab(t, true)
	secrets := []string{c.id, leader.addr, "LEADER", "Leader", "n1", "n2", "n3"}
	noSecrets := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q to a browser that did not sign in:\n%s", where, s, text)
			}
		}
	}
	for _, p := range []string{"/cluster", "/transactions", "/in-doubt", "/audit", "/charts", "/in-doubt/apply", "/transactions/0190a1b2c3d4e5f60718"} {
		if code := open(t, tab, leader.console+p); code != http.StatusUnauthorized {
			t.Errorf("GET %s without signing in: status %d, want 401", p, code)
		}
		waitJS(t, tab, 20*time.Second, "sign-in form on "+p, `!!document.querySelector('#login-form #token')`)
		noSecrets("page "+p, eval[string](t, tab, "document.documentElement.outerHTML"))
	}
	screenshot(t, tab, "login")
	// The browser's own requests to the live endpoints (what the page
	// script would fetch) and a POST of the apply form.
	type answer struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	for _, p := range []string{"/fragment/cluster", "/fragment/transactions", "/fragment/in-doubt", "/fragment/audit", "/fragment/charts",
		"/api/cluster", "/api/transactions", "/api/in-doubt", "/api/audit", "/api/charts", "/api/transactions/0190a1b2c3d4e5f60718"} {
		a := eval[answer](t, tab, fmt.Sprintf(`fetch(%q, {credentials: 'same-origin'}).then(async r => ({status: r.status, body: await r.text()}))`, p))
		if a.Status != http.StatusUnauthorized {
			t.Errorf("browser fetch %s: status %d, want 401: %s", p, a.Status, a.Body)
		}
		noSecrets("browser fetch "+p, a.Body)
	}
	a := eval[answer](t, tab, `fetch('/in-doubt/apply', {method: 'POST', credentials: 'same-origin', body: new URLSearchParams({confirm: 'yes', plan: 'x', csrf: 'x'})}).then(async r => ({status: r.status, body: await r.text()}))`)
	if a.Status != http.StatusUnauthorized || strings.Contains(a.Body, "Recovery pass applied") {
		t.Errorf("POST /in-doubt/apply without signing in: status %d, want 401:\n%s", a.Status, a.Body)
	}
	// Outside the browser: no cookie, a forged cookie, a bearer header
	// (the console takes tokens only through its sign-in form).
	u, _ := url.Parse(leader.console)
	for _, hdr := range []map[string]string{{}, {"Cookie": "txcoord_console_" + u.Port() + "=forged"}, {"Authorization": "Bearer " + opsToken}} {
		for _, p := range []string{"/api/cluster", "/fragment/cluster", "/cluster", "/api/in-doubt"} {
			req, _ := http.NewRequest(http.MethodGet, leader.console+p, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %v: status %d, want 401", p, hdr, resp.StatusCode)
			}
			noSecrets("GET "+p, string(body))
		}
	}
	// A client that may not call the Admin service: refused at sign-in.
	signIn(t, tab, leader.console, appToken)
	waitJS(t, tab, 20*time.Second, "app is refused", `(document.querySelector('#login-reason') || {}).innerText?.includes('may not use the console') === true`)
	noSecrets("sign-in as app", eval[string](t, tab, "document.documentElement.outerHTML"))
	if code := open(t, tab, leader.console+"/cluster"); code != http.StatusUnauthorized {
		t.Errorf("after app's refused sign-in, /cluster: status %d, want 401", code)
	}
	// A wrong token.
	signIn(t, tab, leader.console, "not-a-token-of-anyone-at-all")
	waitJS(t, tab, 20*time.Second, "unknown token refused", `(document.querySelector('#login-reason') || {}).innerText?.includes('unknown token') === true`)
}

type memberRow struct {
	Node  string   `json:"node"`
	Role  string   `json:"role"`
	Cells []string `json:"cells"`
}

const membersJS = `Array.from(document.querySelectorAll('#members tbody tr')).map(tr => ({node: tr.dataset.node, role: tr.dataset.role, cells: Array.from(tr.cells).map(c => c.innerText.trim())}))`

func testClusterPage(t *testing.T, c *cluster, b *browser, tab context.Context, leader *node) {
	if code := open(t, tab, leader.console+"/cluster"); code != http.StatusOK {
		t.Fatalf("GET /cluster signed in: status %d", code)
	}
	// Healthy once every member answered for itself (the live part
	// refreshes every 2 s; no reload).
	waitJS(t, tab, 30*time.Second, "cluster healthy", `(document.querySelector('#health') || {}).innerText?.startsWith('Healthy') === true`)
	rows := eval[[]memberRow](t, tab, membersJS)
	if len(rows) != 3 {
		t.Fatalf("members table: want 3 rows, got %d: %v", len(rows), rows)
	}
	leaders := 0
	for _, r := range rows {
		// Node, Role, Suffrage, State, Health, Ready, Term, Commit, Applied, ...
		if len(r.Cells) < 10 {
			t.Fatalf("member %s: want every column, got %v", r.Node, r.Cells)
		}
		if r.Role == "LEADER" {
			leaders++
			if r.Node != leader.id || r.Cells[3] != "Leader" || r.Cells[5] != "yes" {
				t.Errorf("leader row: want %s, state Leader, ready yes; got %v", leader.id, r.Cells)
			}
		} else if r.Cells[3] != "Follower" {
			t.Errorf("member %s: want state Follower, got %v", r.Node, r.Cells)
		}
		if r.Cells[4] != "ok" {
			t.Errorf("member %s: health %q, want ok", r.Node, r.Cells[4])
		}
		if r.Cells[6] == "" || r.Cells[6] == "0" || r.Cells[8] == "" || r.Cells[8] == "0" {
			t.Errorf("member %s: want a term and an applied index, got %v", r.Node, r.Cells)
		}
	}
	if leaders != 1 {
		t.Errorf("want exactly one leader row, got %d: %v", leaders, rows)
	}
	if got := eval[string](t, tab, `document.querySelector('#leader').innerText`); got != leader.id {
		t.Errorf("leader shown %q, want %s", got, leader.id)
	}
	screenshot(t, tab, "cluster")

	// A follower's console: the same cluster (it asks every member too);
	// transactions are the leader's, and it says where that is.
	var follower *node
	for _, n := range c.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ftab := b.tab(t, false)
	signIn(t, ftab, follower.console, opsToken)
	open(t, ftab, follower.console+"/cluster")
	waitJS(t, ftab, 30*time.Second, "follower's view healthy", `(document.querySelector('#health') || {}).innerText?.startsWith('Healthy') === true`)
	if got := eval[string](t, ftab, `document.querySelector('#leader').innerText`); got != leader.id {
		t.Errorf("follower's console: leader %q, want %s", got, leader.id)
	}
	open(t, ftab, follower.console+"/transactions")
	if msg := eval[string](t, ftab, `document.querySelector('main').innerText`); !strings.Contains(msg, "not the leader; the leader is "+leader.id) {
		t.Errorf("follower's transactions page: want it to name the leader, got:\n%s", msg)
	}
}

type txRow struct {
	TxID  string   `json:"txid"`
	Cells []string `json:"cells"`
}

const txRowsJS = `Array.from(document.querySelectorAll('#transactions tbody tr[data-txid]')).map(tr => ({txid: tr.dataset.txid, cells: Array.from(tr.cells).map(c => c.innerText.trim())}))`

func testTransactions(t *testing.T, c *cluster, tab context.Context, leader *node) []string {
	pgPool(t)
	run := fmt.Sprintf("w%d", time.Now().UnixNano()%1_000_000)
	var txids []string
	for i := range 12 {
		labels := map[string]string{"workload": run, "order": fmt.Sprint(i)}
		tx, err := writeBoth(context.Background(), t, c.app, labels, fmt.Sprintf("%s-%d", run, i), "v")
		if err != nil {
			t.Fatalf("workload transaction %d: %v", i, err)
		}
		txids = append(txids, tx.ID())
	}
	open(t, tab, leader.console+"/transactions?label=workload%3D"+run)
	// Phase two may still be running on the last ones when Commit returns:
	// the live list shows them committed on both participants within a
	// refresh or two.
	ids, _ := json.Marshal(txids)
	waitJS(t, tab, 30*time.Second, "every workload transaction listed, committed on both participants", fmt.Sprintf(
		`%s.every(id => { const tr = document.querySelector('#transactions tr[data-txid="' + id + '"]'); return tr && tr.cells[5].innerText.includes('pg:COMMITTED') && tr.cells[5].innerText.includes('surreal:COMMITTED'); })`, ids))
	rows := eval[[]txRow](t, tab, txRowsJS)
	got := map[string][]string{}
	for _, r := range rows {
		got[r.TxID] = r.Cells
	}
	for _, id := range txids {
		cells, ok := got[id]
		if !ok {
			t.Errorf("transaction %s of the workload is not in the list: %v", id, rows)
			continue
		}
		// Transaction, Age, State, Outcome, Flags, Branches, Labels, Error
		if cells[2] != "COMMITTED" || cells[3] != "COMMITTED" || !strings.Contains(cells[5], "pg:COMMITTED") || !strings.Contains(cells[5], "surreal:COMMITTED") ||
			!strings.Contains(cells[6], "workload="+run) {
			t.Errorf("transaction %s: want COMMITTED on pg and surreal with its label, got %v", id, cells)
		}
	}
	if len(rows) != len(txids) {
		t.Errorf("label filter: want exactly the %d workload transactions, got %d", len(txids), len(rows))
	}
	// Live: a transaction committed after the page loaded appears without
	// a reload.
	tx, err := writeBoth(context.Background(), t, c.app, map[string]string{"workload": run, "order": "late"}, run+"-late", "v")
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, 30*time.Second, "late transaction appears live", fmt.Sprintf(`!!document.querySelector('#transactions tr[data-txid=%q]')`, tx.ID()))
	txids = append(txids, tx.ID())
	// Filters: state and participant keep them, a state they are not in drops them.
	open(t, tab, leader.console+"/transactions?state=COMMITTED&participant=surreal&label=workload%3D"+run)
	waitJS(t, tab, 30*time.Second, "state=COMMITTED participant=surreal lists the workload",
		fmt.Sprintf(`document.querySelectorAll('#transactions tbody tr[data-txid]').length === %d`, len(txids)))
	open(t, tab, leader.console+"/transactions?state=ABORTED&label=workload%3D"+run)
	if n := len(eval[[]txRow](t, tab, txRowsJS)); n != 0 {
		t.Errorf("state=ABORTED: want no rows, got %d", n)
	}
	// A filter that cannot be used is named, with the form still there.
	open(t, tab, leader.console+"/transactions?min_age=soon")
	if msg := eval[string](t, tab, `(document.querySelector('#filter-error') || {}).innerText || ''`); !strings.Contains(msg, `age "soon"`) ||
		!eval[bool](t, tab, `!!document.querySelector('#f-age')`) {
		t.Errorf("bad age filter: want the error naming it above the form, got %q", msg)
	}
	// The filter form, as a user fills it in.
	open(t, tab, leader.console+"/transactions")
	do(t, tab, 20*time.Second, "filter by label with the form",
		chromedp.SendKeys(chromedp.CSS("#f-label"), "workload="+run),
		chromedp.Click(chromedp.CSS(".filters button[type=submit]")),
	)
	waitJS(t, tab, 20*time.Second, "filtered list", fmt.Sprintf(`location.search.includes('label=') && document.readyState === 'complete' && document.querySelector('#f-label').value === %q && document.querySelectorAll('#transactions tbody tr[data-txid]').length === %d`, "workload="+run, len(txids)))
	screenshot(t, tab, "transactions")

	// Detail: the timeline of phases, each branch's vote and state.
	open(t, tab, leader.console+"/transactions/"+txids[0])
	text := eval[string](t, tab, `document.querySelector('main').innerText`)
	for _, want := range []string{"COMMITTED", "BEGIN", "BRANCH_OPENED", "COMMIT_REQUESTED", "VOTE", "DECISION", "COMMIT logged at raft index", "workload=" + run} {
		if !strings.Contains(text, want) {
			t.Errorf("transaction page lacks %q:\n%s", want, text)
		}
	}
	type branchRow struct {
		P     string   `json:"p"`
		Cells []string `json:"cells"`
	}
	brs := eval[[]branchRow](t, tab, `Array.from(document.querySelectorAll('#branches tbody tr')).map(tr => ({p: tr.dataset.participant, cells: Array.from(tr.cells).map(c => c.innerText.trim())}))`)
	if len(brs) != 2 {
		t.Fatalf("branches: want pg and surreal, got %v", brs)
	}
	for _, br := range brs {
		if br.Cells[1] != "YES" || br.Cells[2] != "COMMITTED" {
			t.Errorf("branch %s: want vote YES, state COMMITTED; got %v", br.P, br.Cells)
		}
	}
	phases := eval[[]string](t, tab, `Array.from(document.querySelectorAll('#phases tbody th')).map(th => th.innerText.trim())`)
	if strings.Join(phases, "|") != "active (statements)|prepare and decision|phase two" {
		t.Errorf("phases: want active, prepare and decision, phase two; got %v", phases)
	}
	screenshot(t, tab, "transaction")
	return txids
}

func testCharts(t *testing.T, tab context.Context, leader *node) {
	open(t, tab, leader.console+"/charts")
	// The workload ran within the ring's 5 minutes: the throughput chart
	// has a line with a point above zero, the latency chart a p50.
	waitJS(t, tab, 30*time.Second, "charts drawn", `document.querySelectorAll('svg.chart').length === 3 && document.querySelectorAll('#chart-throughput polyline').length >= 1`)
	peak := eval[float64](t, tab, `Math.min(...Array.from(document.querySelectorAll('#chart-throughput polyline.s1')).flatMap(p => p.getAttribute('points').split(' ').map(xy => parseFloat(xy.split(',')[1]))))`)
	if peak >= 146 { // the x axis is at y=146 (chartH - padB): a rate above 0 is higher up
		t.Errorf("throughput: committed/s never above zero (lowest y %v)", peak)
	}
	legend := eval[string](t, tab, `document.querySelector('#chart-latency .legend').innerText`)
	if !regexp.MustCompile(`p50: [0-9.]+ ms; p99: [0-9.]+ ms`).MatchString(legend) {
		t.Errorf("latency: want a p50 and p99 in ms in the last 5 minutes, got legend %q", legend)
	}
	if n := eval[int](t, tab, `document.querySelectorAll('#chart-latency polyline, #chart-latency circle').length`); n == 0 {
		t.Errorf("latency chart: no line drawn")
	}
	screenshot(t, tab, "charts")
}

type planRow struct {
	TxID   string   `json:"txid"`
	P      string   `json:"p"`
	Action string   `json:"action"`
	Cells  []string `json:"cells"`
}

func rowsJS(table string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll('%s tbody tr[data-participant]')).map(tr => ({txid: tr.dataset.txid || '', p: tr.dataset.participant, action: tr.dataset.action || '', cells: Array.from(tr.cells).map(c => c.innerText.trim())}))`, table)
}

// testInDoubt leaves a transaction in doubt: a node armed with the
// after-decision failpoint leads, the other nodes' PostgreSQL proxies are
// cut, a transaction commits into the kill. The next leader cannot reach
// PostgreSQL, so the logged COMMIT stays undone there: the in-doubt page of
// the new leader's console shows it with WILL_COMMIT.
func testInDoubt(t *testing.T, c *cluster, b *browser, leader *node) (string, *node) {
	var armed *node
	for _, n := range c.nodes {
		if n != leader {
			armed = n
			break
		}
	}
	armed.stop()
	armed.start("after-decision")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	eventually(t, 30*time.Second, "leadership to "+armed.id, func() bool {
		id, err := c.admin.TransferLeadership(ctx, armed.id)
		return err == nil && id == armed.id
	})
	if l := c.leader(30 * time.Second); l != armed {
		t.Fatalf("want %s leading, got %s", armed.id, l.id)
	}
	var others []*node
	for _, n := range c.nodes {
		if n != armed {
			others = append(others, n)
			n.pg.Cut()
		}
	}
	key := fmt.Sprintf("stuck-%d", time.Now().UnixNano())
	tx, err := writeBoth(ctx, t, c.app, map[string]string{"workload": "in-doubt"}, key, "v")
	armed.waitKilled(20 * time.Second)
	if err == nil {
		t.Fatalf("commit through the after-decision kill returned success")
	}
	t.Logf("commit through the kill: %v", err)
	txid := tx.ID()
	newLeader := c.leader(60 * time.Second)

	tab := b.tab(t, false) // same cookies: still signed in?
	open(t, tab, newLeader.console+"/in-doubt")
	if eval[bool](t, tab, `!!document.querySelector('#login-form')`) {
		signIn(t, tab, newLeader.console, opsToken) // each node has its own sessions
		open(t, tab, newLeader.console+"/in-doubt")
	}
	waitJS(t, tab, 20*time.Second, "undone decision listed", fmt.Sprintf(`!!document.querySelector('#undone tr[data-txid=%q]')`, txid))
	undone := eval[string](t, tab, fmt.Sprintf(`document.querySelector('#undone tr[data-txid=%q]').innerText`, txid))
	if !strings.Contains(undone, "\tCOMMIT\t") {
		t.Errorf("undone decision: want COMMIT, got %q", undone)
	}
	plan := eval[[]planRow](t, tab, rowsJS("#plan"))
	var pgAction *planRow
	for i, r := range plan {
		if r.TxID == txid && r.P == "pg" {
			pgAction = &plan[i]
		}
	}
	if pgAction == nil || pgAction.Action != "WILL_COMMIT" || !strings.Contains(pgAction.Cells[4], "the log says COMMIT (raft index") {
		t.Fatalf("plan: want pg WILL_COMMIT because the log says COMMIT, got %v", plan)
	}
	unreach := eval[[]planRow](t, tab, rowsJS("#unreachable"))
	if len(unreach) != 1 || unreach[0].P != "pg" {
		t.Errorf("unreachable: want pg only, got %v", unreach)
	}
	summary := eval[string](t, tab, `document.querySelector('#in-doubt-summary').innerText`)
	if !strings.Contains(summary, "1 undone decisions") || !strings.Contains(summary, "1 unreachable participants") {
		t.Errorf("summary: %q", summary)
	}
	screenshot(t, tab, "in-doubt")
	for _, n := range others {
		n.pg.Heal()
	}
	return txid, newLeader
}

// testApply: PostgreSQL is back; the in-doubt page lists its prepared
// branch; the plan is applied through the confirmation page; the
// transaction is committed everywhere and the audit page shows the pass.
func testApply(t *testing.T, c *cluster, b *browser, leader *node, txid string) {
	tab := b.tab(t, false)
	open(t, tab, leader.console+"/in-doubt")
	if eval[bool](t, tab, `!!document.querySelector('#login-form')`) {
		signIn(t, tab, leader.console, opsToken)
		open(t, tab, leader.console+"/in-doubt")
	}
	// Live refresh (5 s) shows the branch once PostgreSQL answers again.
	waitJS(t, tab, 30*time.Second, "pg branch listed as prepared", fmt.Sprintf(`!!document.querySelector('#branches tr[data-txid=%q][data-participant="pg"][data-action="WILL_COMMIT"]') && !!document.querySelector('#unreachable-none')`, txid))

	do(t, tab, 20*time.Second, "review the plan", chromedp.Click(chromedp.CSS("#review-apply")), chromedp.WaitVisible(chromedp.CSS("#apply-form")))
	plan := eval[[]planRow](t, tab, rowsJS("#plan"))
	found := false
	for _, r := range plan {
		found = found || (r.TxID == txid && r.P == "pg" && r.Action == "WILL_COMMIT")
	}
	if !found {
		t.Fatalf("confirmation page: want pg WILL_COMMIT for %s, got %v", txid, plan)
	}
	screenshot(t, tab, "apply-review")
	// Without ticking the box the browser does not submit (required).
	do(t, tab, 10*time.Second, "apply unconfirmed", chromedp.Click(chromedp.CSS("#apply")))
	time.Sleep(300 * time.Millisecond)
	if !eval[bool](t, tab, `!!document.querySelector('#apply-form') && !document.querySelector('#apply-result')`) {
		t.Fatal("the plan was applied without ticking the confirmation box")
	}
	// A POST without the CSRF token is refused and applies nothing.
	type answer struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	a := eval[answer](t, tab, `fetch('/in-doubt/apply', {method: 'POST', credentials: 'same-origin', body: new URLSearchParams({confirm: 'yes', plan: document.querySelector('input[name=plan]').value})}).then(async r => ({status: r.status, body: await r.text()}))`)
	if a.Status != http.StatusForbidden || !strings.Contains(a.Body, "CSRF") {
		t.Errorf("apply without CSRF token: status %d, want 403 naming CSRF", a.Status)
	}
	do(t, tab, 60*time.Second, "confirm and apply",
		chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#apply")),
		chromedp.WaitVisible(chromedp.CSS("#apply-result")),
	)
	result := eval[string](t, tab, `document.querySelector('#apply-result').innerText`)
	if !strings.Contains(result, "0 failed") || !strings.Contains(result, "0 participants unreachable") {
		t.Errorf("apply result: %q", result)
	}
	rows := eval[[]planRow](t, tab, rowsJS("#result"))
	ok := false
	for _, r := range rows {
		ok = ok || (r.TxID == txid && r.P == "pg" && r.Cells[3] == "ok")
	}
	if !ok {
		t.Errorf("result: want pg of %s ok, got %v", txid, rows)
	}
	screenshot(t, tab, "apply")

	// Resolved: committed, nothing of ours in doubt, the row in both stores.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tx, err := c.app.GetTransaction(ctx, txid)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Outcome != pb.Outcome_COMMITTED || tx.State != pb.TransactionState_COMMITTED_STATE {
		t.Errorf("after apply: want COMMITTED, got %v / %v", tx.Outcome, tx.State)
	}
	p := pgPool(t)
	var n int
	if err := p.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", c.gidPrefix()+"%").Scan(&n); err != nil || n != 0 {
		t.Errorf("prepared PostgreSQL branches of this cluster left: %d (%v)", n, err)
	}
	open(t, tab, leader.console+"/in-doubt")
	waitJS(t, tab, 30*time.Second, "nothing of ours in doubt", `(document.querySelector('#in-doubt-summary') || {}).innerText?.startsWith('0 branches of ours in doubt, 0 undone decisions, 0 unreachable') === true`)

	// The audit trail: the pass, by the signed-in client, chain verified.
	open(t, tab, leader.console+"/audit")
	waitJS(t, tab, 20*time.Second, "audit verified", `(document.querySelector('#audit-verify') || {}).innerText?.startsWith('Audit chain verified') === true`)
	type auditRow struct {
		Action string   `json:"action"`
		Cells  []string `json:"cells"`
	}
	entries := eval[[]auditRow](t, tab, `Array.from(document.querySelectorAll('#audit tbody tr[data-seq]')).map(tr => ({action: tr.dataset.action, cells: Array.from(tr.cells).map(c => c.innerText.trim())}))`)
	found = false
	for _, e := range entries {
		// Seq, At, Actor, Action, Transaction, Detail
		if e.Action == "RECOVER" && e.Cells[2] == "ops" && strings.Contains(e.Cells[5], "operator recovery pass:") && strings.Contains(e.Cells[5], "actions applied") {
			found = true
		}
	}
	if !found {
		t.Errorf("audit: want a RECOVER entry by ops, got %v", entries)
	}
	screenshot(t, tab, "audit")

	// JSON of the same, for scripts, signed in (cookie from the browser
	// session is not shared with Go: sign in with a jar).
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := hc.PostForm(leader.console+"/login", url.Values{"token": {opsToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = hc.Get(leader.console + "/api/audit?action=RECOVER")
	if err != nil {
		t.Fatal(err)
	}
	var aj struct {
		Verified bool             `json:"verified"`
		Entries  []map[string]any `json:"entries"`
	}
	json.NewDecoder(resp.Body).Decode(&aj)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !aj.Verified || len(aj.Entries) == 0 || aj.Entries[0]["actor"] != "ops" {
		t.Errorf("/api/audit signed in: status %d, %+v", resp.StatusCode, aj)
	}
}
