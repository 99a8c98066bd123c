package coordinator

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/wal"
)

// FSM is the Raft state machine: the wal decision store. It implements
// raft.BatchingFSM so that one bbolt transaction serves a whole batch of
// committed entries (group commit).
//
// Apply must be deterministic and produce the same result on all peers: it
// touches nothing but the store, reads no clock, and skips entries at or
// below the store's applied index, so a replay after a crash is idempotent.
type FSM struct {
	store *wal.Store
	// applied, when set, sees each batch's entries and results once they
	// are applied in the store's write transaction, before it commits
	// (see Coordinator.entryApplied).
	applied atomic.Pointer[func(entries []wal.Entry, results []wal.ApplyResult)]
}

// notifyApplied sets the function that sees applied entries before the
// store commits them; it must not touch the store or block.
func (f *FSM) notifyApplied(fn func(entries []wal.Entry, results []wal.ApplyResult)) {
	f.applied.Store(&fn)
}

// NewFSM wraps a decision store.
func NewFSM(store *wal.Store) *FSM { return &FSM{store: store} }

// Store is the underlying decision store (reads only).
func (f *FSM) Store() *wal.Store { return f.store }

// Apply applies one entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries; non-command entries (configuration,
// no-ops, barriers) only advance nothing and return nil.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	entries := make([]wal.Entry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		entries = append(entries, wal.Entry{Index: l.Index, Term: l.Term, Data: l.Data})
		pos = append(pos, i)
	}
	out := make([]interface{}, len(logs))
	if len(entries) == 0 {
		return out
	}
	var notify func([]wal.ApplyResult)
	if fn := f.applied.Load(); fn != nil {
		notify = func(results []wal.ApplyResult) { (*fn)(entries, results) }
	}
	res := f.store.ApplyBatchNotify(entries, notify)
	for j, i := range pos {
		r := res[j]
		out[i] = &r
	}
	return out
}

// Snapshot captures the store. Persist runs later, concurrently with new
// applies, so the copy may include entries past the snapshot's index; that
// is safe because the copy carries its own applied index and replaying those
// entries after a restore skips them.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{store: f.store}, nil
}

// Restore replaces the store with a snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return fmt.Errorf("fsm restore: %w", err)
	}
	return nil
}

type fsmSnapshot struct{ store *wal.Store }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.store.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
