// Package wal is the durable decision store: the state of the coordinator's
// Raft FSM, kept in bbolt.
//
// The package has few types: Store (the bbolt file), Record (what is known
// about one decided transaction), Command (a log entry's payload) and Outcome.
// A Store is changed only by ApplyBatch, which the Raft FSM calls with
// committed log entries; everything else reads.
//
// ApplyBatch is deterministic: it reads no clock, does no I/O besides its own
// bbolt file and is idempotent by Raft log index (entries at or below the
// stored applied index are skipped), so replaying the log after a crash is safe.
package wal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Outcome is a logged decision.
type Outcome uint8

const (
	OutcomeNone Outcome = iota
	OutcomeCommit
	OutcomeAbort
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCommit:
		return "COMMIT"
	case OutcomeAbort:
		return "ABORT"
	}
	return "NONE"
}

// CommandType is the kind of a log entry.
type CommandType uint8

const (
	// CmdDecide logs the decision of one transaction. The first decision for
	// a txid wins; a later, different one is refused (see ApplyResult.Conflict).
	CmdDecide CommandType = iota + 1
	// CmdDone marks transactions whose every branch acknowledged phase two.
	// With an Audit entry it is an operator's (MARK_DONE: the decision was
	// carried out or repaired by hand), and the entry is appended with it.
	CmdDone
	// CmdForget deletes done records (chosen by the leader after retention).
	CmdForget
	// CmdMember records a node's client-facing (gRPC) address, so every node
	// can send clients to the leader. An empty address removes the node.
	CmdMember
	// CmdResolve records an operator's heuristic decision (Decision, with
	// Heuristic set) and its audit entry. Without Force it never changes an
	// existing, different decision (ApplyResult.Conflict reports that).
	CmdResolve
	// CmdAudit appends an audit entry (membership changes, restores,
	// config reloads...). Decisions need none: CmdDecide appends theirs.
	CmdAudit
	// CmdAuditPrune deletes the oldest audit entries (seq below
	// AuditBefore, at most maxPrunePerEntry), keeps the last deleted one's
	// seq and hash as the chain's anchor, and appends an AUDIT_PRUNE entry
	// saying so (see audit.go).
	CmdAuditPrune
	// CmdDecideMany logs several transactions' decisions in one entry (a
	// flight of decisions, see coordinator/decide.go): each is applied as a
	// CmdDecide would be, in order, and ApplyResult.Batch holds their
	// results in the same order. Nodes of versions before it stop on it
	// (unknown command), so every node must run this version before one of
	// them leads.
	CmdDecideMany
)

// Command is the payload of one Raft log entry.
type Command struct {
	Type CommandType `json:"t"`
	// Decide: one record. The leader fills every field, including times:
	// Apply never reads a clock.
	Decision *Record `json:"d,omitempty"`
	// DecideMany: the records, in order.
	Decisions []*Record `json:"ds,omitempty"`
	// Done and Forget: the transactions concerned, and the leader's time.
	TxIDs []string `json:"x,omitempty"`
	AtMs  int64    `json:"at,omitempty"`
	// Member: node id and gRPC address.
	NodeID string `json:"n,omitempty"`
	Addr   string `json:"a,omitempty"`
	// Resolve and Audit.
	Force bool        `json:"f,omitempty"`
	Audit *AuditEntry `json:"au,omitempty"`
	// AuditPrune: entries with a lower seq are deleted.
	AuditBefore uint64 `json:"ab,omitempty"`
}

// Encode serialises a command for raft.Apply.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("wal: command must always encode: %v", err))
	}
	return b
}

// DecodeCommand parses a log entry's payload.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	return c, nil
}

// Record is what the log knows about one decided transaction.
type Record struct {
	TxID    string  `json:"id"`
	Outcome Outcome `json:"o"`
	// Participants that voted YES and must be told the outcome (their GIDs
	// are derived from the txid and the participant name).
	Participants []string `json:"p,omitempty"`
	// Receipts: participant name → the receipt its branch gave with its YES
	// vote (participants.Receipter), handed back at COMMIT PREPARED so that
	// any leader can tell a branch that already committed from one that is
	// gone. Absent for participants that give none.
	Receipts  map[string]string `json:"rc,omitempty"`
	Labels    map[string]string `json:"l,omitempty"`
	CreatedMs int64             `json:"c,omitempty"`
	DecidedMs int64             `json:"dm,omitempty"`
	// Set by Apply: the Raft term and index the decision was applied at, so
	// a driver can fence phase two by term.
	Term  uint64 `json:"term,omitempty"`
	Index uint64 `json:"idx,omitempty"`
	// Done: every branch acknowledged phase two.
	Done   bool  `json:"done,omitempty"`
	DoneMs int64 `json:"dnm,omitempty"`
	// Reason the transaction aborted, where one is known.
	Reason string `json:"r,omitempty"`
	// IdempotencyKey of a Run, indexed so a retry finds this decision.
	IdempotencyKey string `json:"k,omitempty"`
	// Heuristic: an operator set this outcome (txctl resolve).
	Heuristic bool `json:"h,omitempty"`
}

