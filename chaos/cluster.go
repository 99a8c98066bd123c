package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/txcoord/txcoord/client"
	"gopkg.in/yaml.v3"
)

// ClusterID is the cluster id of the run's coordinators: their GIDs start
// with GIDPrefix.
const (
	ClusterID = "chaos"
	GIDPrefix = "txc:" + ClusterID + ":"
)

// Node is one txcoord process of the run, with the proxies in front of its
// Raft port and of its participants.
type Node struct {
	ID       string
	GRPC     string            // its gRPC address (clients talk to it directly)
	RaftBind string            // where its Raft transport listens
	Raft     *Proxy            // every peer reaches it through this proxy (its advertised Raft address)
	Parts    map[string]*Proxy // participant → the proxy this node's DSN/URL points at
	dir      string
	cfgPath  string
	logPath  string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	expected bool // the runner ended this process (kill, stop)
	paused   bool
	armed    map[string]string
	starts   int
	deaths   int // exits the runner did not cause (failpoints, crashes)
	started  time.Time
	quick    int // consecutive exits within quickExit of their start
}

// quickExit: a process that exits sooner than this after its start most
// likely cannot start (configuration, a database down); its restarts back
// off.
const quickExit = 3 * time.Second

// Exit reports a process exit the runner did not cause.
type Exit struct {
	Node      *Node
	Failpoint string // the failpoint that killed it, if its log says so
	Status    string
	LogTail   string
}

// Cluster runs the txcoord processes.
type Cluster struct {
	Bin   string
	Nodes []*Node
	// OnExit is called (from a goroutine) when a process exits without the
	// runner asking.
	OnExit func(Exit)
	env    []string

	mu     sync.Mutex
	closed bool // Close ran: Start refuses, so no process outlives the run
}

// nodeFile mirrors the subset of node.Config the run writes; node.Load
// rejects unknown keys, so a renamed field fails the start loudly.
type nodeFile struct {
	NodeID      string         `yaml:"node_id"`
	Insecure    bool           `yaml:"insecure,omitempty"`
	ClusterID   string         `yaml:"cluster_id"`
	Listen      string         `yaml:"listen"`
	DataDir     string         `yaml:"data_dir"`
	LogLevel    string         `yaml:"log_level"`
	Raft        nodeRaft       `yaml:"raft"`
	Coordinator map[string]any `yaml:"coordinator"`
	Parts       []nodePart     `yaml:"participants"`
}

type nodeRaft struct {
	Bind             string     `yaml:"bind"`
	Advertise        string     `yaml:"advertise"`
	Bootstrap        bool       `yaml:"bootstrap"`
	Peers            []nodePeer `yaml:"peers"`
	HeartbeatTimeout string     `yaml:"heartbeat_timeout"`
	ElectionTimeout  string     `yaml:"election_timeout"`
}

type nodePeer struct {
	ID   string `yaml:"id"`
	Raft string `yaml:"raft"`
	GRPC string `yaml:"grpc"`
}

type nodePart struct {
	Name        string `yaml:"name"`
	Kind        string `yaml:"kind"`
	DSN         string `yaml:"dsn,omitempty"`
	URL         string `yaml:"url,omitempty"`
	Namespace   string `yaml:"namespace,omitempty"`
	Database    string `yaml:"database,omitempty"`
	Username    string `yaml:"username,omitempty"`
	PasswordEnv string `yaml:"password_env,omitempty"`
	MaxConns    int    `yaml:"max_conns,omitempty"`
}

