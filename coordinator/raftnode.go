package coordinator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/txcoord/txcoord/wal"
)

// RaftConfig configures this node's Raft instance.
type RaftConfig struct {
	// NodeID is this node's stable Raft server id.
	NodeID string
	// ClusterID, when set, is stamped on the decision store at its first
	// open; a store stamped with another id refuses to start (a data
	// directory from another cluster).
	ClusterID string
	// BindAddr is the Raft transport address (loopback by default).
	BindAddr string
	// AdvertiseAddr is the address peers use; defaults to BindAddr.
	AdvertiseAddr string
	// DataDir holds raft.db (log and stable store), snapshots/ and decisions.db.
	DataDir string
	// Bootstrap creates a new cluster with Peers (or this node alone) when
	// the data dir holds no Raft state. Ignored when state exists.
	Bootstrap bool
	// Peers for bootstrap: id=addr pairs, this node included.
	Peers []raft.Server
	// SnapshotInterval and SnapshotThreshold: see raft.Config.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	// Stream, when set, carries the Raft transport (mutual TLS); nil means
	// plain TCP on BindAddr (loopback development).
	Stream raft.StreamLayer
	// Timeouts for the election; defaults suit a loopback cluster.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
}

// RaftNode bundles the Raft instance with its stores and FSM.
type RaftNode struct {
	Raft      *raft.Raft
	FSM       *FSM
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
}

// OpenRaft opens (bootstrapping if asked and empty) this node's Raft.
func OpenRaft(cfg RaftConfig, logger *slog.Logger) (*RaftNode, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("raft: node_id is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("raft: data_dir is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft: data_dir %s: %w", cfg.DataDir, err)
	}
	store, err := wal.Open(filepath.Join(cfg.DataDir, "decisions.db"), wal.Options{
		// The store fsyncs: raft starts applying after the newest snapshot's
		// index (NoSnapshotRestoreOnStart below), so the store must never be
		// behind it.
		NoSync: false,
	})
	if err != nil {
		return nil, err
	}
	if cfg.ClusterID != "" {
		if err := store.StampCluster(cfg.ClusterID); err != nil {
			store.Close()
			return nil, fmt.Errorf("raft: data_dir %s: %w (point data_dir at this cluster's data, or fix cluster_id)", cfg.DataDir, err)
		}
	}
	fsm := NewFSM(store)

	// The raft log store fsyncs every write (bbolt default): a decision is
	// durable on this node when raft acknowledges it.
	logStore, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft: log store: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		logStore.Close()
		store.Close()
		return nil, fmt.Errorf("raft: snapshot store: %w", err)
	}
	if err := reconcileStore(store, logStore, snaps, logger); err != nil {
		logStore.Close()
		store.Close()
		return nil, err
	}
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = cfg.BindAddr
	}
	addr, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		logStore.Close()
		store.Close()
		return nil, fmt.Errorf("raft: advertise address %q: %w", advertise, err)
	}
	// maxPool 3 connections per peer; 10 s I/O timeout bounds a stuck peer.
	var transport *raft.NetworkTransport
	if cfg.Stream != nil {
		transport = raft.NewNetworkTransportWithLogger(cfg.Stream, 3, 10*time.Second, hlog)
	} else {
		transport, err = raft.NewTCPTransportWithLogger(cfg.BindAddr, addr, 3, 10*time.Second, hlog)
	}
	if err != nil {
		logStore.Close()
		store.Close()
		return nil, fmt.Errorf("raft: transport on %s: %w", cfg.BindAddr, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.BatchApplyCh = true
	// A node removed from the cluster keeps running (as a non-member) so
	// that its in-flight calls are answered: with raft's default it would
	// shut raft down mid-apply and strand them.
	rc.ShutdownOnRemove = false
	// The decision store is durable on its own: restoring the last snapshot at
	// start would only roll it back before the log replays forward again.
	rc.NoSnapshotRestoreOnStart = true
	rc.MaxAppendEntries = 256
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
		rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logStore, logStore, snaps)
		if err != nil {
			transport.Close()
			logStore.Close()
			store.Close()
			return nil, fmt.Errorf("raft: check state: %w", err)
		}
		if !has {
			servers := cfg.Peers
			if len(servers) == 0 {
				servers = []raft.Server{{ID: rc.LocalID, Address: transport.LocalAddr()}}
			}
			if err := raft.BootstrapCluster(rc, logStore, logStore, snaps, transport, raft.Configuration{Servers: servers}); err != nil {
				transport.Close()
				logStore.Close()
				store.Close()
				return nil, fmt.Errorf("raft: bootstrap: %w", err)
			}
			logger.Info("bootstrapped raft cluster", "node", cfg.NodeID, "voters", len(servers))
		}
	}
	r, err := raft.NewRaft(rc, fsm, logStore, logStore, snaps, transport)
	if err != nil {
		transport.Close()
		logStore.Close()
		store.Close()
		return nil, fmt.Errorf("raft: start: %w", err)
	}
	return &RaftNode{Raft: r, FSM: fsm, logStore: logStore, transport: transport}, nil
}

// Close shuts raft down and closes the stores.
func (n *RaftNode) Close() error {
	err := n.Raft.Shutdown().Error()
	n.transport.Close()
	n.logStore.Close()
	n.FSM.store.Close()
	return err
}

var _ io.Closer = (*RaftNode)(nil)

// reconcileStore checks the decision store against the Raft log before Raft
// starts. Raft replays entries after its newest snapshot only, so a store
// behind that snapshot (decisions.db lost or older than the snapshot) is
// first rebuilt from the snapshot; a store ahead of the whole log belongs to
// another log and is refused, since applying this log on top of it would
// skip entries.
func reconcileStore(store *wal.Store, logs raft.LogStore, snaps raft.SnapshotStore, logger *slog.Logger) error {
	applied := store.AppliedIndex()
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft: read the log: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("raft: list snapshots: %w", err)
	}
	var snapIndex uint64
	if len(metas) > 0 {
		snapIndex = metas[0].Index // newest first
	}
	if top := max(last, snapIndex); applied > top {
		return fmt.Errorf("decision store %s is ahead of the Raft log (applied index %d > last log index %d): "+
			"it belongs to another log; restore decisions.db and raft.db from the same backup, or start this node with an empty data_dir and let it join",
			store.Path(), applied, top)
	}
	if snapIndex > applied {
		_, rc, err := snaps.Open(metas[0].ID)
		if err != nil {
			return fmt.Errorf("raft: open snapshot %s to rebuild the decision store: %w", metas[0].ID, err)
		}
		defer rc.Close()
		if err := store.Restore(rc); err != nil {
			return fmt.Errorf("rebuild the decision store from snapshot %s: %w", metas[0].ID, err)
		}
		logger.Warn("decision store was behind the newest snapshot; rebuilt from it",
			"applied_before", applied, "snapshot_index", snapIndex, "applied_now", store.AppliedIndex())
	}
	return nil
}