// ApplyResult is what ApplyBatch returns for one entry (raft hands it back to
// the caller of Apply through ApplyFuture.Response).
type ApplyResult struct {
	// Record is the decision now in force for a CmdDecide entry: the
	// caller's, or an earlier one that won.
	Record *Record
	// Conflict is true when an earlier, different decision won.
	Conflict bool
	Err      error
	// Batch: the result of each decision of a CmdDecideMany entry, in order.
	Batch []ApplyResult
}

// Entry is a committed log entry handed to ApplyBatch.
type Entry struct {
	Index, Term uint64
	Data        []byte
}

var (
	bucketTxns    = []byte("txns")
	bucketMeta    = []byte("meta")
	bucketMembers = []byte("members")
	// Derived indexes, kept in the same bbolt transactions as the records:
	// pending holds txids not done (recovery reads it every scan), doneIdx
	// holds doneMs‖txid (forgetting reads the oldest first). Neither is
	// part of the Digest: they follow from the records.
	bucketPending = []byte("pending")
	bucketDoneIdx = []byte("doneidx")
	bucketIdem    = []byte("idem")  // idempotency key → txid
	bucketAudit   = []byte("audit") // seq (8 bytes) → AuditEntry
	keyApplied    = []byte("applied")

	// ErrCorrupt: the store's file is not a valid decision store.
	ErrCorrupt = errors.New("decision store is corrupt")
)

// Options configure a Store.
type Options struct {
	// NoSync skips bbolt's fsync on commit. Safe only because raft replays
	// the log from the last durable applied index after a crash (the raft
	// log store always fsyncs). Default false.
	NoSync bool
	// OpenTimeout bounds waiting for the file lock held by another process.
	OpenTimeout time.Duration
	// ReadOnly opens the file without writing it (txctl inspect).
	ReadOnly bool
}

// Store is the decision store. Safe for concurrent use.
type Store struct {
	// mu guards db against Restore swapping the file under readers.
	mu   sync.RWMutex
	db   *bolt.DB
	path string
	opts Options
}

// Open opens (creating if needed) the store at path. A file that bbolt cannot
// read or that lacks the store's buckets refuses to open with ErrCorrupt.
func Open(path string, opts Options) (*Store, error) {
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, NoSync: opts.NoSync, ReadOnly: opts.ReadOnly})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open decision store %s: locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("open decision store %s: %w: %v", path, ErrCorrupt, err)
	}
	s := &Store{db: db, path: path, opts: opts}
	if opts.ReadOnly {
		if err := db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketTxns) == nil || tx.Bucket(bucketMeta) == nil {
				return fmt.Errorf("%w: missing buckets", ErrCorrupt)
			}
			return nil
		}); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketTxns); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketMembers, bucketPending, bucketDoneIdx, bucketIdem, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := m.Get(keyApplied); v != nil && len(v) != 8 {
			return fmt.Errorf("%w: applied index has %d bytes", ErrCorrupt, len(v))
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open decision store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// AppliedIndex is the last Raft index whose effects are in the store.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var idx uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return idx
}

// ApplyBatch applies committed entries in one bbolt transaction and returns
// one result per entry. Entries at or below the applied index are skipped
// (their result is empty). A malformed entry or unknown command type is a
// programmer error: it panics, because skipping it would let replicas diverge.
func (s *Store) ApplyBatch(entries []Entry) []ApplyResult {
	return s.ApplyBatchNotify(entries, nil)
}

