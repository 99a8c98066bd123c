package surrealdb

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Config configures one SurrealDB participant (one namespace/database).
type Config struct {
	// Name is the participant's name in GIDs, logs and errors.
	Name string
	// URL of the server's RPC endpoint: ws://host:port/rpc or wss://...
	URL string
	// Namespace and Database the participant works in.
	Namespace, Database string
	// Username and Password sign in as a root user (AuthLevel "root", the
	// default), a namespace user ("namespace") or a database user
	// ("database"). The password is never logged.
	Username, Password string
	AuthLevel          string

	// CallTimeout bounds one request to the server. When the server dies,
	// an in-flight request would otherwise wait for the SDK's 30 s; after a
	// timeout the connection is discarded and a new one dialled.
	CallTimeout time.Duration
	// DialTimeout bounds opening and signing in a new connection.
	DialTimeout time.Duration
	// PoolSize is the most connections open at once; requests beyond it wait
	// for a free connection (bounded by their context and CallTimeout).
	PoolSize int
	// MaxCommitting bounds the two-phase transactions in flight on this
	// database (admission control; see Participant.EnterCommit); 0 means
	// no bound.
	MaxCommitting int
	// MaxMessageBytes bounds one response frame from the server.
	MaxMessageBytes int64

	// LockTable, IntentTable and MarkerTable are the adapter's own tables:
	// record locks, prepared intents (keyed by GID) and done markers and
	// abort tombstones (keyed by GID). VersionField is the field the adapter
	// maintains on every record it writes. All must be plain identifiers.
	LockTable, IntentTable, MarkerTable string
	VersionField                        string

	// GuardTables opts tables in to the write guard: an event the adapter
	// installs at Open that refuses a write by anyone while the record (or a
	// UNIQUE value it writes) is locked by a prepared branch, and gives each
	// write that does not set the version field a fresh version, so that
	// writers that bypass the coordinator neither lose a prepared branch's
	// update nor go unnoticed by a branch that read the record. Those
	// writers must use text transactions (BEGIN; ...; COMMIT;): a single
	// statement outside one does not detect write conflicts in 3.0.2.
	GuardTables []string

	// MarkerRetention is how long done markers (commit) and abort
	// tombstones are kept before the collector deletes them. It must exceed
	// the longest time a decided transaction can wait for its phase-two
	// retry, and be at least the coordinator's Retention (how long
	// GetTransaction answers for a txid; 24h by default): past it,
	// Committed answers false, and a one-phase commit would be reported as
	// presumed abort. The default, 25h, is the coordinator's default plus an
	// hour for clock skew (a marker's time is the server's clock).
	MarkerRetention time.Duration
	// MarkerGCInterval is how often the participant deletes markers older
	// than MarkerRetention (see GC); 0 turns the collector off (then call
	// GC yourself: every commit, one-phase ones included, writes a marker).
	// Participants sharing a database share its collection: the shortest
	// MarkerRetention among them wins, so configure them alike.
	MarkerGCInterval time.Duration

	// SchemaCacheTTL is how long a table's introspected schema (constraints,
	// UNIQUE indexes) is trusted. Schema changes must not run while intents
	// exist on the table.
	SchemaCacheTTL time.Duration
	// MaxRecordsPerBranch bounds the records a branch reads or writes: it
	// bounds the prepare query, the intent and the commit transaction.
	MaxRecordsPerBranch int
	// MaxQueryRows bounds the rows one OpQuery may return.
	MaxQueryRows int
	// PhaseTwoRetries bounds how often CommitPrepared, RollbackPrepared and
	// CommitOnePhase retry a transaction that SurrealDB says can be retried
	// (a write-write conflict), with backoff from RetryBackoff doubling up to
	// MaxRetryBackoff. Past the bound the error wraps ErrUnavailable
	// (phase two) or ErrConflict (one phase).
	PhaseTwoRetries int
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration

	// Knobs are test hooks; nil in production.
	Knobs *TestingKnobs
}

// TestingKnobs let tests reach states that are otherwise timing-dependent.
type TestingKnobs struct {
	// Now replaces time.Now for versions and schema-cache expiry.
	Now func() time.Time
}

// Auth levels for Config.AuthLevel.
const (
	AuthRoot      = "root"
	AuthNamespace = "namespace"
	AuthDatabase  = "database"
)

// DefaultConfig returns a Config with every field but Name, URL, Namespace,
// Database and credentials set to its default.
func DefaultConfig() Config {
	return Config{
		AuthLevel:           AuthRoot,
		CallTimeout:         5 * time.Second,
		DialTimeout:         3 * time.Second,
		PoolSize:            8,
		MaxCommitting:       0,
		MaxMessageBytes:     32 << 20,
		LockTable:           "txc_lock",
		IntentTable:         "txc_intent",
		MarkerTable:         "txc_done",
		VersionField:        "_txc_version",
		MarkerRetention:     25 * time.Hour, // ≥ the coordinator's default Retention (24h)
		MarkerGCInterval:    time.Minute,
		SchemaCacheTTL:      time.Minute,
		MaxRecordsPerBranch: 1000,
		MaxQueryRows:        10000,
		PhaseTwoRetries:     10,
		RetryBackoff:        5 * time.Millisecond,
		MaxRetryBackoff:     250 * time.Millisecond,
	}
}

