package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/txcoord/txcoord/client"
)

// statusCallTimeout bounds one ClusterStatus or StoreDigest call: a node that
// does not answer within it counts as down for that poll.
const statusCallTimeout = time.Second

// pollEvery is the period of the demo's cluster polls (leader, catch-up,
// digests): short next to an election, long next to a loopback RPC.
const pollEvery = 50 * time.Millisecond

// cluster is the demo's txcoord nodes, each a Coordinator child process, and
// an admin client that asks each node for its own view (NodeStatus,
// StoreDigest: no redirects). It remembers every leader it saw, by term.
// Safe for concurrent use: the processes are started, killed and inspected
// under procMu (a Coordinator is not safe for concurrent use).
type cluster struct {
	cfg   Config
	peers []NodePeer
	admin *client.Client

	procMu sync.Mutex
	nodes  []*Coordinator

	mu      sync.Mutex
	leaders map[uint64]leaderSeen // term → the node that reported itself leader
}

// leaderSeen is the first sighting of a leader in a term.
type leaderSeen struct {
	ID string
	At time.Time
}

// newCluster writes every node's configuration, checks that the data
// directories belong to this layout, and truncates the logs. It starts nothing.
func newCluster(ctx context.Context, cfg Config) (*cluster, error) {
	peers, err := cfg.peers()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.clusterDir(), 0o755); err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	if err := checkLayout(cfg); err != nil {
		return nil, err
	}
	cl := &cluster{cfg: cfg, peers: peers, leaders: map[uint64]leaderSeen{}}
	env := ChildEnv(os.Environ(), SurrealPasswordEnv+"="+cfg.Stores.SurrealPass)
	addrs := make([]string, len(peers))
	for i, p := range peers {
		if err := os.WriteFile(cfg.logPath(i), nil, 0o644); err != nil { // a fresh log per run
			return nil, fmt.Errorf("node %s log: %w", p.ID, err)
		}
		if err := cfg.nodeFile(i).Write(cfg.configPath(i)); err != nil {
			return nil, err
		}
		cl.nodes = append(cl.nodes, &Coordinator{Binary: cfg.Txcoord, ConfigPath: cfg.configPath(i), Addr: p.GRPC,
			LogPath: cfg.logPath(i), Env: env})
		addrs[i] = p.GRPC
	}
	// A short retry policy: status polls must fail fast on a dead node.
	cl.admin, err = DialClient(ctx, strings.Join(addrs, ","),
		client.WithRetryPolicy(client.RetryPolicy{Attempts: 1, MinBackoff: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}))
	if err != nil {
		return nil, err
	}
	return cl, nil
}

// checkLayout refuses data directories bootstrapped with other members or
// addresses (Raft keeps the configuration in raft.db: they could never form
// this cluster), and records the layout for the next run.
func checkLayout(cfg Config) error {
	want := cfg.layout()
	have, err := os.ReadFile(cfg.layoutPath())
	switch {
	case err == nil && string(have) != want:
		return fmt.Errorf("%s holds Raft state of another cluster layout:\n%s\nthis run wants:\n%s"+
			"run with the same --nodes, --listen and --raft-bind, or delete %s (its decisions are lost: do it only when nothing is in doubt)",
			cfg.clusterDir(), have, want, cfg.clusterDir())
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("cluster layout: %w", err)
	}
	return os.WriteFile(cfg.layoutPath(), []byte(want), 0o644)
}

func (cl *cluster) addrs() string {
	a := make([]string, len(cl.peers))
	for i, p := range cl.peers {
		a[i] = p.GRPC
	}
	return strings.Join(a, ",")
}

func (cl *cluster) id(i int) string { return cl.peers[i].ID }

// index returns the position of node id (-1 if unknown).
func (cl *cluster) index(id string) int {
	for i, p := range cl.peers {
		if p.ID == id {
			return i
		}
	}
	return -1
}

// running lists the nodes whose process runs.
func (cl *cluster) running() []int {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	var out []int
	for i, n := range cl.nodes {
		if n.Running() {
			out = append(out, i)
		}
	}
	return out
}

// down names the nodes whose process does not run ("" if none).
func (cl *cluster) down() string {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	var out []string
	for i, n := range cl.nodes {
		if !n.Running() {
			out = append(out, cl.id(i))
		}
	}
	return strings.Join(out, ",")
}

// exited reports whether node i's process exited, and why.
func (cl *cluster) exited(i int) (bool, error) {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	n := cl.nodes[i]
	if n.Running() {
		return false, nil
	}
	return true, n.err
}

// pid is node i's current process id.
func (cl *cluster) pid(i int) int {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	return cl.nodes[i].Pid()
}

// kill SIGKILLs node i and waits until it is reaped (see Coordinator.Kill).
func (cl *cluster) kill(i int) (time.Duration, error) {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	return cl.nodes[i].Kill()
}