// ApplyBatchNotify is ApplyBatch, and calls notify with the results once
// every entry is applied in the write transaction and before that
// transaction commits (the store's own fsync). notify must not touch the
// store or modify results, and should return at once: the write
// transaction stays open while it runs.
func (s *Store) ApplyBatchNotify(entries []Entry, notify func(results []ApplyResult)) []ApplyResult {
	s.mu.RLock()
	defer s.mu.RUnlock()
	results := make([]ApplyResult, len(entries))
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		applied := uint64(0)
		if v := meta.Get(keyApplied); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		chain := &auditChain{tx: tx}
		for i, e := range entries {
			if e.Index <= applied {
				continue
			}
			cmd, err := DecodeCommand(e.Data)
			if err != nil {
				panic(fmt.Sprintf("wal: undecodable committed entry at index %d: %v", e.Index, err))
			}
			switch cmd.Type {
			case CmdMember:
				results[i] = applyMember(tx.Bucket(bucketMembers), cmd)
			case CmdResolve:
				results[i] = applyResolve(tx, chain, cmd, e)
			case CmdAudit:
				if cmd.Audit == nil {
					results[i] = ApplyResult{Err: errors.New("audit: empty entry")}
				} else {
					chain.append(*cmd.Audit)
				}
			case CmdAuditPrune:
				results[i] = chain.prune(meta, cmd)
			default:
				results[i] = applyOne(tx, chain, cmd, e)
			}
			applied = e.Index
		}
		if notify != nil {
			notify(results)
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], applied)
		return meta.Put(keyApplied, b[:])
	})
	if err != nil {
		// A failing bbolt write means the disk is broken; continuing would
		// acknowledge decisions that are not stored.
		panic(fmt.Sprintf("wal: apply batch: %v", err))
	}
	return results
}

func doneKey(ms int64, id string) []byte {
	k := make([]byte, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(ms))
	copy(k[8:], id)
	return k
}

func must(err error, what string) {
	if err != nil {
		panic(fmt.Sprintf("wal: %s: %v", what, err))
	}
}

func applyOne(tx *bolt.Tx, chain *auditChain, cmd Command, e Entry) ApplyResult {
	txns, pending, doneIdx := tx.Bucket(bucketTxns), tx.Bucket(bucketPending), tx.Bucket(bucketDoneIdx)
	switch cmd.Type {
	case CmdDecide:
		return applyDecide(tx, chain, cmd.Decision, e)
	case CmdDecideMany:
		if len(cmd.Decisions) == 0 {
			return ApplyResult{Err: fmt.Errorf("decide many: no decisions")}
		}
		batch := make([]ApplyResult, len(cmd.Decisions))
		for i, d := range cmd.Decisions {
			batch[i] = applyDecide(tx, chain, d, e)
		}
		return ApplyResult{Batch: batch}
	case CmdDone:
		for _, id := range cmd.TxIDs {
			if r := get(txns, id); r != nil && !r.Done {
				r.Done, r.DoneMs = true, cmd.AtMs
				put(txns, r)
				must(pending.Delete([]byte(id)), "unindex pending")
				must(doneIdx.Put(doneKey(r.DoneMs, id), nil), "index done")
			}
		}
		if cmd.Audit != nil {
			chain.append(*cmd.Audit)
		}
		return ApplyResult{}
	case CmdForget:
		for _, id := range cmd.TxIDs {
			if r := get(txns, id); r != nil && r.Done {
				must(txns.Delete([]byte(id)), "delete "+id)
				must(doneIdx.Delete(doneKey(r.DoneMs, id)), "unindex done")
				if k := r.IdempotencyKey; k != "" && string(tx.Bucket(bucketIdem).Get([]byte(k))) == id {
					must(tx.Bucket(bucketIdem).Delete([]byte(k)), "unindex idempotency key")
				}
			}
		}
		return ApplyResult{}
	}
	panic(fmt.Sprintf("wal: unknown command type %d at index %d", cmd.Type, e.Index))
}

// applyDecide logs one decision; the first for a txid wins. Every logged
// decision is an audit entry, in the same bbolt transaction: no Raft entry
// and no fsync of its own.
func applyDecide(tx *bolt.Tx, chain *auditChain, d *Record, e Entry) ApplyResult {
	if d == nil || d.TxID == "" || (d.Outcome != OutcomeCommit && d.Outcome != OutcomeAbort) {
		return ApplyResult{Err: fmt.Errorf("decide: malformed decision")}
	}
	txns := tx.Bucket(bucketTxns)
	if prev := get(txns, d.TxID); prev != nil {
		return ApplyResult{Record: prev, Conflict: prev.Outcome != d.Outcome}
	}
	rec := *d
	rec.Term, rec.Index = e.Term, e.Index
	rec.Done, rec.DoneMs = false, 0
	put(txns, &rec)
	must(tx.Bucket(bucketPending).Put([]byte(rec.TxID), nil), "index pending")
	if rec.IdempotencyKey != "" {
		must(tx.Bucket(bucketIdem).Put([]byte(rec.IdempotencyKey), []byte(rec.TxID)), "index idempotency key")
	}
	chain.append(decisionAudit(&rec))
	return ApplyResult{Record: &rec}
}