// isIdent reports whether s is a plain SurrealQL identifier.
func isIdent(s string) bool {
	if s == "" || !isWordStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isWordByte(s[i]) {
			return false
		}
	}
	return true
}

// isName reports whether s is a valid participant name.
func isName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isWordByte(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// Validate checks the Config and its cross-field relations; the error names
// the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("surrealdb config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !isName(c.Name) {
		bad("Name", "%q must be 1-64 letters, digits, '_', '.', '-'", c.Name)
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("URL", "%q must be a ws:// or wss:// URL with a host", c.URL)
	}
	if c.Namespace == "" {
		bad("Namespace", "required")
	}
	if c.Database == "" {
		bad("Database", "required")
	}
	if c.Username == "" {
		bad("Username", "required")
	}
	switch c.AuthLevel {
	case AuthRoot, AuthNamespace, AuthDatabase:
	default:
		bad("AuthLevel", "%q must be %q, %q or %q", c.AuthLevel, AuthRoot, AuthNamespace, AuthDatabase)
	}
	if c.CallTimeout <= 0 || c.CallTimeout > 5*time.Minute {
		bad("CallTimeout", "%v must be in (0, 5m]", c.CallTimeout)
	}
	if c.DialTimeout <= 0 || c.DialTimeout > time.Minute {
		bad("DialTimeout", "%v must be in (0, 1m]", c.DialTimeout)
	}
	if c.MaxCommitting < 0 {
		bad("MaxCommitting", "%d must not be negative (0 means no bound)", c.MaxCommitting)
	}
	if c.PoolSize < 1 || c.PoolSize > 256 {
		bad("PoolSize", "%d must be in [1, 256]", c.PoolSize)
	}
	if c.MaxMessageBytes < 1<<16 {
		bad("MaxMessageBytes", "%d must be at least 64 KiB", c.MaxMessageBytes)
	}
	own := map[string]string{}
	for _, f := range []struct{ field, name string }{
		{"LockTable", c.LockTable}, {"IntentTable", c.IntentTable}, {"MarkerTable", c.MarkerTable},
	} {
		if !isIdent(f.name) {
			bad(f.field, "%q must be an identifier ([A-Za-z_][A-Za-z0-9_]*)", f.name)
			continue
		}
		if other, dup := own[f.name]; dup {
			bad(f.field, "%q is also %s", f.name, other)
		}
		own[f.name] = f.field
	}
	if !isIdent(c.VersionField) || c.VersionField == "id" {
		bad("VersionField", "%q must be an identifier other than id", c.VersionField)
	}
	seen := map[string]bool{}
	for _, t := range c.GuardTables {
		if !isIdent(t) {
			bad("GuardTables", "%q must be an identifier", t)
		}
		if _, isOwn := own[t]; isOwn {
			bad("GuardTables", "%q is one of the adapter's own tables", t)
		}
		if seen[t] {
			bad("GuardTables", "%q listed twice", t)
		}
		seen[t] = true
	}
	if c.MarkerRetention <= 0 {
		bad("MarkerRetention", "%v must be positive", c.MarkerRetention)
	}
	if c.MarkerGCInterval < 0 || c.MarkerGCInterval > c.MarkerRetention {
		bad("MarkerGCInterval", "%v must be in [0, MarkerRetention (%v)] (0: no automatic collection)", c.MarkerGCInterval, c.MarkerRetention)
	}
	if c.SchemaCacheTTL <= 0 {
		bad("SchemaCacheTTL", "%v must be positive", c.SchemaCacheTTL)
	}
	if c.MaxRecordsPerBranch < 1 || c.MaxRecordsPerBranch > 100000 {
		bad("MaxRecordsPerBranch", "%d must be in [1, 100000]", c.MaxRecordsPerBranch)
	}
	if c.MaxQueryRows < 1 {
		bad("MaxQueryRows", "%d must be positive", c.MaxQueryRows)
	}
	if c.PhaseTwoRetries < 0 || c.PhaseTwoRetries > 100 {
		bad("PhaseTwoRetries", "%d must be in [0, 100]", c.PhaseTwoRetries)
	}
	if c.RetryBackoff <= 0 {
		bad("RetryBackoff", "%v must be positive", c.RetryBackoff)
	}
	if c.MaxRetryBackoff < c.RetryBackoff {
		bad("MaxRetryBackoff", "%v must be at least RetryBackoff (%v)", c.MaxRetryBackoff, c.RetryBackoff)
	}
	return errors.Join(errs...)
}

// LogValue logs the Config without its password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("url", c.URL),
		slog.String("namespace", c.Namespace),
		slog.String("database", c.Database),
		slog.String("user", c.Username),
		slog.Duration("call_timeout", c.CallTimeout),
		slog.Int("pool_size", c.PoolSize),
		slog.Any("guard_tables", c.GuardTables),
	)
}

// String formats the Config without its password.
func (c Config) String() string {
	return fmt.Sprintf("surrealdb participant %s (%s, ns %s, db %s, user %s)", c.Name, c.URL, c.Namespace, c.Database, c.Username)
}

// GoString keeps %#v from printing the password.
func (c Config) GoString() string { return c.String() }

func (c Config) now() time.Time {
	if c.Knobs != nil && c.Knobs.Now != nil {
		return c.Knobs.Now()
	}
	return time.Now()
}
