package txctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/txcoord/txcoord/wal"
	bolt "go.etcd.io/bbolt"
)

// Offline reading of a node's data directory (inspect, audit --data-dir,
// snapshot validation). Files are opened read-only: bbolt takes a shared
// lock and never writes, so a stopped node's files stay byte-identical.

// storeLockWait bounds waiting for a store file's lock: a running node holds
// it exclusively, and waiting longer would not help.
const storeLockWait = time.Second

// storeFile finds the decision store: DIR/decisions.db for a data directory,
// or the file itself (a saved snapshot).
func storeFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		f := filepath.Join(path, "decisions.db")
		if _, err := os.Stat(f); err != nil {
			return "", fmt.Errorf("%s holds no decisions.db: is it a txcoord data_dir? (%w)", path, err)
		}
		return f, nil
	}
	return path, nil
}

// storeView is everything inspect shows, read in one go.
type storeView struct {
	Path    string
	Applied uint64
	Digest  string
	Records []*wal.Record
	Members map[string]string
	// Audit holds the operator entries (decision entries, one per logged
	// decision, are counted in AuditVerdict but not held).
	Audit        []wal.AuditEntry
	AuditVerdict wal.AuditVerdict
	Raft         *raftView // nil when there is no raft.db next to the store
	SizeBytes    int64
}

// raftView is what raft.db says, read-only: how far the log goes beyond
// what the decision store has applied.
type raftView struct {
	Path         string   `json:"path"`
	FirstIndex   uint64   `json:"first_index"`
	LastIndex    uint64   `json:"last_index"`
	CurrentTerm  uint64   `json:"current_term"`
	Err          string   `json:"error"`
	Unapplied    uint64   `json:"entries_after_applied"`
	SnapshotDirs []string `json:"snapshots"`
}

// readStore opens path (a data dir or a store file) read-only and reads it.
// A store that bbolt cannot read, or whose records do not decode, is an
// error naming ErrCorrupt; one locked by a running node says so.
func readStore(path string) (v *storeView, err error) {
	file, err := storeFile(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	s, err := wal.Open(file, wal.Options{ReadOnly: true, OpenTimeout: storeLockWait})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%s is locked by a running process: stop the node first, or ask the live cluster (txctl tx list, txctl audit verify)", file)
		}
		return nil, err
	}
	defer s.Close()
	// The store's readers panic on a record that does not decode (inside
	// the node that is right: its state is corrupt). Here it is a finding.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: %v", wal.ErrCorrupt, r)
		}
	}()
	v = &storeView{Path: file, SizeBytes: st.Size()}
	v.Applied, v.Digest, _, err = s.Digest()
	if err != nil {
		return nil, err
	}
	if v.Records, err = s.List(wal.Filter{}); err != nil {
		return nil, err
	}
	if v.Members, err = s.Members(); err != nil {
		return nil, err
	}
	if v.Audit, v.AuditVerdict, err = s.QueryAudit(wal.AuditQuery{Kind: wal.KindOperator}); err != nil {
		return nil, err
	}
	if fi, e := os.Stat(filepath.Join(filepath.Dir(file), "raft.db")); e == nil && !fi.IsDir() && filepath.Base(file) == "decisions.db" {
		v.Raft = readRaft(filepath.Dir(file), v.Applied)
	}
	return v, nil
}

// readRaft reads raft.db's log bounds and current term read-only (the
// bucket layout of hashicorp/raft-boltdb v2: "logs" keyed by big-endian
// index, "conf" holding "CurrentTerm").
func readRaft(dir string, applied uint64) *raftView {
	rv := &raftView{Path: filepath.Join(dir, "raft.db")}
	if snaps, err := filepath.Glob(filepath.Join(dir, "snapshots", "*")); err == nil {
		for _, s := range snaps {
			rv.SnapshotDirs = append(rv.SnapshotDirs, filepath.Base(s))
		}
		sort.Strings(rv.SnapshotDirs)
	}
	db, err := bolt.Open(rv.Path, 0o600, &bolt.Options{ReadOnly: true, Timeout: storeLockWait})
	if err != nil {
		rv.Err = err.Error()
		return rv
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("logs")); b != nil {
			c := b.Cursor()
			if k, _ := c.First(); len(k) == 8 {
				rv.FirstIndex = binary.BigEndian.Uint64(k)
			}
			if k, _ := c.Last(); len(k) == 8 {
				rv.LastIndex = binary.BigEndian.Uint64(k)
			}
		}
		if b := tx.Bucket([]byte("conf")); b != nil {
			if t := b.Get([]byte("CurrentTerm")); len(t) == 8 {
				rv.CurrentTerm = binary.BigEndian.Uint64(t)
			}
		}
		return nil
	})
	if err != nil {
		rv.Err = err.Error()
	}
	if rv.LastIndex > applied {
		rv.Unapplied = rv.LastIndex - applied
	}
	return rv
}
