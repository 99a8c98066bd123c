// Package demo runs the txcoord demonstration behind `make demo`: a cluster
// of txcoord child processes (3 by default, or 1), accounts in PostgreSQL and
// in SurrealDB, and concurrent transfers between them, each ONE txcoord
// transaction, while the Raft leader is SIGKILLed mid-run. The survivors
// elect a new leader, which resolves the transfers the dead one left in
// doubt; the killed node is restarted and rejoins as a follower. At the end
// the demo checks from the databases themselves that every transfer was
// all-or-nothing (the total balance is unchanged and every account equals
// its start plus its committed transfers), that nothing is left in doubt (no
// prepared PostgreSQL transaction, no SurrealDB intent with the demo's GID
// prefix), and that every node's decision store has the same digest at the
// same applied index.
//
// The package has few types: Config (and Run, the whole demo), Summary (what
// Run found), and the pieces txbench reuses to launch and check a
// coordinator: NodeFile (the YAML it writes), Coordinator (the child
// process) and SurrealConn (direct SurrealDB access).
package demo

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Config configures the demo. Start from DefaultConfig.
type Config struct {
	// Txcoord is the txcoord binary (built by `make build`).
	Txcoord string
	// WorkDir holds the generated configs, the nodes' logs and their data
	// directories; it is kept across runs (the decision store must survive
	// the coordinator, and a later run's recovery may need it). A 1-node
	// demo uses WorkDir itself, an N-node one WorkDir/clusterN.
	WorkDir string
	// Nodes is the cluster size: 1, 3 or 5.
	Nodes int
	// Listen and RaftBind are the first node's addresses (loopback); node i
	// (0-based) uses the same hosts with both ports plus i.
	Listen, RaftBind string
	// RaftHeartbeatTimeout and RaftElectionTimeout tune the nodes' Raft
	// (raft.heartbeat_timeout, raft.election_timeout); 0 keeps txcoord's
	// defaults. They bound how soon the survivors notice a dead leader.
	RaftHeartbeatTimeout, RaftElectionTimeout time.Duration
	// ClusterID goes into every GID ("txc:<cluster>:..."); the in-doubt
	// checks count only GIDs with this cluster's prefix.
	ClusterID string
	// GIDPrefix is txcoord's GID prefix (coordinator default "txc").
	GIDPrefix string
	Stores    Stores

	// Accounts per store; each starts with InitialBalance.
	Accounts       int
	InitialBalance int64
	// Transfers in total, run by Workers concurrently.
	Transfers int
	Workers   int
	// MaxAmount bounds an ordinary transfer's amount (1..MaxAmount).
	MaxAmount int64
	// OverdraftRate is the share of transfers whose amount exceeds any
	// starting balance, so they usually fail (they roll back).
	OverdraftRate float64
	// KillAt is the share of transfers done when the leader is SIGKILLed
	// (and later restarted); 0 disables the kill.
	KillAt float64
	// Seed makes the transfer plan reproducible.
	Seed int64

	// StartTimeout bounds a cluster start (until a leader serves) and, for a
	// 1-node demo, the restart after the kill.
	StartTimeout time.Duration
	// ElectionWait bounds the survivors electing a leader that serves after
	// the kill.
	ElectionWait time.Duration
	// CatchUpTimeout bounds the restarted node rejoining as a follower and
	// catching up, and the nodes reaching one applied index for the digest
	// comparison at the end.
	CatchUpTimeout time.Duration
	// StepTimeout bounds each Begin/Execute/Rollback call; CommitTimeout a Commit.
	StepTimeout, CommitTimeout time.Duration
	// TxTimeout is each transaction's server-side timeout.
	TxTimeout time.Duration
	// ResolveTimeout bounds resolving all unknown outcomes with WaitOutcome.
	ResolveTimeout time.Duration
	// SettleTimeout bounds waiting for recovery to clear prepared branches
	// and intents (at start: leftovers of an earlier run; at the end).
	SettleTimeout time.Duration
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Progress is the period of progress lines.
	Progress time.Duration

	// IntentTable is the SurrealDB adapter's intent table.
	IntentTable string
	// Out receives progress and the report.
	Out io.Writer
}

// Names of the participants, tables and records the demo uses.
const (
	PGParticipant      = "pg"
	SurrealParticipant = "surreal"
	PGTable            = "demo_accounts"
	SurrealTable       = "demo_account"
)

// DefaultIntentTable is the SurrealDB adapter's default intent table.
const DefaultIntentTable = "txc_intent"

