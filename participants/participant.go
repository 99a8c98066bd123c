// Package participants defines the contract between the coordinator and the
// databases that take part in a distributed transaction.
//
// The package has only a few types: Participant (one configured database),
// Branch (one transaction's open, not yet prepared work on that database),
// Operation and Result (what a branch executes and returns), Vote, and
// InDoubtBranch (a prepared branch found after a restart). Errors are the
// sentinels in errors.go.
//
// Every phase method after Prepare is keyed by the branch's GID and is
// idempotent: committing a committed GID or rolling back a rolled-back (or
// unknown) GID succeeds. Prepare returns a vote and does no cleanup: a branch
// that votes NO is rolled back by the caller through Rollback/RollbackPrepared.
package participants

import (
	"context"
	"time"
)

// Kind names a participant implementation.
type Kind string

const (
	KindPostgres  Kind = "postgres"
	KindSurrealDB Kind = "surrealdb"
)

// Isolation is the isolation level a branch runs at.
type Isolation int

const (
	// ReadCommitted is the default: PostgreSQL READ COMMITTED; SurrealDB
	// validates the versions of records read at prepare.
	ReadCommitted Isolation = iota
	RepeatableRead
	// Serializable: PostgreSQL SERIALIZABLE; SurrealDB additionally locks
	// read records at prepare (across participants, validation alone is not enough).
	Serializable
)

func (i Isolation) String() string {
	switch i {
	case ReadCommitted:
		return "READ_COMMITTED"
	case RepeatableRead:
		return "REPEATABLE_READ"
	case Serializable:
		return "SERIALIZABLE"
	}
	return "UNKNOWN"
}

// BranchOptions configure a branch when it is opened.
type BranchOptions struct {
	Isolation Isolation
	// Deadline bounds the whole branch; operations past it fail with ErrTimeout.
	Deadline time.Time
}

// Vote is a participant's answer to Prepare.
type Vote int

const (
	// VoteNo: the branch cannot commit; the error returned with it says why.
	VoteNo Vote = iota
	// VoteYes: the branch is durably prepared; its commit cannot fail for
	// semantic reasons, only for availability (DESIGN.md invariant 4).
	VoteYes
	// VoteReadOnly: the branch wrote nothing; it has already released its
	// resources and takes no part in phase two.
	VoteReadOnly
)

func (v Vote) String() string {
	switch v {
	case VoteNo:
		return "NO"
	case VoteYes:
		return "YES"
	case VoteReadOnly:
		return "READ_ONLY"
	}
	return "UNKNOWN"
}

// Participant is one configured database. Implementations are safe for
// concurrent use by many transactions.
type Participant interface {
	// Name is the participant's configured name (used in GIDs and errors).
	Name() string
	// Kind says which adapter this is.
	Kind() Kind
	// Begin opens a branch for the given GID. The branch holds resources
	// (a connection, staged writes) until Prepare, CommitOnePhase or Rollback.
	Begin(ctx context.Context, gid string, opts BranchOptions) (Branch, error)
	// CommitPrepared commits a prepared branch. Idempotent: an already
	// committed GID returns nil (a participant whose branches give receipts
	// may need the receipt to tell: see ReceiptCommitter). A GID that was
	// never prepared (or was rolled back) returns ErrNotPrepared: the caller
	// must not lose that fact.
	// Availability failures return errors wrapping ErrUnavailable and must be retried.
	CommitPrepared(ctx context.Context, gid string) error
	// RollbackPrepared rolls back a prepared branch. Idempotent: an unknown
	// or already rolled back GID returns nil. Also leaves a mark so that a
	// late Prepare of the same GID votes NO where the database needs one —
	// except for participants whose branches give receipts: there a Prepare
	// still in flight (on a lost connection) may leave the branch prepared,
	// with no commit decision, until the coordinator's in-doubt scan rolls
	// it back (presumed abort).
	RollbackPrepared(ctx context.Context, gid string) error
	// InDoubt lists prepared branches whose GID starts with prefix. Only
	// branches of this participant's database are listed.
	InDoubt(ctx context.Context, prefix string) ([]InDoubtBranch, error)
	// Close releases pools and connections. Prepared branches survive it.
	Close() error
}

// Branch is one transaction's work on one participant before it is decided.
// A Branch is used by one goroutine at a time.
type Branch interface {
	GID() string
	// Execute runs one operation inside the branch. A failing operation
	// leaves the branch usable only for Rollback (ErrBranchFailed after it).
	Execute(ctx context.Context, op Operation) (Result, error)
	// Prepare asks for a vote. VoteNo comes with a non-nil error that wraps
	// ErrVoteNo (and, where known, ErrConflict or ErrConstraint). An error
	// with VoteYes is impossible. VoteNo with an error wrapping ErrAmbiguous
	// (and not ErrVoteNo) means the branch may or may not be prepared: treat
	// it as NO and roll back by GID. A second Prepare votes NO with ErrBranchDone.
	Prepare(ctx context.Context) (Vote, error)
	// CommitOnePhase commits the branch directly, without prepare: the
	// one-participant optimisation; the database's commit is the decision.
	// An error wrapping ErrAmbiguous means the outcome is unknown.
	CommitOnePhase(ctx context.Context) error
	// Rollback abandons an unprepared branch. Safe to call more than once
	// and after a failed Prepare.
	Rollback(ctx context.Context) error
}

