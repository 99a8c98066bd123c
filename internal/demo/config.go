// Package demo runs the txcoord demonstration behind `make demo`: a
// coordinator child process, accounts in PostgreSQL and in SurrealDB, and
// concurrent transfers between them, each ONE txcoord transaction, while the
// coordinator is SIGKILLed and restarted mid-run. At the end it checks from
// the databases themselves that every transfer was all-or-nothing (the total
// balance is unchanged and every account equals its start plus its committed
// transfers) and that nothing is left in doubt (no prepared PostgreSQL
// transaction, no SurrealDB intent with the demo's GID prefix).
//
// The package has few types: Config (and Run, the whole demo), Summary (what
// Run found), and the pieces txbench reuses to launch and check a
// coordinator: NodeFile (the YAML it writes), Coordinator (the child
// process) and SurrealConn (direct SurrealDB access).
package demo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Config configures the demo. Start from DefaultConfig.
type Config struct {
	// Txcoord is the txcoord binary (built by `make build`).
	Txcoord string
	// WorkDir holds the generated config, the coordinator's log and its data
	// directory; it is kept across runs (the decision store must survive
	// the coordinator, and a later run's recovery may need it).
	WorkDir string
	// Listen and RaftBind are the coordinator's addresses (loopback).
	Listen, RaftBind string
	// ClusterID goes into every GID ("txc:<cluster>:..."); the in-doubt
	// checks count only GIDs with this cluster's prefix.
	ClusterID string
	// GIDPrefix is txcoord's GID prefix (coordinator default "txc").
	GIDPrefix string
	Stores    Stores

	// Accounts per store; each starts with InitialBalance.
	Accounts       int
	InitialBalance int64
	// Transfers in total, run by Workers concurrently.
	Transfers int
	Workers   int
	// MaxAmount bounds an ordinary transfer's amount (1..MaxAmount).
	MaxAmount int64
	// OverdraftRate is the share of transfers whose amount exceeds any
	// starting balance, so they usually fail (they roll back).
	OverdraftRate float64
	// KillAt is the share of transfers done when the coordinator is
	// SIGKILLed and restarted; 0 disables the kill.
	KillAt float64
	// Seed makes the transfer plan reproducible.
	Seed int64

	// StartTimeout bounds a coordinator start (or restart) until healthy.
	StartTimeout time.Duration
	// StepTimeout bounds each Begin/Execute/Rollback call; CommitTimeout a Commit.
	StepTimeout, CommitTimeout time.Duration
	// TxTimeout is each transaction's server-side timeout.
	TxTimeout time.Duration
	// ResolveTimeout bounds resolving all unknown outcomes with WaitOutcome.
	ResolveTimeout time.Duration
	// SettleTimeout bounds waiting for recovery to clear prepared branches
	// and intents (at start: leftovers of an earlier run; at the end).
	SettleTimeout time.Duration
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Progress is the period of progress lines.
	Progress time.Duration

	// IntentTable is the SurrealDB adapter's intent table.
	IntentTable string
	// Out receives progress and the report.
	Out io.Writer
}

// Names of the participants, tables and records the demo uses.
const (
	PGParticipant      = "pg"
	SurrealParticipant = "surreal"
	PGTable            = "demo_accounts"
	SurrealTable       = "demo_account"
)

// DefaultIntentTable is the SurrealDB adapter's default intent table.
const DefaultIntentTable = "txc_intent"

// DefaultConfig is the `make demo` setup; Stores come from the environment
// (see StoresFromEnv).
func DefaultConfig() Config {
	return Config{
		Txcoord:        "bin/txcoord",
		WorkDir:        ".data/demo",
		Listen:         "127.0.0.1:7461",
		RaftBind:       "127.0.0.1:7561",
		ClusterID:      "demo",
		GIDPrefix:      "txc",
		Accounts:       20,
		InitialBalance: 1000,
		Transfers:      400,
		Workers:        8,
		MaxAmount:      300,
		OverdraftRate:  0.1,
		KillAt:         0.4,
		Seed:           1,
		StartTimeout:   30 * time.Second,
		StepTimeout:    10 * time.Second,
		CommitTimeout:  30 * time.Second,
		TxTimeout:      20 * time.Second,
		ResolveTimeout: 30 * time.Second,
		SettleTimeout:  30 * time.Second,
		Timeout:        5 * time.Minute,
		Progress:       2 * time.Second,
		IntentTable:    DefaultIntentTable,
		Out:            os.Stdout,
	}
}