// applyResolve: an operator's decision. A different existing decision wins
// unless Force; a forced one replaces it, is marked heuristic and not done
// (recovery drives the branches to it).
func applyResolve(tx *bolt.Tx, chain *auditChain, cmd Command, e Entry) ApplyResult {
	d := cmd.Decision
	if d == nil || d.TxID == "" || (d.Outcome != OutcomeCommit && d.Outcome != OutcomeAbort) || cmd.Audit == nil {
		return ApplyResult{Err: fmt.Errorf("resolve: malformed command")}
	}
	txns, pending := tx.Bucket(bucketTxns), tx.Bucket(bucketPending)
	prev := get(txns, d.TxID)
	if prev != nil && prev.Outcome != d.Outcome && !cmd.Force {
		return ApplyResult{Record: prev, Conflict: true}
	}
	rec := *d
	if prev != nil {
		rec = *prev
		rec.Outcome = d.Outcome
		if prev.Done {
			must(tx.Bucket(bucketDoneIdx).Delete(doneKey(prev.DoneMs, prev.TxID)), "unindex done")
		}
		for _, p := range d.Participants { // branches found since
			if !slices.Contains(rec.Participants, p) {
				rec.Participants = append(rec.Participants, p)
			}
		}
		for p, r := range d.Receipts {
			if _, ok := rec.Receipts[p]; !ok {
				if rec.Receipts == nil {
					rec.Receipts = map[string]string{}
				}
				rec.Receipts[p] = r
			}
		}
	}
	rec.Heuristic, rec.Reason = true, d.Reason
	rec.Term, rec.Index = e.Term, e.Index
	rec.Done, rec.DoneMs = false, 0
	put(txns, &rec)
	must(pending.Put([]byte(rec.TxID), nil), "index pending")
	chain.append(*cmd.Audit)
	return ApplyResult{Record: &rec, Conflict: prev != nil && prev.Outcome != d.Outcome}
}

func applyMember(b *bolt.Bucket, cmd Command) ApplyResult {
	if cmd.NodeID == "" {
		return ApplyResult{Err: fmt.Errorf("member: empty node id")}
	}
	var err error
	if cmd.Addr == "" {
		err = b.Delete([]byte(cmd.NodeID))
	} else {
		err = b.Put([]byte(cmd.NodeID), []byte(cmd.Addr))
	}
	if err != nil {
		panic(fmt.Sprintf("wal: member %s: %v", cmd.NodeID, err))
	}
	return ApplyResult{}
}

// Members returns node id → gRPC address as replicated through the log.
func (s *Store) Members() (map[string]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMembers)
		if b == nil { // a store written before members existed
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	return out, err
}

// Digest hashes the replicated content (records and members, not the
// applied index) so that replicas can be compared at equal applied indexes.
func (s *Store) Digest() (applied uint64, sum string, records int, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := sha256.New()
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		for _, name := range [][]byte{bucketTxns, bucketMembers, bucketAudit} {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			h.Write(name)
			if err := b.ForEach(func(k, v []byte) error {
				if bytes.Equal(name, bucketTxns) {
					records++
				}
				var n [4]byte
				binary.BigEndian.PutUint32(n[:], uint32(len(k)))
				h.Write(n[:])
				h.Write(k)
				binary.BigEndian.PutUint32(n[:], uint32(len(v)))
				h.Write(n[:])
				h.Write(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return applied, hex.EncodeToString(h.Sum(nil)), records, err
}

func get(txns *bolt.Bucket, id string) *Record {
	v := txns.Get([]byte(id))
	if v == nil {
		return nil
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		panic(fmt.Sprintf("wal: corrupt record %q: %v", id, err))
	}
	return &r
}

func put(txns *bolt.Bucket, r *Record) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("wal: record must encode: %v", err))
	}
	// Keys are whole txids (exact match, never prefix scans), so ids of
	// different lengths cannot shadow each other.
	if err := txns.Put([]byte(r.TxID), b); err != nil {
		panic(fmt.Sprintf("wal: put %s: %v", r.TxID, err))
	}
}

// Get returns the record of txid, or nil if the log has none.
func (s *Store) Get(txid string) (*Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		r = get(tx.Bucket(bucketTxns), txid)
		return nil
	})
	return r, err
}

