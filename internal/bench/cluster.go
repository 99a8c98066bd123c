package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
	"gopkg.in/yaml.v3"
)

// nodeFile is the txcoord configuration txbench writes for each node it
// launches (a subset of node.Config; node.Load rejects unknown keys, so a
// renamed field there fails the child's start-up loudly).
type nodeFile struct {
	NodeID       string                 `yaml:"node_id"`
	Insecure     bool                   `yaml:"insecure,omitempty"`
	ClusterID    string                 `yaml:"cluster_id"`
	Listen       string                 `yaml:"listen"`
	DataDir      string                 `yaml:"data_dir"`
	Raft         nodeRaft               `yaml:"raft"`
	Participants []demo.NodeParticipant `yaml:"participants"`
	Coordinator  nodeCoordinator        `yaml:"coordinator,omitempty"`
	LogLevel     string                 `yaml:"log_level,omitempty"`
	// MetricsListen and DebugPprof are set with --pprof (profiling a run).
	MetricsListen string `yaml:"metrics_listen,omitempty"`
	DebugPprof    bool   `yaml:"debug_pprof,omitempty"`
}

type nodeRaft struct {
	Bind      string     `yaml:"bind"`
	Bootstrap bool       `yaml:"bootstrap"`
	Peers     []nodePeer `yaml:"peers,omitempty"`
}

type nodePeer struct {
	ID   string `yaml:"id"`
	Raft string `yaml:"raft"`
	GRPC string `yaml:"grpc"`
}

type nodeCoordinator struct {
	MaxActive int `yaml:"max_active,omitempty"`
}

func (f nodeFile) write(path string) error {
	body, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("render txcoord config: %w", err)
	}
	body = append([]byte("# Written by txbench at every run; edits are overwritten.\n"), body...)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		return fmt.Errorf("write txcoord config: %w", err)
	}
	return nil
}

// cluster is the coordinator nodes txbench launched.
type cluster struct {
	nodes []*demo.Coordinator
	addrs []string // gRPC addresses, in node order
}

// addrList is the comma-separated gRPC addresses, for client.Dial.
func (cl *cluster) addrList() string { return strings.Join(cl.addrs, ",") }

// pids of the running nodes, in node order (0 for a node not running).
func (cl *cluster) pids() []int {
	out := make([]int, len(cl.nodes))
	for i, n := range cl.nodes {
		if n.Running() {
			out[i] = n.Pid()
		}
	}
	return out
}

func (cl *cluster) stop() {
	for _, n := range cl.nodes {
		n.Stop(10 * time.Second) //nolint:errcheck // best effort at exit
	}
}

// leader returns the index of the node that leads, asking each node for its
// view until one names a leader that is one of ours.
func (cl *cluster) leader(ctx context.Context, c *client.Client) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last error = errors.New("no answer yet")
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, addr := range cl.addrs {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := c.NodeStatus(sctx, addr)
			cancel()
			if err != nil {
				last = err
				continue
			}
			for i := range cl.nodes {
				if st.GetLeaderId() == fmt.Sprintf("n%d", i+1) {
					return i, nil
				}
			}
			last = fmt.Errorf("%s sees leader %q", addr, st.GetLeaderId())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1, fmt.Errorf("no leader found: %v", last)
}

// startCluster launches cfg.Nodes coordinator processes that bootstrap one
// Raft cluster (a fresh data directory each run), all on this machine, and
// waits until one of them serves.
func startCluster(ctx context.Context, cfg Config, say func(string, ...any)) (*cluster, error) {
	dir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	var peers []nodePeer
	for i := range cfg.Nodes {
		// Each run starts a fresh cluster: the node's data directory (and
		// nothing else in the work dir) is removed.
		if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("n%d", i+1))); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		peers = append(peers, nodePeer{
			ID:   fmt.Sprintf("n%d", i+1),
			GRPC: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.BasePort+i)),
			Raft: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.BasePort+100+i)),
		})
	}
	parts := []demo.NodeParticipant{demo.PostgresParticipant(cfg.PGA, cfg.Stores.PGDSNA)}
	if cfg.Stores.PGDSNB != "" {
		parts = append(parts, demo.PostgresParticipant(cfg.PGB, cfg.Stores.PGDSNB))
	}
	if cfg.Stores.SurrealURL != "" {
		parts = append(parts, demo.SurrealDBParticipant(cfg.Surreal, cfg.Stores))
	}
	for i := range parts {
		parts[i].MaxConns = cfg.MaxConns
	}
	cl := &cluster{}
	for _, p := range peers {
		f := nodeFile{
			Insecure: true,
			NodeID:   p.ID, ClusterID: "bench", Listen: p.GRPC, DataDir: filepath.Join(dir, p.ID),
			Raft:         nodeRaft{Bind: p.Raft, Bootstrap: true, Peers: peers},
			Participants: parts,
			Coordinator:  nodeCoordinator{MaxActive: cfg.MaxActive},
			LogLevel:     "warn", // the bench measures; per-transaction logging would cost
		}
		if cfg.Nodes == 1 {
			f.Raft.Peers = nil
		}
		if cfg.Pprof {
			// Node i's profiles on base-port+200+i (see Config.Pprof).
			f.MetricsListen = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.BasePort+200+len(cl.nodes)))
			f.DebugPprof = true
			say("node %s: profiles at http://%s/debug/pprof/", p.ID, f.MetricsListen)
		}
		confPath, logPath := filepath.Join(dir, p.ID+".yaml"), filepath.Join(dir, p.ID+".log")
		if err := f.write(confPath); err != nil {
			return nil, err
		}
		n := &demo.Coordinator{
			Binary: cfg.Txcoord, ConfigPath: confPath, Addr: p.GRPC, LogPath: logPath,
			Env: demo.ChildEnv(os.Environ(), demo.SurrealPasswordEnv+"="+cfg.Stores.SurrealPass),
		}
		if err := os.WriteFile(logPath, nil, 0o644); err != nil {
			return nil, fmt.Errorf("node log: %w", err)
		}
		say("starting node %s: %s serve --config %s (log %s)", p.ID, cfg.Txcoord, confPath, logPath)
		if err := n.Start(); err != nil {
			cl.stop()
			return nil, err
		}
		cl.nodes = append(cl.nodes, n)
		cl.addrs = append(cl.addrs, p.GRPC)
	}
	// One node becomes leader and serves; the others answer NOT_SERVING.
	served := make(chan error, len(cl.nodes))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, n := range cl.nodes {
		go func() {
			_, err := n.WaitHealthy(wctx, 60*time.Second)
			served <- err
		}()
	}
	var errs []error
	for range cl.nodes {
		err := <-served
		if err == nil {
			return cl, nil
		}
		errs = append(errs, err)
	}
	cl.stop()
	return nil, fmt.Errorf("no coordinator node served: %w", errors.Join(errs...))
}