// ClusterOptions shape the coordinators.
type ClusterOptions struct {
	Size             int
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	Coordinator      map[string]any // the coordinator section (recovery_interval: "1s"...)
	LogLevel         string
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// NewCluster lays out n nodes under dir: addresses, proxies (one in front
// of every node's Raft port; one per node and participant in front of the
// databases) and configuration files. Nothing runs yet.
func NewCluster(bin, dir string, o ClusterOptions, pgAddr, surrealAddr string) (*Cluster, error) {
	c := &Cluster{Bin: bin, env: append(os.Environ(), "CHAOS_SURREAL_PASS="+surrealPass)}
	fail := func(err error) (*Cluster, error) {
		c.Close()
		return nil, err
	}
	for i := 1; i <= o.Size; i++ {
		id := fmt.Sprintf("n%d", i)
		g, err1 := freeAddr()
		r, err2 := freeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return fail(err)
		}
		rp, err := NewProxy("raft-"+id, "127.0.0.1:0", r, RaftSource)
		if err != nil {
			return fail(err)
		}
		n := &Node{ID: id, GRPC: g, RaftBind: r, Raft: rp, Parts: map[string]*Proxy{}, dir: filepath.Join(dir, id)}
		c.Nodes = append(c.Nodes, n)
		for _, part := range []string{PartPG, PartPGB, PartSurreal} {
			target := pgAddr
			if part == PartSurreal {
				target = surrealAddr
			}
			p, err := NewProxy(id+"-"+part, "127.0.0.1:0", target, nil)
			if err != nil {
				return fail(err)
			}
			n.Parts[part] = p
		}
	}
	var peers []nodePeer
	for _, n := range c.Nodes {
		peers = append(peers, nodePeer{ID: n.ID, Raft: n.Raft.Addr(), GRPC: n.GRPC})
	}
	for _, n := range c.Nodes {
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return fail(err)
		}
		f := nodeFile{
			Insecure: true,
			NodeID:   n.ID, ClusterID: ClusterID, Listen: n.GRPC, DataDir: filepath.Join(n.dir, "data"), LogLevel: o.LogLevel,
			Raft: nodeRaft{Bind: n.RaftBind, Advertise: n.Raft.Addr(), Bootstrap: true, Peers: peers,
				HeartbeatTimeout: o.HeartbeatTimeout.String(), ElectionTimeout: o.ElectionTimeout.String()},
			Coordinator: o.Coordinator,
			Parts: []nodePart{
				{Name: PartPG, Kind: "postgres", DSN: PGDSN(n.Parts[PartPG].Addr(), "txcoord_a"), MaxConns: 16},
				{Name: PartPGB, Kind: "postgres", DSN: PGDSN(n.Parts[PartPGB].Addr(), "txcoord_b"), MaxConns: 16},
				{Name: PartSurreal, Kind: "surrealdb", URL: "ws://" + n.Parts[PartSurreal].Addr() + "/rpc",
					Namespace: surrealNS, Database: surrealDB, Username: surrealUser, PasswordEnv: "CHAOS_SURREAL_PASS", MaxConns: 16},
			},
		}
		b, err := yaml.Marshal(f)
		if err != nil {
			return fail(err)
		}
		n.cfgPath = filepath.Join(n.dir, "txcoord.yaml")
		n.logPath = filepath.Join(n.dir, "txcoord.log")
		if err := os.WriteFile(n.cfgPath, b, 0o600); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

// Addrs is every node's gRPC address, comma-separated (for client.Dial).
func (c *Cluster) Addrs() string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.GRPC)
	}
	return strings.Join(a, ",")
}

// Node returns the node with id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Proxies lists every proxy of the cluster.
func (c *Cluster) Proxies() []*Proxy {
	var out []*Proxy
	for _, n := range c.Nodes {
		out = append(out, n.Raft)
		for _, part := range sortedKeys(n.Parts) {
			out = append(out, n.Parts[part])
		}
	}
	return out
}

// Close stops every process (SIGKILL) and closes every proxy. Start fails
// after it.
func (c *Cluster) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	for _, n := range c.Nodes {
		n.Kill()
	}
	for _, p := range c.Proxies() {
		p.Close()
	}
}

