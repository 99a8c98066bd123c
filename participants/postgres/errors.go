package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/txcoord/txcoord/participants"
)

// ErrPreparedTransactionsDisabled: the server runs with
// max_prepared_transactions = 0, so it cannot take part in two-phase commit.
// Open returns it wrapped, with instructions.
var ErrPreparedTransactionsDisabled = errors.New("prepared transactions are disabled (max_prepared_transactions = 0)")

// SQLSTATE codes the adapter acts on. Classes (first two characters) are
// checked with hasClass.
const (
	codeUndefinedObject        = "42704" // COMMIT/ROLLBACK PREPARED: no such GID
	codeObjectInUse            = "55000" // object_not_in_prerequisite_state: "prepared transaction ... is busy"
	codeLockNotAvailable       = "55P03" // lock_timeout expired
	codeQueryCanceled          = "57014" // statement_timeout or cancel request
	codeReadOnlyTransaction    = "25006"
	codeIdleInTransactionTO    = "25P03"
	codeUniqueViolation        = "23505"
	codeDuplicateTable         = "42P07"
	codeInsufficientPrivilege  = "42501"
	classIntegrityConstraint   = "23"
	classTransactionRollback   = "40" // serialization_failure, deadlock_detected
	classConnectionException   = "08"
	classInsufficientResources = "53"
	classOperatorIntervention  = "57" // admin shutdown, crash shutdown, cannot connect now, query canceled
	classSystemError           = "58"
	classSyntaxOrAccess        = "42"
	classDataException         = "22"
)

// pgErr returns the server error inside err, if any.
func pgErr(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

func hasCode(err error, code string) bool {
	pe := pgErr(err)
	return pe != nil && pe.Code == code
}

func hasClass(code, class string) bool { return strings.HasPrefix(code, class) }

// definiteServerError reports whether err is an ERROR the server sent in
// answer to the statement: the statement failed, the session lives on, and
// the server's state is known (a FATAL or PANIC ends the session and says
// nothing certain about a commit in progress).
func definiteServerError(err error) bool {
	pe := pgErr(err)
	if pe == nil {
		return false
	}
	sev := pe.SeverityUnlocalized
	if sev == "" {
		sev = pe.Severity
	}
	return sev == "ERROR"
}

// reason classifies err into the participants sentinel that says what kind
// of failure it is, or nil when none fits. Never by message text: SQLSTATE
// codes for server errors, error types for the rest.
func reason(err error) error {
	if pe := pgErr(err); pe != nil {
		switch c := pe.Code; {
		case hasClass(c, classIntegrityConstraint):
			return participants.ErrConstraint
		case hasClass(c, classTransactionRollback), c == codeLockNotAvailable:
			return participants.ErrConflict
		case hasClass(c, classConnectionException), hasClass(c, classInsufficientResources),
			hasClass(c, classOperatorIntervention), hasClass(c, classSystemError),
			c == codeIdleInTransactionTO:
			return participants.ErrUnavailable
		case hasClass(c, classSyntaxOrAccess), hasClass(c, classDataException):
			return participants.ErrBadOperation
		}
		return nil
	}
	if isConnectionError(err) {
		return participants.ErrUnavailable
	}
	return nil
}

// isConnectionError reports whether err comes from reaching the server
// rather than from the server's answer: dial failures, broken or timed-out
// connections, canceled contexts, a closed pool.
func isConnectionError(err error) bool {
	if err == nil || pgErr(err) != nil {
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &ne), errors.As(err, &ce), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	return false
}
