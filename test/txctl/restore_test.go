package txctl_test

import (
	"path/filepath"
	"testing"

	"github.com/txcoord/txcoord/internal/txctl"
	"github.com/txcoord/txcoord/wal"
)

// A snapshot saved by another cluster is refused by snapshot restore, and
// the message says why: its decisions are about another cluster's GIDs.
func TestSnapshotRestoreRefusesAnotherCluster(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeOpts{})
	n.start(startOpts{})
	foreign := filepath.Join(t.TempDir(), "other.snap")
	s, err := wal.Open(foreign, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StampCluster("another-cluster"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r := txctlRun(t, n.addr, "snapshot", "restore", foreign, "--yes")
	r.contains(t, "another cluster", `"another-cluster"`)
	if r.code == txctl.ExitOK {
		t.Fatalf("a snapshot of another cluster was restored: %s", r.stdout)
	}
	txctlRun(t, n.addr, "audit", "list").want(t, txctl.ExitOK).notContains(t, "SNAPSHOT_RESTORE")
}
