package coordinator

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Failpoint names, at the boundaries of the 2PC path. Tests arm them through
// TestingKnobs (and txcoord's --failpoint flag) to crash the process there.
const (
	// FailBeforeDecision: every branch voted YES; the decision is not logged.
	FailBeforeDecision = "before-decision"
	// FailAfterDecision: the commit decision is applied; no COMMIT sent yet.
	FailAfterDecision = "after-decision"
	// FailMidCommit: the first branch acknowledged COMMIT; the others are not
	// sent (phase two runs sequentially while this failpoint is armed).
	FailMidCommit = "mid-commit"
	// FailBeforeForget: every branch acknowledged; the done mark is not logged.
	FailBeforeForget = "before-forget"
	// FailUnstoredDecision: the commit decision is committed in the Raft log
	// and phase two finished, but the leader's decision store has not
	// committed it (its commit is held until the crash): after a restart
	// the store must replay it from the log (DESIGN.md invariant 7).
	FailUnstoredDecision = "unstored-decision"
)

// Failpoints lists every failpoint name.
var Failpoints = []string{FailBeforeDecision, FailAfterDecision, FailMidCommit, FailBeforeForget, FailUnstoredDecision}

// TestingKnobs are hooks for tests. The zero value does nothing.
type TestingKnobs struct {
	// Failpoint is called at each named failpoint with its name. A crash
	// test's hook kills the process; nil means no failpoints.
	Failpoint func(name string)
	// FailpointArmed reports whether a failpoint will fire, letting the
	// driver make the point reachable (mid-commit forces sequential commits).
	FailpointArmed func(name string) bool
}

// Config configures a Coordinator. Start from DefaultConfig.
type Config struct {
	// ClusterID goes into every GID; recovery touches only GIDs with
	// GIDPrefix:ClusterID: (DESIGN.md invariant 6).
	ClusterID string
	GIDPrefix string

	// DefaultTimeout applies when Begin gives none; MaxTimeout caps any.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// MaxActive bounds transactions in memory on this node (each may hold
	// a database connection per participant).
	MaxActive int
	// MaxStatements bounds statements per transaction (and per Run call).
	MaxStatements int
	// MaxStatementBytes bounds one statement's text plus arguments.
	MaxStatementBytes int
	// MaxLabels bounds labels per transaction.
	MaxLabels int

	// PrepareTimeout bounds the prepare phase; a branch that has not voted
	// by then counts as NO.
	PrepareTimeout time.Duration
	// ApplyTimeout bounds waiting for Raft to accept a decision.
	ApplyTimeout time.Duration
	// CommitReplyWait is how long Commit waits for phase-two acknowledgements
	// before answering COMMITTED anyway (the decision is durable; phase two
	// goes on in the background).
	CommitReplyWait time.Duration
	// RetryMin/RetryMax bound the exponential backoff of phase-two retries.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one phase-two call to a participant.
	CallTimeout time.Duration
	// FutureTimeout bounds waiting for any Raft operation (apply, barrier,
	// membership change); past it the outcome counts as unknown.
	FutureTimeout time.Duration
	// DecisionLinger is how long a flight of decisions may wait for the
	// decisions of transactions still preparing on this node, so that one
	// Raft entry carries more of them (decide.go). 0 never waits. A
	// transaction that decides alone never waits.
	DecisionLinger time.Duration

	// RecoveryInterval is the period of the in-doubt scan of participants.
	RecoveryInterval time.Duration
	// RecoveryStartupWait bounds how long the start-up recovery pass may
	// delay serving; what remains is retried in the background.
	RecoveryStartupWait time.Duration
	// Retention keeps done decisions (for GetTransaction) before forgetting.
	Retention time.Duration
	// AuditRetention keeps audit entries (one per logged decision, plus
	// operator entries) before the leader prunes them, oldest first,
	// keeping the last pruned entry's hash as the chain's anchor. 0 keeps
	// everything (the trail then grows with the traffic).
	AuditRetention time.Duration
	// RecentFinished bounds finished transactions kept in memory for
	// GetTransaction details (branches, errors).
	RecentFinished int

	// NodeID and AdvertiseAddr: this node's Raft id and the gRPC address
	// clients reach it at; logged when it leads, so followers can redirect.
	NodeID        string
	AdvertiseAddr string
	// PeerAddrs: node id → gRPC address of statically configured peers.
	PeerAddrs map[string]string

	// Observer receives events for metrics; nil means none.
	Observer Observer

	Knobs TestingKnobs
}

