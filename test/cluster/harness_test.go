package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/testkit"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// clusterOpts shape a test cluster.
type clusterOpts struct {
	// voters bootstrapped together (default 3).
	voters int
	// tuned sets heartbeat and election timeouts to 500ms (raft's defaults
	// are 1s); the failover test keeps the defaults it measures against.
	tuned bool
	// heartbeat, when set, is the heartbeat and election timeout instead
	// (the leader's lease is half of it).
	heartbeat time.Duration
	// proxies routes every ordered pair's Raft link (i dials j) through its
	// own TCP proxy, so that one node can be cut off in both directions.
	// Each node's bootstrap peers list then names, for every other node, the
	// proxy of its own link to it: the Raft configuration holds the same ids
	// on every node but per-node addresses (fine while membership does not
	// change, which the partition test does not do).
	proxies bool
	// prepareTimeout overrides coordinator.prepare_timeout when set.
	prepareTimeout time.Duration
}

// cluster is a set of txcoord processes sharing a cluster id (hence a GID
// prefix no other test uses).
type cluster struct {
	t     *testing.T
	id    string
	opts  clusterOpts
	procs []*proc
	// links[from][to] is the proxy node from dials to reach node to.
	links map[string]map[string]*proxy
	admin *client.Client

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// proc is one txcoord node: its addresses, data dir and current process.
type proc struct {
	c        *cluster
	id       string
	grpc     string
	raftBind string
	dir      string
	cfgPath  string

	mu      sync.Mutex
	cur     *testkit.Process // the current process; nil before the first launch
	paused  bool
	logPath string
	logs    []string
}

// newCluster lays out the bootstrap voters (n1..nN) and their configs; it
// starts nothing. Cleanup stops every process, closes proxies and removes
// the test's rows, intents and prepared branches from both databases.
func newCluster(t *testing.T, tag string, o clusterOpts) *cluster {
	t.Helper()
	needDBs(t)
	if o.voters == 0 {
		o.voters = 3
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	c := &cluster{t: t, id: fmt.Sprintf("cl-%s-%s", tag, hex.EncodeToString(rnd[:])), opts: o,
		links: map[string]map[string]*proxy{}, conns: map[string]*grpc.ClientConn{}}
	if !validClusterID(c.id) {
		t.Fatalf("cluster id %q is not valid (tag too long?)", c.id)
	}
	s := openStores(t)
	// Registered first, so it runs last: after the processes are gone.
	t.Cleanup(func() { s.cleanup(c.id) })
	for i := 1; i <= o.voters; i++ {
		c.procs = append(c.procs, c.newProc(fmt.Sprintf("n%d", i)))
	}
	if o.proxies {
		for _, from := range c.procs {
			c.links[from.id] = map[string]*proxy{}
			for _, to := range c.procs {
				if from == to {
					continue
				}
				px, err := newProxy(to.raftBind)
				if err != nil {
					t.Fatal(err)
				}
				c.links[from.id][to.id] = px
			}
		}
	}
	for _, p := range c.procs {
		c.writeConfig(p, nil)
	}
	t.Cleanup(c.shutdown)
	return c
}

func validClusterID(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *cluster) newProc(id string) *proc {
	dir := c.t.TempDir()
	return &proc{c: c, id: id, grpc: freePort(c.t), raftBind: freePort(c.t), dir: dir,
		cfgPath: filepath.Join(dir, "txcoord.yaml")}
}

// prefix is every GID of this cluster: txc:<cluster id>:.
func (c *cluster) prefix() string { return "txc:" + c.id + ":" }

// gid is the GID of a transaction's branch on a participant.
func (c *cluster) gid(txid, participant string) string { return c.prefix() + txid + ":" + participant }

// freePort returns a loopback address nobody listens on and that was never
// returned before in this process (testkit.FreePort).
func freePort(t *testing.T) string { return testkit.FreePort(t) }

// writeConfig writes p's YAML: a bootstrap voter with the peers list (as p
// sees it: through its own proxies when opts.proxies), or, with join, a
// joining node.
func (c *cluster) writeConfig(p *proc, join []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "insecure: true\nnode_id: %s\ncluster_id: %s\nlisten: %s\ndata_dir: %s\nraft:\n  bind: %s\n",
		p.id, c.id, p.grpc, filepath.Join(p.dir, "data"), p.raftBind)
	switch {
	case c.opts.heartbeat > 0:
		fmt.Fprintf(&b, "  heartbeat_timeout: %s\n  election_timeout: %s\n", c.opts.heartbeat, c.opts.heartbeat)
	case c.opts.tuned:
		b.WriteString("  heartbeat_timeout: 500ms\n  election_timeout: 500ms\n")
	}
	if len(join) > 0 {
		b.WriteString("  bootstrap: false\n  join:\n")
		for _, a := range join {
			fmt.Fprintf(&b, "    - %s\n", a)
		}
	} else {
		b.WriteString("  bootstrap: true\n  peers:\n")
		for _, q := range c.procs[:c.opts.voters] {
			raftAddr := q.raftBind
			if c.opts.proxies && q != p {
				raftAddr = c.links[p.id][q.id].Addr()
			}
			fmt.Fprintf(&b, "    - {id: %s, raft: %q, grpc: %q}\n", q.id, raftAddr, q.grpc)
		}
	}
	b.WriteString("coordinator:\n  recovery_interval: 1s\n")
	if c.opts.prepareTimeout > 0 {
		fmt.Fprintf(&b, "  prepare_timeout: %s\n", c.opts.prepareTimeout)
	}
	fmt.Fprintf(&b, `participants:
  - {name: pg, kind: postgres, dsn: %q}
  - {name: surreal, kind: surrealdb, url: %q, namespace: %s, database: %s, username: %s, password_env: CLUSTER_SURREAL_PASS}
`, suite.DBs.PGDSN, suite.DBs.SurrealURL, suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser)
	if err := os.WriteFile(p.cfgPath, []byte(b.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// addrs lists the gRPC addresses of the given nodes (all when none given),
// comma-separated for client.Dial.
func (c *cluster) addrs(ps ...*proc) string {
	if len(ps) == 0 {
		ps = c.procs
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.grpc)
	}
	return strings.Join(out, ",")
}

// dial returns a client of the given nodes (all when none given).
func (c *cluster) dial(ps ...*proc) *client.Client {
	c.t.Helper()
	cl, err := client.Dial(context.Background(), c.addrs(ps...))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// adminClient is used for NodeStatus/StoreDigest calls to specific nodes.
func (c *cluster) adminClient() *client.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admin == nil {
		cl, err := client.Dial(context.Background(), c.procs[0].grpc)
		if err != nil {
			c.t.Fatal(err)
		}
		c.admin = cl
	}
	return c.admin
}

// rpc is a raw Coordinator client of one node (no redirects, no retries):
// for polling a specific node quickly.
func (c *cluster) rpc(addr string) pb.CoordinatorClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, ok := c.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.t.Fatal(err)
		}
		c.conns[addr] = cc
	}
	return pb.NewCoordinatorClient(cc)
}

