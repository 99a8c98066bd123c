package coordinator

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/wal"
)

// A data directory stamped by one cluster does not start under another
// cluster id: its decisions are about the other cluster's GIDs.
func TestOpenRaftRefusesAnotherClustersDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := RaftConfig{NodeID: "n1", ClusterID: "alpha", BindAddr: addr, DataDir: dir, Bootstrap: true,
		Peers: []raft.Server{{ID: "n1", Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}}
	rn, err := OpenRaft(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	rn.Close()
	cfg.ClusterID = "beta"
	if rn, err := OpenRaft(cfg, logger); !errors.Is(err, wal.ErrOtherCluster) {
		if rn != nil {
			rn.Close()
		}
		t.Fatalf("reopen under another cluster id: want ErrOtherCluster, got %v", err)
	}
	cfg.ClusterID = "alpha"
	rn, err = OpenRaft(cfg, logger)
	if err != nil {
		t.Fatalf("reopen under its own cluster id: %v", err)
	}
	rn.Close()
}
