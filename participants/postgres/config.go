package postgres

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures one PostgreSQL participant (one database). Start from
// DefaultConfig and set Name and DSN.
type Config struct {
	// Name is the participant's name, used in GIDs, logs and errors:
	// 1 to 64 bytes from [A-Za-z0-9_.-].
	Name string
	// DSN is a libpq connection string or URL (pgx syntax). It may carry a
	// password; the adapter never logs it (see LogValue).
	DSN string

	// MaxConns bounds the pool. Every open branch holds one connection until
	// it prepares, commits or rolls back, so MaxConns bounds the number of
	// concurrently open branches; phase-two calls, InDoubt and marker GC use
	// the same pool.
	MaxConns int32
	// MinConns connections are kept open. A new connection costs 25–43 ms on
	// the reference machine, so a warm pool matters.
	MinConns int32

	// PhaseConns bounds a second pool, used by CommitPrepared,
	// RollbackPrepared, InDoubt and marker collection, so that phase two
	// never waits for a connection behind open branches.
	PhaseConns int32
	// MaxCommitting bounds the two-phase transactions in flight on this
	// database (admission control; see EnterCommit); 0 means no bound. On
	// the reference machine PostgreSQL's CPU per two-phase transaction
	// rises by half past about 16 in flight.
	MaxCommitting int

	// ConnectTimeout bounds establishing one connection.
	ConnectTimeout time.Duration
	// AcquireTimeout bounds waiting for a free pooled connection in Begin
	// (and in phase-two calls); past it the call fails with ErrUnavailable.
	AcquireTimeout time.Duration
	// StatementTimeout is the server-side statement_timeout of every
	// connection and bounds each Execute. Required: it is what bounds a
	// statement the client stops waiting for.
	StatementTimeout time.Duration
	// LockTimeout is the server-side lock_timeout: the longest a statement
	// waits for a lock held by another transaction — in particular by a
	// prepared branch, which holds its locks until phase two. Past it the
	// statement fails with an error wrapping ErrConflict. 0 disables it
	// (statements then wait up to StatementTimeout).
	LockTimeout time.Duration
	// IdleInTransactionTimeout is the server-side
	// idle_in_transaction_session_timeout: a branch left open and unused
	// this long loses its connection (and its transaction) on the server,
	// so an abandoned branch cannot hold locks forever. 0 disables it.
	IdleInTransactionTimeout time.Duration
	// PhaseTimeout bounds each Prepare, CommitOnePhase, Rollback,
	// CommitPrepared, RollbackPrepared and InDoubt call when the caller's
	// context allows longer.
	PhaseTimeout time.Duration

	// MaxResultRows bounds the rows one Execute returns; a larger result
	// fails the operation (and the branch) with ErrBadOperation.
	MaxResultRows int
	// MaxStatementBytes bounds the SQL text of one operation.
	MaxStatementBytes int

	// MarkerTable is the schema-qualified table ("schema.table") in which a
	// one-phase commit records its GID inside its own transaction, so that
	// Committed can tell whether a one-phase commit whose answer was lost
	// happened (the coordinator logs no decision for it), also after a
	// restart. RollbackPrepared of an unknown GID and Committed write abort
	// tombstones there, so a one-phase COMMIT still in flight on a lost
	// connection fails instead of committing behind them. Two-phase
	// branches write no marker: their xid (the receipt, logged with the
	// coordinator's decision) tells a COMMIT PREPARED retry that they
	// committed; CommitPrepared still reads markers of branches prepared
	// by earlier versions when it knows no xid. Open creates the table if
	// it is missing. Empty disables markers: Committed cannot answer
	// (ErrUnsupported), so a one-phase commit with a lost answer stays
	// UNKNOWN — not recommended.
	MarkerTable string
	// MarkerRetention is how long markers and tombstones are kept. It must
	// be at least the coordinator's Retention (how long
	// GetTransaction answers for a txid; 24h by default): past
	// MarkerRetention, Committed answers false, and a one-phase commit
	// would be reported as presumed abort. The default, 25h, is the
	// coordinator's default plus an hour for clock skew between the
	// coordinator and the database (created_at is the database's clock).
	MarkerRetention time.Duration
	// MarkerGCInterval is how often expired markers are deleted, at most
	// markerGCBatch rows per run. Participants (and coordinator nodes) that
	// share a marker table share its collection: the shortest
	// MarkerRetention among them wins, so configure them alike.
	MarkerGCInterval time.Duration

	// Knobs are test hooks; nil in production.
	Knobs *TestingKnobs
}

// TestingKnobs are hooks for tests (fault injection). They run on the
// calling goroutine. pid is the PostgreSQL backend process id of the
// branch's connection.
type TestingKnobs struct {
	// BeforePrepareTransaction runs just before PREPARE TRANSACTION is sent.
	BeforePrepareTransaction func(gid string, pid uint32)
	// BeforeCommit runs just before CommitOnePhase sends COMMIT.
	BeforeCommit func(gid string, pid uint32)
}