// logHint says which logs to read, with the last lines of each.
func (cl *cluster) logHint(nodes ...int) string {
	if len(nodes) == 0 {
		for i := range cl.nodes {
			nodes = append(nodes, i)
		}
	}
	var b strings.Builder
	for _, i := range nodes {
		fmt.Fprintf(&b, "\nread node %s's log %s; its last lines:\n%s", cl.id(i), cl.nodes[i].LogPath, LogTail(cl.nodes[i].LogPath, 12))
	}
	return b.String()
}

// start launches node i.
func (cl *cluster) start(i int) error {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	if err := cl.nodes[i].Start(); err != nil {
		return fmt.Errorf("node %s: %w", cl.id(i), err)
	}
	return nil
}

// stop stops every running node (SIGTERM, SIGKILL after grace).
func (cl *cluster) stop(grace time.Duration) error {
	cl.procMu.Lock()
	defer cl.procMu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, n := range cl.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Stop(grace); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %s: %w", cl.id(i), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cl.admin.Close()
	return errors.Join(errs...)
}

// status asks node i for its own view (bounded by statusCallTimeout) and
// records it if it says it leads.
func (cl *cluster) status(ctx context.Context, i int) (*client.ClusterStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, statusCallTimeout)
	defer cancel()
	st, err := cl.admin.NodeStatus(cctx, cl.peers[i].GRPC)
	if err != nil {
		return nil, err
	}
	if st.State == "Leader" {
		cl.mu.Lock()
		if _, ok := cl.leaders[st.Term]; !ok {
			cl.leaders[st.Term] = leaderSeen{ID: st.NodeId, At: time.Now()}
		}
		cl.mu.Unlock()
	}
	return st, nil
}

// leaderTerms returns the terms in which a node was seen leading, with the
// first sighting, sorted by term.
func (cl *cluster) leaderTerms() []termLeader {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make([]termLeader, 0, len(cl.leaders))
	for t, l := range cl.leaders {
		out = append(out, termLeader{Term: t, ID: l.ID, At: l.At})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Term < out[j].Term })
	return out
}

// termLeader is a term and the leader seen in it.
type termLeader struct {
	Term uint64
	ID   string
	At   time.Time
}

// electionsAfter counts the terms above term in which a leader was seen: the
// elections that followed a kill in that term.
func electionsAfter(seen []termLeader, term uint64) int {
	n := 0
	for _, l := range seen {
		if l.Term > term {
			n++
		}
	}
	return n
}

// waitLeader polls the nodes among until one reports itself leader in a term
// above minTerm and ready (it finished recovery and takes transactions), or
// timeout passes, or one of them exits. what names the wait in errors.
func (cl *cluster) waitLeader(ctx context.Context, among []int, minTerm uint64, timeout time.Duration, what string) (int, *client.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := map[int]string{}
	for {
		for _, i := range among {
			if gone, err := cl.exited(i); gone {
				return -1, nil, fmt.Errorf("%s: node %s exited (%v)%s", what, cl.id(i), err, cl.logHint(i))
			}
			st, err := cl.status(ctx, i)
			switch {
			case err != nil:
				last[i] = err.Error()
			case st.State == "Leader" && st.Ready && st.Term > minTerm:
				return i, st, nil
			default:
				last[i] = fmt.Sprintf("%s in term %d, leader %q, ready %v", st.State, st.Term, st.LeaderId, st.Ready)
			}
		}
		select {
		case <-ctx.Done():
			var views []string
			for _, i := range among {
				views = append(views, fmt.Sprintf("%s: %s", cl.id(i), last[i]))
			}
			return -1, nil, fmt.Errorf("%s: no node of %s leads and serves after %s (last views: %s)%s",
				what, cl.names(among), timeout, strings.Join(views, "; "), cl.logHint(among...))
		case <-time.After(pollEvery):
		}
	}
}

func (cl *cluster) names(idx []int) string {
	n := make([]string, len(idx))
	for k, i := range idx {
		n[k] = cl.id(i)
	}
	return strings.Join(n, ",")
}

// leader finds the current leader among the running nodes (it need not
// have finished recovery), bounded by timeout.
func (cl *cluster) leader(ctx context.Context, timeout time.Duration) (int, *client.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		for _, i := range cl.running() {
			if st, err := cl.status(ctx, i); err == nil && st.State == "Leader" {
				return i, st, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, nil, fmt.Errorf("no running node reports itself leader after %s%s", timeout, cl.logHint(cl.running()...))
		case <-time.After(pollEvery):
		}
	}
}

// catchUp is a restarted node's state once it had caught up.
type catchUp struct {
	Node, Leader string
	Term         uint64
	Applied      uint64 // the node's applied index then
	Target       uint64 // the leader's commit index when the node was restarted
	LeaderCommit uint64 // the leader's commit index then (transfers keep it moving)
	Took         time.Duration
}

