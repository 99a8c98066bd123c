package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/txcoord/txcoord/participants"
)

// ErrProtocolViolation: the coordinator asked for something its own
// protocol forbids, such as committing a branch that was rolled back. The
// error also wraps participants.ErrNotPrepared (for a commit) so that a
// caller checking only the contract's sentinels does not lose the fact.
var ErrProtocolViolation = errors.New("protocol violation")

// Markers the adapter THROWs inside its own text transactions. THROW in
// SurrealDB 3.0.2 has kind Thrown and only a message ("An error occurred:
// <value>"), no structured payload, so these texts identify the adapter's
// own outcomes. Each ends with '.', and none is a prefix of another.
const (
	markerPrefix          = "txcoord:"
	markerDryRunPassed    = markerPrefix + "dry-run-passed."
	markerDryRunFailed    = markerPrefix + "dry-run-failed."
	markerAlreadyPrepared = markerPrefix + "already-prepared."
	markerFinished        = markerPrefix + "branch-finished."
	markerVersion         = markerPrefix + "version-mismatch@" // + record index + "."
	markerCommitted       = markerPrefix + "already-committed."
	markerAborted         = markerPrefix + "already-aborted."
	markerNotPrepared     = markerPrefix + "not-prepared."
	markerGuardLocked     = markerPrefix + "guard-locked."
)

// versionMarker is the THROW text for a version mismatch of record i.
func versionMarker(i int) string { return markerVersion + strconv.Itoa(i) + "." }

// versionIndex returns the record index of a version-mismatch THROW.
func (e *stmtError) versionIndex() (int, bool) {
	if e.Kind != kindThrown {
		return 0, false
	}
	at := strings.Index(e.Message, markerVersion)
	if at < 0 {
		return 0, false
	}
	rest := e.Message[at+len(markerVersion):]
	end := strings.IndexByte(rest, '.')
	if end <= 0 {
		return 0, false
	}
	n, err := strconv.Atoi(rest[:end])
	return n, err == nil
}

// isRetryableConflict reports a write-write conflict that SurrealDB says can
// be retried ("Transaction conflict: Resource busy ... This transaction can
// be retried"). In 3.0.2 it comes as kind Internal with no details, the same
// kind as constraint failures, so the message is the only thing that tells
// them apart; this is the one place the adapter reads a server message.
func (e *stmtError) isRetryableConflict() bool {
	return e.Kind == kindInternal && strings.Contains(e.Message, "can be retried")
}

// isTableNotFound reports that the statement's table does not exist
// (3.0.2: SELECT and DELETE on a missing table fail; CREATE/UPSERT define it).
func (e *stmtError) isTableNotFound() bool {
	return e.Kind == "NotFound" && e.Detail == "Table"
}

// transportError is a failure to get an answer from the server. sent says
// whether the request may have reached it: if not, it certainly had no effect.
type transportError struct {
	err  error
	sent bool
}

func (e *transportError) Error() string {
	if e.sent {
		return fmt.Sprintf("no answer from surrealdb: %v", e.err)
	}
	return fmt.Sprintf("surrealdb unreachable: %v", e.err)
}

func (e *transportError) Unwrap() error { return e.err }

// Is makes every transport error an ErrUnavailable. Whether it is also
// ambiguous depends on the call (a repeated commit of a prepared branch is
// not); callers ask mayHaveRun and wrap ErrAmbiguous themselves.
func (e *transportError) Is(target error) bool { return target == participants.ErrUnavailable }

// mayHaveRun reports whether a failed call may still have been executed.
func mayHaveRun(err error) bool {
	var te *transportError
	return errors.As(err, &te) && te.sent
}

// isCtxErr reports whether err comes from the caller's context.
func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