// Observer is told what the coordinator does, for metrics. Calls are
// synchronous and must be cheap; implementations are safe for concurrent use.
type Observer interface {
	// TransactionFinished: outcome is committed, aborted or unknown;
	// branches maps participant → final branch state (lower case).
	TransactionFinished(outcome string, branches map[string]string)
	// InDoubt: in-doubt branches found by the last recovery scan and the
	// oldest one's age.
	InDoubt(n int, oldest time.Duration)
	// RecoveryAction: one commit or rollback by recovery, and its error.
	RecoveryAction(action string, err error)
}

// CommitObserver is an optional capability of an Observer (found by type
// assertion): told, for each transaction whose client asked to commit, how
// long it took from that request to the outcome (committed, aborted or
// unknown). Synchronous and cheap, like Observer's methods.
type CommitObserver interface {
	CommitFinished(outcome string, took time.Duration)
}

// FlightObserver is an optional capability of an Observer (found by type
// assertion): told of each flight of decisions once its Raft entry was
// applied by the leader's FSM (before the decision store's own commit) or
// failed — how many decisions it carried, how long it lingered for more
// (Config.DecisionLinger), and how long Raft took. Synchronous and cheap,
// like Observer's methods: it may run on the FSM's goroutine.
type FlightObserver interface {
	FlightApplied(decisions int, lingered, raft time.Duration)
}

// DefaultConfig returns a configuration for a development cluster.
func DefaultConfig() Config {
	return Config{
		ClusterID:           "dev",
		GIDPrefix:           "txc",
		DefaultTimeout:      30 * time.Second,
		MaxTimeout:          10 * time.Minute,
		MaxActive:           4096,
		MaxStatements:       1000,
		MaxStatementBytes:   1 << 20,
		MaxLabels:           16,
		PrepareTimeout:      10 * time.Second,
		ApplyTimeout:        5 * time.Second,
		CommitReplyWait:     5 * time.Second,
		RetryMin:            20 * time.Millisecond,
		RetryMax:            2 * time.Second,
		CallTimeout:         5 * time.Second,
		FutureTimeout:       15 * time.Second,
		DecisionLinger:      20 * time.Millisecond,
		RecoveryInterval:    5 * time.Second,
		RecoveryStartupWait: 30 * time.Second,
		Retention:           24 * time.Hour,
		AuditRetention:      90 * 24 * time.Hour,
		RecentFinished:      10000,
	}
}

// maxDecisionLinger caps DecisionLinger: a decision waits at most this
// long for others before it is sent.
const maxDecisionLinger = 100 * time.Millisecond

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ValidName reports whether s may be used as a cluster id, GID prefix or
// participant name (they are joined with ':' into GIDs under 200 bytes).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks the configuration and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	if !ValidName(c.ClusterID) {
		errs = append(errs, fmt.Errorf("cluster_id %q: use 1-32 of [a-z0-9_-], starting with a letter or digit", c.ClusterID))
	}
	if !ValidName(c.GIDPrefix) {
		errs = append(errs, fmt.Errorf("gid_prefix %q: use 1-32 of [a-z0-9_-]", c.GIDPrefix))
	}
	pos := map[string]time.Duration{
		"default_timeout": c.DefaultTimeout, "max_timeout": c.MaxTimeout, "prepare_timeout": c.PrepareTimeout,
		"apply_timeout": c.ApplyTimeout, "commit_reply_wait": c.CommitReplyWait, "retry_min": c.RetryMin,
		"retry_max": c.RetryMax, "call_timeout": c.CallTimeout, "future_timeout": c.FutureTimeout, "recovery_interval": c.RecoveryInterval,
		"recovery_startup_wait": c.RecoveryStartupWait, "retention": c.Retention,
	}
	for name, d := range pos {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0 (got %s)", name, d))
		}
	}
	if c.DecisionLinger < 0 || c.DecisionLinger > maxDecisionLinger {
		errs = append(errs, fmt.Errorf("decision_linger must be between 0 (off) and %s (got %s)", maxDecisionLinger, c.DecisionLinger))
	}
	if c.AuditRetention < 0 {
		errs = append(errs, fmt.Errorf("audit_retention must be >= 0 (0 keeps every entry; got %s)", c.AuditRetention))
	}
	if c.DefaultTimeout > c.MaxTimeout {
		errs = append(errs, fmt.Errorf("default_timeout (%s) must not exceed max_timeout (%s)", c.DefaultTimeout, c.MaxTimeout))
	}
	if c.RetryMin > c.RetryMax {
		errs = append(errs, fmt.Errorf("retry_min (%s) must not exceed retry_max (%s)", c.RetryMin, c.RetryMax))
	}
	for name, n := range map[string]int{"max_active": c.MaxActive, "max_statements": c.MaxStatements,
		"max_statement_bytes": c.MaxStatementBytes, "recent_finished": c.RecentFinished} {
		if n <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0 (got %d)", name, n))
		}
	}
	return errors.Join(errs...)
}