// waitCaughtUp waits until node i, just restarted, follows a leader and has
// applied everything committed before its restart: its applied index reaches
// the leader's commit index read first (with transfers running, the leader
// moves on; chasing its latest index could take as long as the load lasts).
// Bounded by timeout.
func (cl *cluster) waitCaughtUp(ctx context.Context, i int, timeout time.Duration) (catchUp, error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	li, lst, err := cl.leader(ctx, timeout)
	if err != nil {
		return catchUp{}, fmt.Errorf("node %s rejoining: %w", cl.id(i), err)
	}
	target := lst.CommitIndex
	if li == i {
		return catchUp{Node: cl.id(i), Leader: cl.id(i), Term: lst.Term, Applied: lst.AppliedIndex, Target: target,
			LeaderCommit: target, Took: time.Since(t0)}, nil
	}
	last := "no answer yet"
	for {
		if gone, err := cl.exited(i); gone {
			return catchUp{}, fmt.Errorf("node %s exited (%v) while rejoining%s", cl.id(i), err, cl.logHint(i))
		}
		st, err := cl.status(ctx, i)
		switch {
		case err != nil:
			last = err.Error()
		case st.State == "Follower" && st.LeaderId != "" && st.AppliedIndex >= target:
			cu := catchUp{Node: cl.id(i), Leader: st.LeaderId, Term: st.Term, Applied: st.AppliedIndex, Target: target,
				Took: time.Since(t0)}
			if l := cl.index(st.LeaderId); l >= 0 {
				if lst, err := cl.status(ctx, l); err == nil {
					cu.LeaderCommit = lst.CommitIndex
				}
			}
			return cu, nil
		default:
			last = fmt.Sprintf("%s in term %d, leader %q, applied %d of %d", st.State, st.Term, st.LeaderId, st.AppliedIndex, target)
		}
		select {
		case <-ctx.Done():
			return catchUp{}, fmt.Errorf("node %s did not rejoin and catch up within %s (last: %s)%s",
				cl.id(i), timeout, last, cl.logHint(i, li))
		case <-time.After(pollEvery):
		}
	}
}

// NodeDigest is one node's StoreDigest answer.
type NodeDigest struct {
	Node    string
	Applied uint64
	SHA256  string
	Records uint64
}

// digests polls every node's StoreDigest until all report the same applied
// index (the cluster is idle: the last done marks are batched for a few
// milliseconds) or timeout passes.
func (cl *cluster) digests(ctx context.Context, timeout time.Duration) ([]NodeDigest, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []NodeDigest
	for {
		last = last[:0]
		var errs []string
		for i, p := range cl.peers {
			cctx, ccancel := context.WithTimeout(ctx, statusCallTimeout)
			d, err := cl.admin.StoreDigest(cctx, p.GRPC)
			ccancel()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", cl.id(i), err))
				continue
			}
			last = append(last, NodeDigest{Node: d.NodeId, Applied: d.AppliedIndex, SHA256: d.Sha256, Records: d.Records})
		}
		if len(errs) == 0 && sameApplied(last) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("the nodes did not reach one applied index within %s (last: %s; errors: %s)%s",
				timeout, formatDigests(last), strings.Join(errs, "; "), cl.logHint())
		case <-time.After(pollEvery):
		}
	}
}

func sameApplied(ds []NodeDigest) bool {
	for _, d := range ds {
		if d.Applied != ds[0].Applied {
			return false
		}
	}
	return len(ds) > 0
}

// digestsDiffer describes how digests taken at one applied index differ
// ("" if they are all equal).
func digestsDiffer(ds []NodeDigest) string {
	if len(ds) == 0 {
		return "no digest"
	}
	for _, d := range ds[1:] {
		if d.Applied != ds[0].Applied {
			return fmt.Sprintf("applied indexes differ: %s", formatDigests(ds))
		}
		if d.SHA256 != ds[0].SHA256 || d.Records != ds[0].Records {
			return fmt.Sprintf("decision stores differ at applied index %d: %s", ds[0].Applied, formatDigests(ds))
		}
	}
	return ""
}

func formatDigests(ds []NodeDigest) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		sum := d.SHA256
		if len(sum) > 16 {
			sum = sum[:16]
		}
		parts[i] = fmt.Sprintf("%s applied=%d records=%d sha256=%s", d.Node, d.Applied, d.Records, sum)
	}
	return strings.Join(parts, ", ")
}

// formatStatus renders a node's ClusterStatus as the demo prints it.
func formatStatus(st *client.ClusterStatus) []string {
	out := []string{fmt.Sprintf("node %s: state %s, term %d, leader %s (%s), commit %d, applied %d, last log %d, last snapshot %d, decisions %d, ready %v",
		st.NodeId, st.State, st.Term, st.LeaderId, st.LeaderGrpcAddress, st.CommitIndex, st.AppliedIndex,
		st.LastLogIndex, st.LastSnapshotIndex, st.Decisions, st.Ready)}
	for _, m := range st.Members {
		out = append(out, fmt.Sprintf("  member %-3s %-8s %-6s raft %s grpc %s", m.Id, m.Role, m.Suffrage, m.RaftAddress, m.GrpcAddress))
	}
	return out
}
