package participants

import "errors"

// Sentinel errors shared by all adapters. Adapters wrap them with context
// (fmt.Errorf("prepare %s: %w", gid, ErrConflict)); callers test with errors.Is.
// Three classes matter at this boundary: a definite NO (ErrVoteNo and the
// reasons under it), retryable (ErrUnavailable), and AMBIGUOUS (ErrAmbiguous:
// the other side may have acted; never report it as a failure).
var (
	// ErrVoteNo: the branch voted NO at prepare. Reasons below are wrapped too.
	ErrVoteNo = errors.New("participant voted NO")
	// ErrConflict: a lock held by another transaction or a concurrent change
	// to a record this branch read or wrote.
	ErrConflict = errors.New("conflict with another transaction")
	// ErrConstraint: a constraint, schema or type check failed.
	ErrConstraint = errors.New("constraint violated")
	// ErrUnavailable: the database could not be reached or answered with a
	// transient error; the call may be retried (phase two: must be).
	ErrUnavailable = errors.New("participant unavailable")
	// ErrAmbiguous: the outcome of the call is unknown.
	ErrAmbiguous = errors.New("outcome unknown")
	// ErrNotPrepared: CommitPrepared found no prepared branch and no record
	// that the GID committed. The decision says commit, so this is serious.
	ErrNotPrepared = errors.New("branch is not prepared")
	// ErrUnsupported: the operation is not allowed inside a branch that will
	// be prepared (temp tables, LISTEN/NOTIFY, plain SET, ...), or the
	// operation kind does not fit this participant.
	ErrUnsupported = errors.New("operation not supported in a prepared transaction")
	// ErrBadOperation: malformed operation (empty SQL, missing record id...).
	ErrBadOperation = errors.New("bad operation")
	// ErrBranchFailed: an earlier operation failed; only Rollback is allowed.
	ErrBranchFailed = errors.New("branch failed earlier; only rollback is allowed")
	// ErrTimeout: the branch's deadline passed.
	ErrTimeout = errors.New("branch deadline exceeded")
	// ErrBranchDone: the branch is already prepared, committed or rolled back.
	ErrBranchDone = errors.New("branch already finished")
)
