package coordinator

import (
	"errors"
	"fmt"
)

// Sentinel errors of the coordinator. The gRPC layer maps each to one status
// code (docs/api.md); callers test with errors.Is.
var (
	// ErrInvalidArgument: bad input; a *FieldError names the field.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: no transaction with that id is known.
	ErrNotFound = errors.New("transaction not found")
	// ErrNotActive: the transaction no longer accepts this call (it is
	// committing, committed, aborted...).
	ErrNotActive = errors.New("transaction is not active")
	// ErrLimit: a server limit was reached (active transactions, queue).
	ErrLimit = errors.New("limit reached")
	// ErrUnavailable: this node cannot serve now (not leader, recovering,
	// shutting down); retry, possibly elsewhere. Nothing was done.
	ErrUnavailable = errors.New("coordinator unavailable")
	// ErrAborted: the transaction was rolled back.
	ErrAborted = errors.New("transaction aborted")
	// ErrOutcomeUnknown: the outcome is not known to this node; recovery will
	// resolve it. Never a failure: ask GetTransaction later.
	ErrOutcomeUnknown = errors.New("transaction outcome unknown")
)

// FieldError is an ErrInvalidArgument that names the offending field and
// says how to fix it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Msg) }

// Unwrap makes errors.Is(err, ErrInvalidArgument) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidArgument }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// AbortError says why a transaction was rolled back and which participant
// caused it (empty when none did, e.g. a timeout or a client rollback).
type AbortError struct {
	TxID        string
	Participant string
	Reason      error
}

func (e *AbortError) Error() string {
	if e.Participant != "" {
		return fmt.Sprintf("transaction %s aborted: participant %q: %v", e.TxID, e.Participant, e.Reason)
	}
	return fmt.Sprintf("transaction %s aborted: %v", e.TxID, e.Reason)
}

// Unwrap exposes both ErrAborted and the reason to errors.Is.
func (e *AbortError) Unwrap() []error { return []error{ErrAborted, e.Reason} }

// NotLeaderError is an ErrUnavailable from a node that does not lead. It
// names the leader (and its gRPC address) when this node knows them, so
// clients can go there.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "coordinator unavailable: not the leader, and no leader is known (election in progress?)"
	}
	return fmt.Sprintf("coordinator unavailable: not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrUnavailable) hold.
func (e *NotLeaderError) Unwrap() error { return ErrUnavailable }