// Queuer is an optional Branch capability, found by type assertion: a
// one-shot run's operations are queued on the branch and sent together with
// its Prepare or CommitOnePhase in one round trip, because their results are
// needed only after the commit. An operation Queue refuses fails the branch
// at once, as a failed Execute does. A queued operation that fails when sent
// makes Prepare vote NO (or CommitOnePhase fail) with an error wrapping the
// operation's. QueuedResults returns the results in queue order once Prepare
// voted YES or READ_ONLY or CommitOnePhase succeeded, nil before that. After
// Queue, only Prepare, CommitOnePhase and Rollback may be called. Layers that
// wrap a Branch (metrics, tracing) must forward Queuer when the branch they
// wrap has it, or queueing is silently off.
type Queuer interface {
	Queue(op Operation) error
	QueuedResults() []Result
}

// InDoubtBranch is a prepared branch found in a participant.
type InDoubtBranch struct {
	GID        string
	PreparedAt time.Time // zero if the participant cannot tell
	// Locks held, where the participant can tell (record ids for SurrealDB).
	Locks []string
	// Receipt is the branch's receipt (see Receipter), where the listing
	// tells it; "" otherwise.
	Receipt string
}

// Receipter is an optional Branch capability, found by type assertion:
// after Prepare voted YES, Receipt returns what the participant needs later
// to tell by itself whether the prepared branch committed, once it is no
// longer prepared (PostgreSQL: the transaction's xid, checked with
// pg_xact_status) — "" when it has none. The coordinator logs the receipt
// with the commit decision, so any later leader can hand it back through
// ReceiptCommitter; the participant then needs no commit record of its own
// in the branch's transaction. Layers that wrap a Branch forward it.
type Receipter interface {
	Receipt() string
}

// ReceiptCommitter is an optional Participant capability: CommitPrepared
// with the receipt the branch gave at Prepare (or the InDoubt listing).
// Same contract as CommitPrepared; an empty receipt means none is known.
// Layers that wrap a Participant forward it.
type ReceiptCommitter interface {
	CommitPreparedReceipt(ctx context.Context, gid, receipt string) error
}

// BranchReceipt is b's receipt, "" when b gives none.
func BranchReceipt(b Branch) string {
	if r, ok := b.(Receipter); ok {
		return r.Receipt()
	}
	return ""
}

// CommitPreparedReceipt commits a prepared branch through p, handing the
// receipt to participants that take one (ReceiptCommitter) and calling
// CommitPrepared on the others.
func CommitPreparedReceipt(ctx context.Context, p Participant, gid, receipt string) error {
	if rc, ok := p.(ReceiptCommitter); ok {
		return rc.CommitPreparedReceipt(ctx, gid, receipt)
	}
	return p.CommitPrepared(ctx, gid)
}

// CommitRecorder is an optional capability, found by type assertion (see
// Capability): a participant that records every commit of a GID durably
// and atomically with the commit itself — one-phase commits included — can
// say whether a GID committed. The coordinator logs no decision for a
// one-phase transaction, so this is how GetTransaction answers for one
// after the node that ran it is gone.
//
// A participant whose two-phase branches give receipts (Receipter) records
// one-phase commits only: a two-phase commit's record is the coordinator's
// decision (which holds the receipt), consulted before Committed. For a
// two-phase GID it answers as for one that never committed, and its fence
// stops one-phase commits only (see RollbackPrepared).
//
// Committed is a fence, not a read: after Committed returns false, the GID
// can no longer commit at this participant.
type CommitRecorder interface {
	// Committed reports whether gid committed. true means a commit of gid
	// is recorded. Otherwise it first records durably that gid is aborted
	// (an abort tombstone), so that any later commit of gid — and any
	// concurrent one that has not committed yet, such as a one-phase
	// COMMIT still running at the server after its connection was cut —
	// fails, and a later Prepare of gid votes NO; only then does it return
	// false. So after Committed returns false, the GID can no longer
	// commit: false is final, not "not committed yet".
	//
	// When the participant cannot give a final answer — a transaction of
	// gid is prepared or still committing and does not finish within the
	// adapter's bounds, or the database cannot be reached — it returns an
	// error (wrapping ErrUnavailable where it is transient) and never
	// guesses. false with a nil error also follows when gid's record was
	// garbage-collected after the adapter's retention.
	Committed(ctx context.Context, gid string) (bool, error)
}

// Wrapper is implemented by layers around a participant (metrics...), so
// capabilities of the adapter underneath stay reachable.
type Wrapper interface {
	Unwrap() Participant
}

// Capability finds an optional capability T on p or on the participants it
// wraps.
func Capability[T any](p Participant) (T, bool) {
	for p != nil {
		if c, ok := p.(T); ok {
			return c, true
		}
		w, ok := p.(Wrapper)
		if !ok {
			break
		}
		p = w.Unwrap()
	}
	var zero T
	return zero, false
}
