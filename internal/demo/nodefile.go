package demo

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// NodeFile is the txcoord YAML configuration the demo (and txbench --start)
// writes for its child coordinator. It mirrors the subset of node.Config the
// tools set; node.Load rejects unknown keys, so a field renamed there shows
// up as a start-up error of the child, and in this package's tests.
type NodeFile struct {
	NodeID        string            `yaml:"node_id"`
	Insecure      bool              `yaml:"insecure,omitempty"`
	ClusterID     string            `yaml:"cluster_id"`
	Listen        string            `yaml:"listen"`
	MetricsListen string            `yaml:"metrics_listen,omitempty"`
	Console       *NodeConsole      `yaml:"console,omitempty"`
	DataDir       string            `yaml:"data_dir"`
	Raft          NodeRaft          `yaml:"raft"`
	Participants  []NodeParticipant `yaml:"participants"`
	Coordinator   NodeCoordinator   `yaml:"coordinator,omitempty"`
	LogLevel      string            `yaml:"log_level,omitempty"`
}

// NodeConsole is the console section (the web console, docs/console.md).
type NodeConsole struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

// NodeRaft is the raft section. Durations are Go duration strings; empty
// means the server default.
type NodeRaft struct {
	Bind      string `yaml:"bind"`
	Bootstrap bool   `yaml:"bootstrap"`
	// Peers, the same list on every node, bootstraps a multi-node cluster.
	Peers            []NodePeer `yaml:"peers,omitempty"`
	HeartbeatTimeout string     `yaml:"heartbeat_timeout,omitempty"`
	ElectionTimeout  string     `yaml:"election_timeout,omitempty"`
}

// NodePeer is one raft.peers entry: a member's id, Raft and gRPC addresses.
type NodePeer struct {
	ID   string `yaml:"id"`
	Raft string `yaml:"raft"`
	GRPC string `yaml:"grpc"`
}

// NodeParticipant is one participants entry. Passwords are never written to
// the file: PasswordEnv names the variable the child reads.
type NodeParticipant struct {
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

// NodeCoordinator is the coordinator section; durations are Go duration
// strings ("2s"), empty means the server default.
type NodeCoordinator struct {
	DefaultTimeout   string `yaml:"default_timeout,omitempty"`
	RecoveryInterval string `yaml:"recovery_interval,omitempty"`
}

// Stores names the databases a generated configuration points at. The
// values come from scripts/pg.sh env and scripts/surreal.sh env.
type Stores struct {
	PGDSNA string // TXCOORD_PG_DSN_A (database txcoord_a)
	PGDSNB string // TXCOORD_PG_DSN_B (database txcoord_b); optional
	// SurrealDB RPC endpoint, credentials, namespace and database.
	SurrealURL  string
	SurrealUser string
	SurrealPass string
	SurrealNS   string
	SurrealDB   string
}

// SurrealPasswordEnv is the environment variable through which a generated
// configuration passes the SurrealDB password to the child coordinator.
const SurrealPasswordEnv = "TXCOORD_SURREAL_PASS"

// PostgresParticipant is a postgres participants entry.
func PostgresParticipant(name, dsn string) NodeParticipant {
	return NodeParticipant{Name: name, Kind: "postgres", DSN: dsn}
}

// SurrealDBParticipant is a surrealdb participants entry whose password is read
// from SurrealPasswordEnv.
func SurrealDBParticipant(name string, s Stores) NodeParticipant {
	return NodeParticipant{
		Name: name, Kind: "surrealdb", URL: s.SurrealURL, Namespace: s.SurrealNS,
		Database: s.SurrealDB, Username: s.SurrealUser, PasswordEnv: SurrealPasswordEnv,
	}
}

// SingleNode is a one-node cluster bootstrapping itself.
func SingleNode(clusterID, listen, raftBind, dataDir string, parts ...NodeParticipant) NodeFile {
	return NodeFile{
		Insecure: true,
		NodeID:   "n1", ClusterID: clusterID, Listen: listen, DataDir: dataDir,
		Raft:         NodeRaft{Bind: raftBind, Bootstrap: true},
		Participants: parts,
		LogLevel:     "info",
	}
}

// ClusterNode is member self (an index into peers) of a cluster that
// bootstraps with peers: every node's file lists the same peers, and each has
// its own node_id, addresses and data_dir.
func ClusterNode(clusterID string, peers []NodePeer, self int, dataDir string, parts ...NodeParticipant) NodeFile {
	p := peers[self]
	return NodeFile{
		Insecure: true,
		NodeID:   p.ID, ClusterID: clusterID, Listen: p.GRPC, DataDir: dataDir,
		Raft:         NodeRaft{Bind: p.Raft, Bootstrap: true, Peers: peers},
		Participants: parts,
		LogLevel:     "info",
	}
}

// Marshal renders the file.
func (f NodeFile) Marshal() ([]byte, error) {
	body, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("render txcoord config: %w", err)
	}
	head := "# Written by txdemo/txbench at every run; edits are overwritten.\n"
	return append([]byte(head), body...), nil
}

// Write renders the file to path (mode 0600; the directory is created).
func (f NodeFile) Write(path string) error {
	b, err := f.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write txcoord config: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write txcoord config: %w", err)
	}
	return nil
}