// startAll starts every node not running (with the failpoints armed) and
// waits until each answers on gRPC.
func (c *cluster) startAll(failpoints ...string) {
	c.t.Helper()
	for _, p := range c.procs {
		if !p.running() {
			p.launch(failpoints...)
		}
	}
	for _, p := range c.procs {
		p.waitUp(30 * time.Second)
	}
}

// launch starts the process with the given failpoints armed (name=kill).
func (p *proc) launch(failpoints ...string) {
	t := p.c.t
	t.Helper()
	args := []string{"serve", "--config", p.cfgPath}
	for _, fp := range failpoints {
		args = append(args, "--failpoint", fp+"=kill")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logPath = filepath.Join(p.dir, fmt.Sprintf("txcoord-%s-%d.log", p.id, len(p.logs)+1))
	p.logs = append(p.logs, p.logPath)
	p.cur = testkit.Start(t, p.id, suite.Binary, args, []string{"CLUSTER_SURREAL_PASS=" + suite.DBs.SurrealPass}, p.logPath)
	p.paused = false
}

// current is the node's current process (nil before the first launch).
func (p *proc) current() *testkit.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// running reports whether the current process is alive.
func (p *proc) running() bool {
	cur := p.current()
	return cur != nil && cur.Running()
}

// waitUp waits until the node answers ClusterStatus (it has opened its
// participants and Raft), failing if the process exits.
func (p *proc) waitUp(bound time.Duration) {
	t := p.c.t
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		if _, err := p.status(); err == nil {
			return
		}
		if !p.running() {
			t.Fatalf("%s exited during start-up; log:\n%s", p.id, p.logTail(60))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer after %s; log:\n%s", p.id, bound, p.logTail(60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status asks this node for its view of the cluster (1 s bound: a paused or
// cut-off node must not stall the poller).
func (p *proc) status() (*client.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.c.adminClient().NodeStatus(ctx, p.grpc)
}

// digest asks this node for its decision store's digest.
func (p *proc) digest() (*pb.StoreDigestResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.c.adminClient().StoreDigest(ctx, p.grpc)
}

func (p *proc) signal(sig syscall.Signal) {
	if cur := p.current(); cur != nil && cur.Running() {
		cur.Signal(sig)
	}
}

// pause SIGSTOPs the process; resume SIGCONTs it.
func (p *proc) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	p.signal(syscall.SIGSTOP)
}

func (p *proc) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

func (p *proc) resume() {
	p.signal(syscall.SIGCONT)
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// waitExit waits for the process to end within bound and returns when it
// ended (as seen by Wait).
func (p *proc) waitExit(bound time.Duration) time.Time {
	t := p.c.t
	t.Helper()
	cur := p.current()
	select {
	case <-cur.Exited():
	case <-time.After(bound):
		t.Fatalf("%s did not exit within %s; log:\n%s", p.id, bound, p.logTail(60))
	}
	return cur.ExitedAt()
}

// killedBySIGKILL reports whether the last process died of SIGKILL.
func (p *proc) killedBySIGKILL() bool {
	cur := p.current()
	return cur != nil && cur.KilledBySIGKILL()
}

// term stops the node with SIGTERM (a clean shutdown) and waits.
func (p *proc) term(bound time.Duration) {
	p.c.t.Helper()
	if p.isPaused() {
		p.resume()
	}
	p.signal(syscall.SIGTERM)
	p.waitExit(bound)
}

// kill SIGKILLs the process group and waits.
func (p *proc) kill() {
	if cur := p.current(); cur != nil && cur.Running() {
		cur.Kill()
	}
}

// dumpStacks SIGQUITs the process (the Go runtime prints every goroutine
// and exits) and returns the goroutines whose stack contains match and a
// frame of txcoord's own packages.
func (p *proc) dumpStacks(match string) string {
	off := p.logSize()
	p.signal(syscall.SIGQUIT)
	p.waitExit(10 * time.Second)
	var out []string
	for _, g := range strings.Split(p.logSince(off), "\n\n") {
		if strings.Contains(g, match) && strings.Contains(g, "github.com/txcoord/txcoord/") {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, "\n\n")
}

// logTail returns the last n lines of the node's current log file.
func (p *proc) logTail(n int) string {
	p.mu.Lock()
	path := p.logPath
	p.mu.Unlock()
	return tailFile(path, n)
}

// logSince returns the lines of the current log after byte offset off.
func (p *proc) logSince(off int64) string {
	p.mu.Lock()
	path := p.logPath
	p.mu.Unlock()
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return ""
	}
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// logSize is the current log file's size (an offset for logSince).
func (p *proc) logSize() int64 {
	p.mu.Lock()
	path := p.logPath
	p.mu.Unlock()
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shutdown stops every process (SIGCONT first if paused; SIGTERM, then
// SIGKILL after 15 s), closes proxies and clients, and on failure prints the
// tail of every log.
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Add(1)
		go func(p *proc) {
			defer wg.Done()
			if !p.running() {
				return
			}
			p.signal(syscall.SIGCONT)
			p.signal(syscall.SIGTERM)
			select {
			case <-p.current().Exited():
			case <-time.After(15 * time.Second):
				p.kill()
			}
		}(p)
	}
	wg.Wait()
	for _, m := range c.links {
		for _, px := range m {
			px.Close()
		}
	}
	c.mu.Lock()
	for _, cc := range c.conns {
		cc.Close()
	}
	if c.admin != nil {
		c.admin.Close()
	}
	c.mu.Unlock()
	if c.t.Failed() {
		for _, p := range c.procs {
			for _, path := range p.logs {
				c.t.Logf("---- %s: last lines of %s ----\n%s", p.id, filepath.Base(path), tailFile(path, 80))
			}
		}
	}
}

// leaderAmong polls the given nodes every 20 ms until one of them is leader
// and has recovered (serves transactions), and returns it with the time it
// was first seen ready. Other nodes' views are not required to agree (a node
// cut off may still believe in an old leader).
func (c *cluster) leaderAmong(bound time.Duration, among ...*proc) (*proc, time.Time) {
	c.t.Helper()
	if len(among) == 0 {
		among = c.live()
	}
	deadline := time.Now().Add(bound)
	for {
		for _, p := range among {
			if st, err := p.status(); err == nil && st.State == "Leader" && st.Ready {
				return p, time.Now()
			}
		}
		if time.Now().After(deadline) {
			var views []string
			for _, p := range among {
				st, err := p.status()
				views = append(views, fmt.Sprintf("%s: %v %v", p.id, statusLine(st), err))
			}
			c.t.Fatalf("no ready leader among %s within %s: %s", ids(among), bound, strings.Join(views, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader waits for a ready leader among the running nodes.
// others returns the cluster's processes other than p, in order.
func (c *cluster) others(p *proc) []*proc {
	var out []*proc
	for _, q := range c.procs {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

func (c *cluster) leader() *proc {
	c.t.Helper()
	p, _ := c.leaderAmong(30*time.Second, c.live()...)
	return p
}

// live lists nodes whose process runs and is not paused.
func (c *cluster) live() []*proc {
	var out []*proc
	for _, p := range c.procs {
		if p.running() && !p.isPaused() {
			out = append(out, p)
		}
	}
	return out
}

func (c *cluster) byID(id string) *proc {
	for _, p := range c.procs {
		if p.id == id {
			return p
		}
	}
	return nil
}

func ids(ps []*proc) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.id)
	}
	return strings.Join(out, ",")
}

func statusLine(st *client.ClusterStatus) string {
	if st == nil {
		return "-"
	}
	return fmt.Sprintf("state=%s term=%d leader=%s ready=%v applied=%d commit=%d", st.State, st.Term, st.LeaderId, st.Ready,
		st.AppliedIndex, st.CommitIndex)
}

// waitCaughtUp waits until p follows leader and has applied at least the
// index the leader had applied when the wait began (under load the leader's
// index moves on; with no load this is equality).
func (c *cluster) waitCaughtUp(p, leader *proc, bound time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(bound)
	var target uint64
	for target == 0 {
		if st, err := leader.status(); err == nil {
			target = st.AppliedIndex
		} else if time.Now().After(deadline) {
			c.t.Fatalf("leader %s does not answer: %v", leader.id, err)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for {
		st, err := p.status()
		if err == nil && st.AppliedIndex >= target && st.LeaderId == leader.id {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not caught up with %s (applied %d) within %s: %s %v", p.id, leader.id, target, bound, statusLine(st), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitConverged waits until every given node's decision store has the same
// applied index and then requires the same digest (equal applied index with
// different contents is a divergence: fail at once). It returns the digest.
func (c *cluster) waitConverged(bound time.Duration, ps ...*proc) *pb.StoreDigestResponse {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(bound)
	for {
		var ds []*pb.StoreDigestResponse
		var errs []error
		for _, p := range ps {
			d, err := p.digest()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.id, err))
				continue
			}
			ds = append(ds, d)
		}
		if len(errs) == 0 {
			same := true
			for _, d := range ds[1:] {
				same = same && d.AppliedIndex == ds[0].AppliedIndex
			}
			if same {
				for _, d := range ds[1:] {
					if d.Sha256 != ds[0].Sha256 || d.Records != ds[0].Records {
						c.t.Fatalf("decision stores DIVERGE at applied index %d: %s", ds[0].AppliedIndex, digestLine(ds))
					}
				}
				c.t.Logf("decision stores identical on %s after %s: %s", ids(ps), time.Since(start).Round(time.Millisecond), digestLine(ds[:1]))
				return ds[0]
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("decision stores of %s not at one applied index within %s: %s %v", ids(ps), bound, digestLine(ds), errors.Join(errs...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func digestLine(ds []*pb.StoreDigestResponse) string {
	var out []string
	for _, d := range ds {
		sum := d.Sha256
		if len(sum) > 12 {
			sum = sum[:12]
		}
		out = append(out, fmt.Sprintf("%s@%d=%s(%d records)", d.NodeId, d.AppliedIndex, sum, d.Records))
	}
	return strings.Join(out, " ")
}

// txState asks one node directly for a transaction (no retries, 1 s).
func (c *cluster) txState(p *proc, txid string) (*pb.Transaction, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.rpc(p.grpc).GetTransaction(ctx, &pb.GetTransactionRequest{Txid: txid})
}

// requireOn checks that transaction txid is in memory on node p (it runs
// there), so that a test faulting p faults the transaction's coordinator.
func (c *cluster) requireOn(p *proc, txid string) {
	c.t.Helper()
	info, err := c.txState(p, txid)
	if err != nil || info.State != pb.TransactionState_ACTIVE && info.State != pb.TransactionState_PREPARING {
		c.t.Fatalf("transaction %s is not running on %s: %v %v", txid, p.id, info.GetState(), err)
	}
}

// firstExit waits until one of ps has exited and returns it with the time
// its exit was seen.
func (c *cluster) firstExit(bound time.Duration, ps ...*proc) (*proc, time.Time) {
	c.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		for _, p := range ps {
			if !p.running() {
				return p, p.waitExit(time.Second)
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("none of %s exited within %s", ids(ps), bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eventually(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testkit.Eventually(t, bound, what, cond)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