// DefaultConfig is the `make demo` setup; Stores come from the environment
// (see StoresFromEnv).
func DefaultConfig() Config {
	return Config{
		Txcoord:  "bin/txcoord",
		WorkDir:  ".data/demo",
		Nodes:    3,
		Listen:   "127.0.0.1:7461",
		RaftBind: "127.0.0.1:7561",
		// Half of txcoord's defaults: the survivors notice the dead leader
		// within 0.5-1 s; still far above loopback round trips.
		RaftHeartbeatTimeout: 500 * time.Millisecond,
		RaftElectionTimeout:  500 * time.Millisecond,
		ClusterID:            "demo",
		GIDPrefix:            "txc",
		Accounts:             20,
		InitialBalance:       1000,
		Transfers:            400,
		Workers:              8,
		MaxAmount:            300,
		OverdraftRate:        0.1,
		KillAt:               0.4,
		Seed:                 1,
		StartTimeout:         30 * time.Second,
		ElectionWait:         15 * time.Second,
		CatchUpTimeout:       20 * time.Second,
		StepTimeout:          10 * time.Second,
		CommitTimeout:        30 * time.Second,
		TxTimeout:            20 * time.Second,
		ResolveTimeout:       30 * time.Second,
		SettleTimeout:        30 * time.Second,
		Timeout:              3 * time.Minute,
		Progress:             2 * time.Second,
		IntentTable:          DefaultIntentTable,
		Out:                  os.Stdout,
	}
}

// StoresFromEnv reads the variables scripts/pg.sh env and scripts/surreal.sh
// env print (user, password, namespace and database default to the
// development server's root/root, txcoord/test).
func StoresFromEnv(getenv func(string) string) Stores {
	get := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	return Stores{
		PGDSNA:      getenv("TXCOORD_PG_DSN_A"),
		PGDSNB:      getenv("TXCOORD_PG_DSN_B"),
		SurrealURL:  getenv("TXCOORD_SURREAL_URL"),
		SurrealUser: get("TXCOORD_SURREAL_USER", "root"),
		SurrealPass: get("TXCOORD_SURREAL_PASS", "root"),
		SurrealNS:   get("TXCOORD_SURREAL_NS", "txcoord"),
		SurrealDB:   get("TXCOORD_SURREAL_DB", "test"),
	}
}

// Surreal returns the SurrealDB connection parameters.
func (s Stores) Surreal() SurrealParams {
	return SurrealParams{URL: s.SurrealURL, User: s.SurrealUser, Pass: s.SurrealPass,
		Namespace: s.SurrealNS, Database: s.SurrealDB}
}

// Validate checks the configuration and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	hint := `start the databases (make db-up) and eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"`
	if c.Stores.PGDSNA == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_PG_DSN_A is not set: %s", hint))
	}
	if c.Stores.SurrealURL == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_SURREAL_URL is not set: %s", hint))
	}
	if c.Txcoord == "" {
		errs = append(errs, errors.New("txcoord: give the txcoord binary (make build puts it in bin/txcoord)"))
	}
	if c.WorkDir == "" {
		errs = append(errs, errors.New("work-dir is empty"))
	}
	if c.Nodes != 1 && c.Nodes != 3 && c.Nodes != 5 {
		errs = append(errs, fmt.Errorf("nodes %d: want 1, 3 or 5 (an even count tolerates no more failures than one node fewer)", c.Nodes))
	} else if _, err := c.peers(); err != nil {
		errs = append(errs, err)
	}
	if c.RaftHeartbeatTimeout < 0 || c.RaftElectionTimeout < 0 {
		errs = append(errs, fmt.Errorf("raft-heartbeat-timeout %s, raft-election-timeout %s: want >= 0 (0: txcoord's default)",
			c.RaftHeartbeatTimeout, c.RaftElectionTimeout))
	}
	if c.Accounts < 1 || c.Accounts > 10000 {
		errs = append(errs, fmt.Errorf("accounts %d: want 1..10000", c.Accounts))
	}
	if c.InitialBalance < 1 {
		errs = append(errs, fmt.Errorf("initial-balance %d: want > 0", c.InitialBalance))
	}
	if c.Transfers < 1 {
		errs = append(errs, fmt.Errorf("transfers %d: want > 0", c.Transfers))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("workers %d: want 1..256 (each holds a PostgreSQL connection in the coordinator)", c.Workers))
	}
	if c.MaxAmount < 1 {
		errs = append(errs, fmt.Errorf("max-amount %d: want > 0", c.MaxAmount))
	}
	if c.OverdraftRate < 0 || c.OverdraftRate > 1 {
		errs = append(errs, fmt.Errorf("overdraft-rate %g: want 0..1", c.OverdraftRate))
	}
	if c.KillAt < 0 || c.KillAt >= 1 {
		errs = append(errs, fmt.Errorf("kill-at %g: want 0 (no kill) or a share below 1", c.KillAt))
	}
	for name, d := range map[string]time.Duration{"start-timeout": c.StartTimeout, "election-wait": c.ElectionWait,
		"catch-up-timeout": c.CatchUpTimeout, "step-timeout": c.StepTimeout,
		"commit-timeout": c.CommitTimeout, "tx-timeout": c.TxTimeout, "resolve-timeout": c.ResolveTimeout,
		"settle-timeout": c.SettleTimeout, "timeout": c.Timeout, "progress": c.Progress} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0 (got %s)", name, d))
		}
	}
	if c.IntentTable == "" {
		errs = append(errs, errors.New("intent-table is empty: name the SurrealDB adapter's intent table"))
	}
	if c.Out == nil {
		errs = append(errs, errors.New("Out is nil"))
	}
	return errors.Join(errs...)
}