// DefaultConfig returns a Config with every limit set; Name and DSN are
// left empty.
func DefaultConfig() Config {
	return Config{
		MaxConns:                 16,
		MinConns:                 2,
		PhaseConns:               8,
		MaxCommitting:            0,
		ConnectTimeout:           5 * time.Second,
		AcquireTimeout:           5 * time.Second,
		StatementTimeout:         30 * time.Second,
		LockTimeout:              5 * time.Second,
		IdleInTransactionTimeout: 2 * time.Minute,
		PhaseTimeout:             15 * time.Second,
		MaxResultRows:            10_000,
		MaxStatementBytes:        1 << 20,
		MarkerTable:              "public.txcoord_commit_marker",
		MarkerRetention:          25 * time.Hour, // ≥ the coordinator's default Retention (24h)
		MarkerGCInterval:         time.Minute,
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks every field and the relations between them; the error
// names the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if !nameRE.MatchString(c.Name) {
		bad("Name %q: must be 1 to 64 bytes from [A-Za-z0-9_.-]", c.Name)
	}
	if c.DSN == "" {
		bad("DSN: empty")
	} else if _, err := pgxpool.ParseConfig(c.DSN); err != nil {
		// pgconn redacts the password in parse errors.
		bad("DSN: %v", err)
	}
	if c.MaxConns < 1 {
		bad("MaxConns %d: must be at least 1", c.MaxConns)
	}
	if c.MinConns < 0 || c.MinConns > c.MaxConns {
		bad("MinConns %d: must be between 0 and MaxConns (%d)", c.MinConns, c.MaxConns)
	}
	if c.PhaseConns < 1 {
		bad("PhaseConns %d: must be at least 1", c.PhaseConns)
	}
	if c.MaxCommitting < 0 {
		bad("MaxCommitting %d: must not be negative (0 means no bound)", c.MaxCommitting)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"ConnectTimeout", c.ConnectTimeout},
		{"AcquireTimeout", c.AcquireTimeout},
		{"StatementTimeout", c.StatementTimeout},
		{"PhaseTimeout", c.PhaseTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad("%s %v: must be positive", p.name, p.d)
		}
	}
	if c.LockTimeout < 0 {
		bad("LockTimeout %v: must not be negative", c.LockTimeout)
	}
	if c.LockTimeout > 0 && c.StatementTimeout > 0 && c.LockTimeout >= c.StatementTimeout {
		bad("LockTimeout %v: must be shorter than StatementTimeout (%v), or lock waits end as statement timeouts instead of conflicts",
			c.LockTimeout, c.StatementTimeout)
	}
	if c.IdleInTransactionTimeout < 0 {
		bad("IdleInTransactionTimeout %v: must not be negative", c.IdleInTransactionTimeout)
	}
	if c.MaxResultRows < 1 {
		bad("MaxResultRows %d: must be at least 1", c.MaxResultRows)
	}
	if c.MaxStatementBytes < 1 {
		bad("MaxStatementBytes %d: must be at least 1", c.MaxStatementBytes)
	}
	if c.MarkerTable != "" {
		if _, err := splitQualified(c.MarkerTable); err != nil {
			bad("MarkerTable %q: %v", c.MarkerTable, err)
		}
		if c.MarkerRetention <= 0 {
			bad("MarkerRetention %v: must be positive when MarkerTable is set", c.MarkerRetention)
		}
		if c.MarkerGCInterval <= 0 {
			bad("MarkerGCInterval %v: must be positive when MarkerTable is set", c.MarkerGCInterval)
		}
		if c.MarkerGCInterval > 0 && c.MarkerRetention > 0 && c.MarkerGCInterval > c.MarkerRetention {
			bad("MarkerGCInterval %v: must not exceed MarkerRetention (%v)", c.MarkerGCInterval, c.MarkerRetention)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("postgres participant config: %w", err)
	}
	return nil
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// splitQualified splits "schema.table" into its two parts. Both must be
// plain lower-case identifiers so that they need no quoting anywhere.
func splitQualified(name string) ([]string, error) {
	parts := strings.Split(name, ".")
	if len(parts) != 2 {
		return nil, errors.New(`must be "schema.table"`)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return nil, fmt.Errorf("%q is not a plain lower-case identifier", p)
		}
	}
	return parts, nil
}

// LogValue makes a Config safe to log: the DSN's password is replaced.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("dsn", RedactDSN(c.DSN)),
		slog.Int("max_conns", int(c.MaxConns)),
		slog.Duration("statement_timeout", c.StatementTimeout),
		slog.Duration("lock_timeout", c.LockTimeout),
		slog.String("marker_table", c.MarkerTable),
	)
}

var kvPasswordRE = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactDSN returns dsn with any password replaced by "xxxxx", for logs and
// error messages. Both URL and keyword/value forms are handled.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "[unparsable DSN redacted]"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPasswordRE.ReplaceAllString(dsn, "${1}xxxxx")
}