// Start launches n's process with the given failpoints (name → action,
// e.g. "after-decision" → "kill@0.2"). It returns once the process runs;
// use WaitUp to wait until it answers.
func (c *Cluster) Start(n *Node, failpoints map[string]string) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("start %s: the cluster is closed", n.ID)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.exited:
		default:
			return fmt.Errorf("%s is already running (pid %d)", n.ID, n.cmd.Process.Pid)
		}
	}
	args := []string{"serve", "--config", n.cfgPath}
	names := sortedKeys(failpoints)
	for _, name := range names {
		args = append(args, "--failpoint", name+"="+failpoints[name])
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.starts++
	fmt.Fprintf(logf, "\n==== chaos: start #%d of %s at %s, failpoints %v ====\n", n.starts, n.ID, time.Now().Format(time.RFC3339Nano), failpoints)
	cmd := exec.Command(c.Bin, args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the runner, which
	// stops the nodes itself. Pdeathsig: if the runner dies, so do they.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	n.cmd, n.exited, n.expected, n.paused, n.armed = cmd, make(chan struct{}), false, false, failpoints
	n.started = time.Now()
	exited := n.exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		expected := n.expected
		if !expected {
			n.deaths++
			if time.Since(n.started) < quickExit {
				n.quick++
			} else {
				n.quick = 0
			}
		}
		close(exited)
		n.mu.Unlock()
		if !expected && c.OnExit != nil {
			logTail := n.LogTail(30)
			status := fmt.Sprint(err)
			c.OnExit(Exit{Node: n, Failpoint: failpointIn(logTail), Status: status, LogTail: logTail})
		}
	}()
	return nil
}

var failpointLogRE = regexp.MustCompile(`failpoint: killing the process"? failpoint=(\S+)`)

func failpointIn(log string) string {
	m := failpointLogRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// LogTail returns the last lines of n's log.
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return ""
	}
	return tail(string(b), lines)
}

// LogPath is where n's output goes (every start appends).
func (n *Node) LogPath() string { return n.logPath }

// Running reports whether n's process is alive (paused counts as alive).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Paused reports whether n is SIGSTOPped.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Armed returns the failpoints n's current process runs with.
func (n *Node) Armed() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.armed
}

// RestartDelay is how long to wait before starting n again after an exit
// the runner did not cause: 300 ms, doubling (up to 10 s) while it keeps
// exiting right after its start.
func (n *Node) RestartDelay() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := 300 * time.Millisecond
	for i := 0; i < n.quick && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// Deaths counts exits the runner did not cause.
func (n *Node) Deaths() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.deaths
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s never started", n.ID)
	}
	select {
	case <-n.exited:
		return fmt.Errorf("%s is not running", n.ID)
	default:
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM:
		n.expected = true
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return syscall.Kill(n.cmd.Process.Pid, sig)
}

func (n *Node) wait(d time.Duration) bool {
	n.mu.Lock()
	ch := n.exited
	n.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill SIGKILLs n (also when paused) and waits for it to be gone.
func (n *Node) Kill() {
	if n.signal(syscall.SIGKILL) == nil {
		n.wait(time.Minute)
	}
}

// Stop stops n cleanly (SIGCONT if paused, SIGTERM, SIGKILL after 10 s).
func (n *Node) Stop() {
	if n.Paused() {
		n.signal(syscall.SIGCONT)
	}
	if n.signal(syscall.SIGTERM) != nil {
		return
	}
	if !n.wait(10 * time.Second) {
		n.Kill()
	}
}

// Pause SIGSTOPs n; Resume SIGCONTs it.
func (n *Node) Pause() error  { return n.signal(syscall.SIGSTOP) }
func (n *Node) Resume() error { return n.signal(syscall.SIGCONT) }

// Status is one node's view of the cluster, or the error asking for it.
type Status struct {
	Node  *Node
	State *client.ClusterStatus
	Err   error
}

// Statuses asks every running, unpaused node for its view, in parallel,
// each bounded by timeout.
func (c *Cluster) Statuses(ctx context.Context, cl *client.Client, timeout time.Duration) []Status {
	out := make([]Status, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		out[i].Node = n
		if !n.Running() || n.Paused() {
			out[i].Err = errors.New("not running")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[i].State, out[i].Err = cl.NodeStatus(sctx, n.GRPC)
		}()
	}
	wg.Wait()
	return out
}

// Leader returns the node that leads in the highest term any node reports
// (nil if none), and that term.
func (c *Cluster) Leader(ctx context.Context, cl *client.Client) (*Node, uint64, bool) {
	var best *Node
	var term uint64
	ready := false
	for _, s := range c.Statuses(ctx, cl, time.Second) {
		if s.Err != nil || s.State == nil {
			continue
		}
		if s.State.State == "Leader" && s.State.Term >= term {
			best, term, ready = s.Node, s.State.Term, s.State.Ready
		}
	}
	return best, term, ready
}

// Followers returns the running nodes other than leader, in id order.
func (c *Cluster) Followers(leader *Node) []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