// gidPrefix is the prefix of every GID this demo's coordinator makes.
func (c Config) gidPrefix() string { return c.GIDPrefix + ":" + c.ClusterID + ":" }

// clusterDir holds the nodes' configs, logs and data directories: WorkDir
// for one node (where the single-node demo always kept them), a directory
// per cluster size otherwise, so that a 3-node run never finds the Raft
// state of a 1-node cluster (or the reverse) in its data directories.
func (c Config) clusterDir() string {
	if c.Nodes <= 1 {
		return c.WorkDir
	}
	return filepath.Join(c.WorkDir, fmt.Sprintf("cluster%d", c.Nodes))
}

func (c Config) nodeID(i int) string     { return fmt.Sprintf("n%d", i+1) }
func (c Config) configPath(i int) string { return filepath.Join(c.clusterDir(), c.nodeID(i)+".yaml") }
func (c Config) logPath(i int) string    { return filepath.Join(c.clusterDir(), c.nodeID(i)+".log") }
func (c Config) dataDir(i int) string    { return filepath.Join(c.clusterDir(), c.nodeID(i)) }
func (c Config) layoutPath() string      { return filepath.Join(c.clusterDir(), "layout") }

// peers derives every node's addresses from Listen and RaftBind: node i
// uses both ports plus i. The two port ranges must not overlap.
func (c Config) peers() ([]NodePeer, error) {
	split := func(flag, addr string) (string, int, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return "", 0, fmt.Errorf("%s %q: want host:port: %v", flag, addr, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n+c.Nodes-1 > 65535 {
			return "", 0, fmt.Errorf("%s %q: want a numeric port with room for %d consecutive ports", flag, addr, c.Nodes)
		}
		return host, n, nil
	}
	gh, gp, err := split("listen", c.Listen)
	if err != nil {
		return nil, err
	}
	rh, rp, err := split("raft-bind", c.RaftBind)
	if err != nil {
		return nil, err
	}
	if gh == rh && gp < rp+c.Nodes && rp < gp+c.Nodes {
		return nil, fmt.Errorf("listen %s and raft-bind %s: the gRPC ports %d-%d and Raft ports %d-%d of %d nodes overlap",
			c.Listen, c.RaftBind, gp, gp+c.Nodes-1, rp, rp+c.Nodes-1, c.Nodes)
	}
	out := make([]NodePeer, c.Nodes)
	for i := range out {
		out[i] = NodePeer{ID: c.nodeID(i), Raft: net.JoinHostPort(rh, strconv.Itoa(rp+i)), GRPC: net.JoinHostPort(gh, strconv.Itoa(gp+i))}
	}
	return out, nil
}

// layout describes the cluster's membership as bootstrapped: Raft keeps the
// configuration in raft.db, so a data directory bootstrapped with other
// addresses can never form this cluster.
func (c Config) layout() string {
	p, _ := c.peers()
	s := fmt.Sprintf("# Written by txdemo: the members this directory's Raft state was bootstrapped with.\nnodes %d\n", c.Nodes)
	for _, n := range p {
		s += fmt.Sprintf("%s raft=%s grpc=%s\n", n.ID, n.Raft, n.GRPC)
	}
	return s
}

// nodeFile is the configuration of node i.
func (c Config) nodeFile(i int) NodeFile {
	parts := []NodeParticipant{PostgresParticipant(PGParticipant, c.Stores.PGDSNA), SurrealDBParticipant(SurrealParticipant, c.Stores)}
	var f NodeFile
	if c.Nodes == 1 {
		f = SingleNode(c.ClusterID, c.Listen, c.RaftBind, c.dataDir(0), parts...)
	} else {
		p, _ := c.peers()
		f = ClusterNode(c.ClusterID, p, i, c.dataDir(i), parts...)
	}
	if c.RaftHeartbeatTimeout > 0 {
		f.Raft.HeartbeatTimeout = c.RaftHeartbeatTimeout.String()
	}
	if c.RaftElectionTimeout > 0 {
		f.Raft.ElectionTimeout = c.RaftElectionTimeout.String()
	}
	// Scan for in-doubt branches often: the demo waits for it after the kill.
	f.Coordinator.RecoveryInterval = "1s"
	f.MetricsListen = c.metricsAddr(i)
	if a := c.consoleAddr(i); a != "" {
		f.Console = &NodeConsole{Enabled: true, Listen: a}
	}
	return f
}

// consoleAddr is node i's web console address: the gRPC port + 300 (after
// Raft at +100 and metrics at +200), on the gRPC host.
func (c Config) consoleAddr(i int) string { return c.offsetAddr(300 + i) }

// metricsAddr is node i's /metrics address: the gRPC port + 200 (the Raft
// ports sit at +100 by default), on the gRPC host.
func (c Config) metricsAddr(i int) string { return c.offsetAddr(200 + i) }

// offsetAddr is the gRPC host with the gRPC port + off ("" if out of range).
func (c Config) offsetAddr(off int) string {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return ""
	}
	n, err := strconv.Atoi(port)
	if err != nil || n+off > 65535 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(n+off))
}