// StoresFromEnv reads the variables scripts/pg.sh env and scripts/surreal.sh
// env print (user, password, namespace and database default to the
// development server's root/root, txcoord/test).
func StoresFromEnv(getenv func(string) string) Stores {
	get := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	return Stores{
		PGDSNA:      getenv("TXCOORD_PG_DSN_A"),
		PGDSNB:      getenv("TXCOORD_PG_DSN_B"),
		SurrealURL:  getenv("TXCOORD_SURREAL_URL"),
		SurrealUser: get("TXCOORD_SURREAL_USER", "root"),
		SurrealPass: get("TXCOORD_SURREAL_PASS", "root"),
		SurrealNS:   get("TXCOORD_SURREAL_NS", "txcoord"),
		SurrealDB:   get("TXCOORD_SURREAL_DB", "test"),
	}
}

// Surreal returns the SurrealDB connection parameters.
func (s Stores) Surreal() SurrealParams {
	return SurrealParams{URL: s.SurrealURL, User: s.SurrealUser, Pass: s.SurrealPass,
		Namespace: s.SurrealNS, Database: s.SurrealDB}
}

// Validate checks the configuration and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	hint := `start the databases (make db-up) and eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"`
	if c.Stores.PGDSNA == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_PG_DSN_A is not set: %s", hint))
	}
	if c.Stores.SurrealURL == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_SURREAL_URL is not set: %s", hint))
	}
	if c.Txcoord == "" {
		errs = append(errs, errors.New("txcoord: give the txcoord binary (make build puts it in bin/txcoord)"))
	}
	if c.WorkDir == "" {
		errs = append(errs, errors.New("work-dir is empty"))
	}
	if c.Accounts < 1 || c.Accounts > 10000 {
		errs = append(errs, fmt.Errorf("accounts %d: want 1..10000", c.Accounts))
	}
	if c.InitialBalance < 1 {
		errs = append(errs, fmt.Errorf("initial-balance %d: want > 0", c.InitialBalance))
	}
	if c.Transfers < 1 {
		errs = append(errs, fmt.Errorf("transfers %d: want > 0", c.Transfers))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("workers %d: want 1..256 (each holds a PostgreSQL connection in the coordinator)", c.Workers))
	}
	if c.MaxAmount < 1 {
		errs = append(errs, fmt.Errorf("max-amount %d: want > 0", c.MaxAmount))
	}
	if c.OverdraftRate < 0 || c.OverdraftRate > 1 {
		errs = append(errs, fmt.Errorf("overdraft-rate %g: want 0..1", c.OverdraftRate))
	}
	if c.KillAt < 0 || c.KillAt >= 1 {
		errs = append(errs, fmt.Errorf("kill-at %g: want 0 (no kill) or a share below 1", c.KillAt))
	}
	for name, d := range map[string]time.Duration{"start-timeout": c.StartTimeout, "step-timeout": c.StepTimeout,
		"commit-timeout": c.CommitTimeout, "tx-timeout": c.TxTimeout, "resolve-timeout": c.ResolveTimeout,
		"settle-timeout": c.SettleTimeout, "timeout": c.Timeout, "progress": c.Progress} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0 (got %s)", name, d))
		}
	}
	if c.IntentTable == "" {
		errs = append(errs, errors.New("intent-table is empty: name the SurrealDB adapter's intent table"))
	}
	if c.Out == nil {
		errs = append(errs, errors.New("Out is nil"))
	}
	return errors.Join(errs...)
}

// gidPrefix is the prefix of every GID this demo's coordinator makes.
func (c Config) gidPrefix() string { return c.GIDPrefix + ":" + c.ClusterID + ":" }

func (c Config) configPath() string { return filepath.Join(c.WorkDir, "txcoord.yaml") }
func (c Config) logPath() string    { return filepath.Join(c.WorkDir, "txcoord.log") }

// nodeFile is the coordinator configuration the demo runs.
func (c Config) nodeFile() NodeFile {
	f := SingleNode(c.ClusterID, c.Listen, c.RaftBind, filepath.Join(c.WorkDir, "n1"),
		PostgresParticipant(PGParticipant, c.Stores.PGDSNA),
		SurrealDBParticipant(SurrealParticipant, c.Stores))
	// Scan for in-doubt branches often: the demo waits for it after the kill.
	f.Coordinator.RecoveryInterval = "1s"
	return f
}