// ByIdempotencyKey returns the decision logged for a Run's idempotency key,
// or nil.
func (s *Store) ByIdempotencyKey(key string) (*Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdem)
		if b == nil {
			return nil
		}
		if id := b.Get([]byte(key)); id != nil {
			r = get(tx.Bucket(bucketTxns), string(id))
		}
		return nil
	})
	return r, err
}

// Filter selects records in List.
type Filter struct {
	// NotDone: only records whose phase two is not finished.
	NotDone bool
	// DoneBeforeMs: only done records finished before this time (for forgetting).
	DoneBeforeMs int64
	Limit        int
}

// List returns records matching f, ordered by txid.
func (s *Store) List(f Filter) ([]*Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Record
	err := s.db.View(func(tx *bolt.Tx) error {
		txns := tx.Bucket(bucketTxns)
		// The indexes answer the two frequent questions without a full scan.
		if f.NotDone && f.DoneBeforeMs == 0 {
			return tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
				if f.Limit > 0 && len(out) >= f.Limit {
					return nil
				}
				if r := get(txns, string(k)); r != nil {
					out = append(out, r)
				}
				return nil
			})
		}
		if f.DoneBeforeMs != 0 && !f.NotDone {
			c := tx.Bucket(bucketDoneIdx).Cursor()
			for k, _ := c.First(); k != nil && len(k) > 8; k, _ = c.Next() {
				if int64(binary.BigEndian.Uint64(k[:8])) >= f.DoneBeforeMs || (f.Limit > 0 && len(out) >= f.Limit) {
					break
				}
				if r := get(txns, string(k[8:])); r != nil {
					out = append(out, r)
				}
			}
			return nil
		}
		return txns.ForEach(func(k, v []byte) error {
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: record %q: %v", ErrCorrupt, k, err)
			}
			if f.NotDone && r.Done {
				return nil
			}
			if f.DoneBeforeMs != 0 && (!r.Done || r.DoneMs >= f.DoneBeforeMs) {
				return nil
			}
			out = append(out, &r)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].TxID < out[j].TxID })
	return out, err
}

// WriteTo writes a consistent copy of the whole store (a snapshot).
func (s *Store) WriteTo(w io.Writer) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Restore replaces the store's content with a snapshot written by WriteTo.
// The snapshot is validated before it replaces anything.
func (s *Store) Restore(r io.Reader) error {
	tmp := s.path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("restore: write: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("restore: sync: %w", err)
	}
	f.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	check, err := Open(tmp, Options{ReadOnly: true, OpenTimeout: time.Second})
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: snapshot invalid: %w", err)
	}
	check.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("restore: close: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("restore: rename: %w", err)
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.opts.OpenTimeout, NoSync: s.opts.NoSync})
	if err != nil {
		return fmt.Errorf("restore: reopen: %w", err)
	}
	s.db = db
	return nil
}

// Equal reports whether two stores hold the same records (for checkers that
// compare replicas). The applied index is ignored.
func Equal(a, b *Store) (bool, error) {
	ra, err := a.List(Filter{})
	if err != nil {
		return false, err
	}
	rb, err := b.List(Filter{})
	if err != nil {
		return false, err
	}
	if len(ra) != len(rb) {
		return false, nil
	}
	for i := range ra {
		x, _ := json.Marshal(ra[i])
		y, _ := json.Marshal(rb[i])
		if !bytes.Equal(x, y) {
			return false, nil
		}
	}
	return true, nil
}

// PrepareRestore validates a snapshot file for a user restore into cluster
// (its applied index is reset to zero: the file may come from another log,
// whose indexes mean nothing here) and returns its number of decision
// records. A snapshot stamped with another cluster id is refused
// (ErrOtherCluster); an unstamped one (saved before stamps existed) is
// stamped with cluster.
func PrepareRestore(path, cluster string) (int, error) {
	s, err := Open(path, Options{OpenTimeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.StampCluster(cluster); err != nil {
		return 0, err
	}
	var n int
	err = s.db.Update(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketTxns).Stats().KeyN
		var zero [8]byte
		return tx.Bucket(bucketMeta).Put(keyApplied, zero[:])
	})
	return n, err
}
