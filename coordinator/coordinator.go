// Package coordinator is txcoord's two-phase commit engine: the pure state
// machine (state.go), the Raft FSM over the wal decision store (fsm.go,
// raftnode.go), the leader-side driver that runs transactions (this file,
// phasetwo.go) and recovery (recovery.go).
//
// A Coordinator is the leader-side driver. It keeps ACTIVE transactions in
// memory; only decisions go through Raft. Invariant 1 of DESIGN.md holds by
// construction: EffCommitAll runs only after the commit decision was applied
// by Raft, and recovery commits only branches whose record says COMMIT.
package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

// Outcome is what a client learns about a transaction.
type Outcome int

const (
	OutcomePending Outcome = iota + 1
	OutcomeCommitted
	OutcomeAborted
	OutcomeUnknown
)

func (o Outcome) String() string {
	switch o {
	case OutcomePending:
		return "PENDING"
	case OutcomeCommitted:
		return "COMMITTED"
	case OutcomeAborted:
		return "ABORTED"
	case OutcomeUnknown:
		return "UNKNOWN"
	}
	return "UNSPECIFIED"
}

// BranchState is one branch's place in the protocol.
type BranchState int

const (
	BranchActive BranchState = iota + 1
	BranchPrepared
	BranchReadOnly
	BranchCommitted
	BranchRolledBack
	BranchFailed
)

func (s BranchState) String() string {
	return [...]string{"", "ACTIVE", "PREPARED", "READ_ONLY", "COMMITTED", "ROLLED_BACK", "FAILED"}[s]
}

// TxOptions are given at Begin.
type TxOptions struct {
	Timeout   time.Duration
	Isolation participants.Isolation
	Labels    map[string]string
	// IdempotencyKey (Run only) makes retries safe: see Run.
	IdempotencyKey string
	// AckDecision: Commit returns once the commit decision is durable,
	// without waiting for phase two (which goes on in the background).
	AckDecision bool
	// Client is the authenticated caller ("" without access control);
	// ClientMaxActive bounds its transactions in memory (0: no own limit).
	Client          string
	ClientMaxActive int
	// OnBegin, if set, is called by Run with the txid as soon as the
	// transaction exists, before any statement runs, on Run's goroutine.
	// The server uses it to announce the txid early (wire.TxIDHeader).
	OnBegin func(txid string)
}

// Statement is one operation addressed to a participant.
type Statement struct {
	Participant string
	Op          participants.Operation
}

// BranchInfo describes one branch for GetTransaction.
type BranchInfo struct {
	Participant string
	GID         string
	State       BranchState
	Vote        string
	Error       string
	Retries     int
}

// TxInfo describes a transaction for GetTransaction.
type TxInfo struct {
	TxID      string
	State     State
	Outcome   Outcome
	Branches  []BranchInfo
	Labels    map[string]string
	CreatedAt time.Time
	Deadline  time.Time
	Error     string
	// Presumed: the outcome comes from presumed abort (no commit record).
	Presumed bool
	// Heuristic: an operator set the outcome (txctl resolve).
	Heuristic bool
	Timeline  []TxEvent
}

type branch struct {
	p       participants.Participant
	b       participants.Branch // nil once released
	gid     string
	state   BranchState
	vote    participants.Vote
	receipt string // given with a YES vote (participants.Receipter)
	err     error
	retries int // failed phase-two attempts
}

// TxEvent is one step of a transaction's timeline (GetTransaction, txctl).
type TxEvent struct {
	At          time.Time
	Event       string
	Participant string
	Detail      string
}

// maxTimeline bounds a transaction's timeline (a branch retrying for hours
// must not grow it without end).
const maxTimeline = 64

type txn struct {
	id       string
	opts     TxOptions
	created  time.Time
	deadline time.Time

	// opMu serialises the client's calls on this transaction (Execute,
	// Commit, Rollback, timeout): a branch is used by one goroutine at a time.
	opMu sync.Mutex
	// mu guards the fields below; held only briefly, never across I/O.
	mu         sync.Mutex
	state      State
	branches   map[string]*branch
	order      []string // participant names in first-use order
	statements int
	err        error
	timer      *time.Timer
	timeline   []TxEvent
	// stored closes once the decision store has committed this
	// transaction's decision (nil: none was logged); see finish.
	stored <-chan struct{}
}

// note appends to the timeline; the caller holds t.mu.
func (t *txn) note(now time.Time, event, participant, detail string) {
	if len(t.timeline) >= maxTimeline {
		t.timeline[len(t.timeline)-1] = TxEvent{At: now, Event: event, Participant: participant, Detail: "(timeline truncated) " + detail}
		return
	}
	t.timeline = append(t.timeline, TxEvent{At: now, Event: event, Participant: participant, Detail: detail})
}

// event appends to the timeline, taking t.mu.
func (c *Coordinator) event(t *txn, event, participant, detail string) {
	t.mu.Lock()
	t.note(c.now(), event, participant, detail)
	t.mu.Unlock()
}

// Coordinator drives transactions on the Raft leader. Safe for concurrent use.
type Coordinator struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	store  *wal.Store
	parts  map[string]participants.Participant
	now    func() time.Time
	prefix string // "<gid prefix>:<cluster id>:"

	limits atomic.Pointer[Limits] // reloadable (SetLimits)

	mu       sync.Mutex
	active   map[string]*txn
	byClient map[string]int // active transactions per authenticated client

	denialWindow time.Time // AuditDenial's one-second window
	denialCount  int
	recent       map[string]*TxInfo
	ring         []string // recent's insertion order, bounded by RecentFinished

	// byKey reserves idempotency keys of Runs in flight (guarded by mu).
	byKey map[string]bool

	// marking holds txids whose phase two finished and whose done mark is
	// queued but not yet applied: recovery leaves them alone (guarded by mu).
	marking map[string]struct{}

	// readyTerm is the Raft term in which this node, as leader, finished
	// recovery; it serves transactions only while leading that same term.
	readyTerm atomic.Uint64
	// draining is set by Drain (under mu, so no Begin slips past it).
	draining atomic.Bool
	doneCh   chan string // txids whose phase two finished, to be marked done
	decideQ  chan decideReq
	// preparing counts this node's transactions between the start of their
	// prepare phase and their decision (decide.go: flights linger for them).
	preparing atomic.Int64
	// pending is the flight whose entry decideLoop is waiting for (decide.go).
	pending atomic.Pointer[flight]
	// unstored: phase two finished, for entryApplied held by
	// FailUnstoredDecision (buffered, 1).
	unstored chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
}

// New builds a Coordinator. Start must be called before it serves.
func New(cfg Config, r *raft.Raft, fsm *FSM, parts []participants.Participant, logger *slog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	c := &Coordinator{
		cfg: cfg, log: logger, raft: r, store: fsm.Store(), parts: map[string]participants.Participant{},
		now: time.Now, prefix: cfg.GIDPrefix + ":" + cfg.ClusterID + ":",
		active: map[string]*txn{}, byClient: map[string]int{}, recent: map[string]*TxInfo{}, marking: map[string]struct{}{}, byKey: map[string]bool{},
		doneCh: make(chan string, 4096), decideQ: make(chan decideReq, 4*maxFlight), unstored: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	lim := cfg.Limits()
	c.limits.Store(&lim)
	fsm.notifyApplied(c.entryApplied)
	for _, p := range parts {
		if !ValidName(p.Name()) {
			return nil, fmt.Errorf("participant name %q: use 1-32 of [a-z0-9_-]", p.Name())
		}
		if _, dup := c.parts[p.Name()]; dup {
			return nil, fmt.Errorf("participant name %q is configured twice", p.Name())
		}
		c.parts[p.Name()] = p
	}
	return c, nil
}

// errFutureTimeout: a Raft future did not complete in time.
var errFutureTimeout = errors.New("raft did not answer in time")

// wait waits for a Raft future, bounded: hashicorp/raft v1.7 does not wake
// every future when it shuts down (a leader removed from the cluster shuts
// down mid-apply), so an unbounded wait could hang a client forever. On a
// timeout the future's outcome is unknown; the helper goroutine ends when
// raft answers, or stays parked on a future raft dropped (one per such
// event, which only a shutdown produces).
func (c *Coordinator) wait(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-time.After(c.cfg.FutureTimeout):
		return errFutureTimeout
	case <-c.stop:
		return raft.ErrRaftShutdown
	}
}

// ActiveCount is the number of transactions in memory (ACTIVE or in their
// commit protocol).
func (c *Coordinator) ActiveCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.active)
}

// GIDPrefix is the prefix of every GID this cluster creates.
func (c *Coordinator) GIDPrefix() string { return c.prefix }

// GID names a transaction's branch on a participant:
// <prefix>:<cluster id>:<txid>:<participant>, under 200 bytes by construction.
func (c *Coordinator) GID(txid, participant string) string {
	return c.prefix + txid + ":" + participant
}

// ParseGID splits a GID of this cluster into txid and participant.
func (c *Coordinator) ParseGID(gid string) (txid, participant string, ok bool) {
	rest, found := strings.CutPrefix(gid, c.prefix)
	if !found {
		return "", "", false
	}
	txid, participant, found = strings.Cut(rest, ":")
	if !found || !txidRE.MatchString(txid) || !ValidName(participant) {
		return "", "", false
	}
	return txid, participant, true
}

// txid: 12 hex digits of milliseconds since the epoch, then 8 random hex
// digits. Fixed width, so keys never prefix each other, and sortable by time.
var txidRE = regexp.MustCompile(`^[0-9a-f]{20}$`)

func (c *Coordinator) newTxID() string {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic(fmt.Sprintf("coordinator: crypto/rand failed: %v", err))
	}
	return fmt.Sprintf("%012x%s", c.now().UnixMilli(), hex.EncodeToString(rnd[:]))
}

func txidTime(txid string) time.Time {
	ms, err := strconv.ParseInt(txid[:12], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func validateTxID(txid string) error {
	if txid == "" {
		return fieldErr("txid", "is empty; pass the txid returned by Begin")
	}
	if !txidRE.MatchString(txid) {
		return fieldErr("txid", "%q is not a txcoord transaction id (20 lowercase hex digits)", txid)
	}
	return nil
}

// serving returns ErrUnavailable unless this node leads and has recovered.
func (c *Coordinator) serving() error {
	if c.raft.State() != raft.Leader {
		_, id := c.raft.LeaderWithID()
		if id == "" {
			return &NotLeaderError{}
		}
		return &NotLeaderError{LeaderID: string(id), LeaderAddr: c.memberAddr(string(id))}
	}
	if t := c.readyTerm.Load(); t == 0 || t != c.raft.CurrentTerm() {
		return fmt.Errorf("%w: recovering in-doubt transactions after becoming leader", ErrUnavailable)
	}
	return nil
}

// Serving reports nil when this node takes transactions (it leads and has
// recovered), else why not (*NotLeaderError names the leader when known).
func (c *Coordinator) Serving() error { return c.serving() }

func (c *Coordinator) memberAddr(id string) string {
	m, err := c.store.Members()
	if err != nil {
		return ""
	}
	return m[id]
}

// Begin starts a transaction.
func (c *Coordinator) Begin(ctx context.Context, opts TxOptions) (string, time.Time, error) {
	if err := c.serving(); err != nil {
		return "", time.Time{}, err
	}
	if c.draining.Load() {
		return "", time.Time{}, ErrDraining
	}
	if opts.Timeout < 0 {
		return "", time.Time{}, fieldErr("options.timeout", "must not be negative")
	}
	lim := c.lim()
	if opts.Timeout == 0 {
		opts.Timeout = lim.DefaultTimeout
	}
	if opts.Timeout > lim.MaxTimeout {
		return "", time.Time{}, fieldErr("options.timeout", "%s exceeds the server's max_timeout %s", opts.Timeout, lim.MaxTimeout)
	}
	if len(opts.Labels) > c.cfg.MaxLabels {
		return "", time.Time{}, fieldErr("options.labels", "%d labels; at most %d", len(opts.Labels), c.cfg.MaxLabels)
	}
	for k, v := range opts.Labels {
		if k == "" || len(k) > 128 || len(v) > 128 {
			return "", time.Time{}, fieldErr("options.labels", "label %q: keys must be 1-128 bytes and values at most 128", k)
		}
	}
	now := c.now()
	t := &txn{
		id: c.newTxID(), opts: opts, created: now, deadline: now.Add(opts.Timeout),
		state: StateActive, branches: map[string]*branch{},
	}
	t.note(now, "BEGIN", "", fmt.Sprintf("timeout %s, isolation %s", opts.Timeout, opts.Isolation))
	c.mu.Lock()
	if c.draining.Load() {
		c.mu.Unlock()
		return "", time.Time{}, ErrDraining
	}
	if len(c.active) >= lim.MaxActive {
		c.mu.Unlock()
		return "", time.Time{}, fmt.Errorf("%w: %d active transactions (max_active); retry later", ErrLimit, lim.MaxActive)
	}
	if opts.ClientMaxActive > 0 && c.byClient[opts.Client] >= opts.ClientMaxActive {
		c.mu.Unlock()
		return "", time.Time{}, fmt.Errorf("%w: client %q has %d active transactions (auth.clients[].max_active); retry later",
			ErrLimit, opts.Client, opts.ClientMaxActive)
	}
	c.active[t.id] = t
	c.byClient[opts.Client]++
	c.mu.Unlock()
	t.timer = time.AfterFunc(opts.Timeout, func() { c.onTimeout(t) })
	c.log.Debug("begin", "txid", t.id, "timeout", opts.Timeout)
	return t.id, t.deadline, nil
}

func (c *Coordinator) lookup(txid string) (*txn, error) {
	if err := validateTxID(txid); err != nil {
		return nil, err
	}
	c.mu.Lock()
	t := c.active[txid]
	c.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("%w: txid %s is not active on this coordinator (finished, timed out, or never begun); use GetTransaction for its outcome", ErrNotActive, txid)
	}
	return t, nil
}

func (c *Coordinator) checkStatement(i int, st Statement) error {
	field := "statement"
	if i >= 0 {
		field = fmt.Sprintf("statements[%d]", i)
	}
	if st.Participant == "" {
		return fieldErr(field+".participant", "is empty; name a configured participant (%s)", c.participantNames())
	}
	p, ok := c.parts[st.Participant]
	if !ok {
		return fieldErr(field+".participant", "unknown participant %q; configured: %s", st.Participant, c.participantNames())
	}
	size := len(st.Op.SQL) + approxSize(st.Op.Args) + approxSize(st.Op.Content) + approxSize(st.Op.Vars)
	if size > c.cfg.MaxStatementBytes {
		return fieldErr(field, "is %d bytes; the limit is %d (max_statement_bytes)", size, c.cfg.MaxStatementBytes)
	}
	switch p.Kind() {
	case participants.KindPostgres:
		if st.Op.Kind != participants.OpSQL {
			return fieldErr(field+".sql", "participant %q is PostgreSQL: send an SQL statement", st.Participant)
		}
		if strings.TrimSpace(st.Op.SQL) == "" {
			return fieldErr(field+".sql.sql", "is empty")
		}
	case participants.KindSurrealDB:
		if st.Op.Kind == participants.OpSQL {
			return fieldErr(field+".record", "participant %q is SurrealDB: send a record operation", st.Participant)
		}
		if st.Op.Kind == participants.OpQuery {
			if strings.TrimSpace(st.Op.SQL) == "" {
				return fieldErr(field+".record.query", "is empty")
			}
		} else if st.Op.Record.Table == "" || st.Op.Record.ID == nil {
			return fieldErr(field+".record.record", "needs a table and an id")
		}
	}
	return nil
}

func (c *Coordinator) participantNames() string {
	return strings.Join(c.participantList(), ", ")
}

// approxSize estimates the encoded size of a value (for limits only).
func approxSize(v any) int {
	switch x := v.(type) {
	case nil:
		return 0
	case string:
		return len(x)
	case []byte:
		return len(x)
	case []any:
		n := 0
		for _, e := range x {
			n += approxSize(e) + 1
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range x {
			n += len(k) + approxSize(e) + 1
		}
		return n
	}
	return 8
}

// Execute runs one statement inside an ACTIVE transaction. A statement that
// fails at the participant rolls the whole transaction back (the branch is
// unusable after a failed statement) and returns an *AbortError.
func (c *Coordinator) Execute(ctx context.Context, txid string, st Statement) (participants.Result, error) {
	if err := c.serving(); err != nil {
		return participants.Result{}, err
	}
	t, err := c.lookup(txid)
	if err != nil {
		return participants.Result{}, err
	}
	if err := c.checkStatement(-1, st); err != nil {
		return participants.Result{}, err
	}
	t.opMu.Lock()
	defer t.opMu.Unlock()
	return c.execLocked(ctx, t, st)
}

func (c *Coordinator) execLocked(ctx context.Context, t *txn, st Statement) (participants.Result, error) {
	t.mu.Lock()
	if _, _, err := Transition(t.state, EvExecute); err != nil {
		state := t.state
		t.mu.Unlock()
		return participants.Result{}, fmt.Errorf("%w: %s is %s; Execute needs ACTIVE", ErrNotActive, t.id, state)
	}
	if max := c.lim().MaxStatements; t.statements >= max {
		t.mu.Unlock()
		return participants.Result{}, fieldErr("statement", "transaction already ran %d statements (max_statements)", max)
	}
	t.statements++
	br := t.branches[st.Participant]
	t.mu.Unlock()

	ctx, cancel := context.WithDeadline(ctx, t.deadline)
	defer cancel()
	if br == nil {
		p := c.parts[st.Participant]
		gid := c.GID(t.id, st.Participant)
		b, err := p.Begin(ctx, gid, participants.BranchOptions{Isolation: t.opts.Isolation, Deadline: t.deadline})
		if err != nil {
			return participants.Result{}, c.abortLocked(t, st.Participant, fmt.Errorf("open branch: %w", err))
		}
		br = &branch{p: p, b: b, gid: gid, state: BranchActive}
		t.mu.Lock()
		t.note(c.now(), "BRANCH_OPENED", st.Participant, gid)
		t.branches[st.Participant] = br
		t.order = append(t.order, st.Participant)
		t.mu.Unlock()
	}
	res, err := br.b.Execute(ctx, st.Op)
	if err != nil {
		t.mu.Lock()
		br.state, br.err = BranchFailed, err
		t.note(c.now(), "STATEMENT_FAILED", st.Participant, err.Error())
		t.mu.Unlock()
		return participants.Result{}, c.abortLocked(t, st.Participant, err)
	}
	return res, nil
}

// Rollback abandons an ACTIVE transaction. Rolling back an aborted one is a
// no-op success.
func (c *Coordinator) Rollback(ctx context.Context, txid string) error {
	if err := c.serving(); err != nil {
		return err
	}
	if err := validateTxID(txid); err != nil {
		return err
	}
	t, err := c.lookup(txid)
	if err != nil {
		if info := c.recentInfo(txid); info != nil {
			if info.Outcome == OutcomeAborted {
				return nil
			}
			return fmt.Errorf("%w: %s is %s; it cannot be rolled back", ErrNotActive, txid, info.State)
		}
		return err
	}
	t.opMu.Lock()
	defer t.opMu.Unlock()
	t.mu.Lock()
	state := t.state
	t.mu.Unlock()
	if state == StateAborted || state == StateAborting {
		return nil
	}
	if _, _, err := Transition(state, EvRollback); err != nil {
		return fmt.Errorf("%w: %s is %s; it cannot be rolled back", ErrNotActive, txid, state)
	}
	c.abortLocked(t, "", errors.New("rolled back by the client"))
	return nil
}

func (c *Coordinator) onTimeout(t *txn) {
	t.opMu.Lock()
	defer t.opMu.Unlock()
	t.mu.Lock()
	state := t.state
	t.mu.Unlock()
	if state != StateActive {
		return
	}
	c.log.Info("transaction timed out; rolling back", "txid", t.id, "timeout", t.opts.Timeout)
	c.event(t, "TIMEOUT", "", t.opts.Timeout.String())
	c.abortLocked(t, "", fmt.Errorf("timed out after %s", t.opts.Timeout))
}

// abortLocked rolls back every branch of an ACTIVE or PREPARING transaction
// (caller holds opMu) and returns the *AbortError describing why.
func (c *Coordinator) abortLocked(t *txn, participant string, reason error) error {
	t.mu.Lock()
	if t.state == StateActive || t.state == StatePreparing {
		t.state = StateAborting
	}
	if t.err == nil {
		t.err = &AbortError{TxID: t.id, Participant: participant, Reason: reason}
	}
	abortErr := t.err
	t.note(c.now(), "ABORT", participant, reason.Error())
	t.mu.Unlock()
	c.rollbackBranches(t)
	c.finish(t, StateAborted)
	return abortErr
}

// finish moves a transaction out of the active set.
func (c *Coordinator) finish(t *txn, final State) {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Lock()
	t.state = final
	stored := t.stored
	t.mu.Unlock()
	// Phase two may run before the decision store has committed the
	// decision (entryApplied). The transaction stays active until then:
	// while active, GetTransaction answers from memory and recovery leaves
	// its branches alone, so nothing reads the store's "no decision" for
	// it in that window. fly bounds the wait (FutureTimeout).
	if stored != nil {
		select {
		case <-stored:
		case <-c.stop:
		}
	}
	info := c.info(t)
	if o := c.cfg.Observer; o != nil {
		outcome := map[State]string{StateCommitted: "committed", StateAborted: "aborted", StateInDoubt: "unknown"}[final]
		branches := map[string]string{}
		for _, b := range info.Branches {
			branches[b.Participant] = strings.ToLower(b.State.String())
		}
		o.TransactionFinished(outcome, branches)
		if co, ok := o.(CommitObserver); ok {
			for _, e := range info.Timeline {
				if e.Event == "COMMIT_REQUESTED" {
					co.CommitFinished(outcome, c.now().Sub(e.At))
					break
				}
			}
		}
	}
	c.mu.Lock()
	if _, ok := c.active[t.id]; ok {
		if c.byClient[t.opts.Client]--; c.byClient[t.opts.Client] <= 0 {
			delete(c.byClient, t.opts.Client)
		}
	}
	delete(c.active, t.id)
	if _, ok := c.recent[t.id]; !ok {
		c.ring = append(c.ring, t.id)
	}
	c.recent[t.id] = info
	for len(c.ring) > c.cfg.RecentFinished {
		delete(c.recent, c.ring[0])
		c.ring = c.ring[1:]
	}
	c.mu.Unlock()
}

func (c *Coordinator) recentInfo(txid string) *TxInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recent[txid]
}

func (c *Coordinator) info(t *txn) *TxInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	info := &TxInfo{TxID: t.id, State: t.state, Labels: t.opts.Labels, CreatedAt: t.created, Deadline: t.deadline}
	switch t.state {
	case StateCommitted, StateCommitting:
		info.Outcome = OutcomeCommitted
	case StateAborted, StateAborting:
		info.Outcome = OutcomeAborted
	case StateInDoubt:
		info.Outcome = OutcomeUnknown
	default:
		info.Outcome = OutcomePending
	}
	if t.err != nil {
		info.Error = t.err.Error()
	}
	info.Timeline = append([]TxEvent(nil), t.timeline...)
	for _, name := range t.order {
		br := t.branches[name]
		bi := BranchInfo{Participant: name, GID: br.gid, State: br.state, Retries: br.retries}
		if br.state != BranchActive && br.state != BranchFailed {
			bi.Vote = br.vote.String()
		}
		if br.err != nil {
			bi.Error = br.err.Error()
		}
		info.Branches = append(info.Branches, bi)
	}
	return info
}

// GetTransaction reports what is known about a transaction: in memory while
// active or recently finished, else from the decision log, else by presumed
// abort (a txid with no commit record after recovery is aborted), unless the
// txid is older than the retention and its record may have been forgotten.
func (c *Coordinator) GetTransaction(ctx context.Context, txid string) (*TxInfo, error) {
	if err := validateTxID(txid); err != nil {
		return nil, err
	}
	if err := c.serving(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	t := c.active[txid]
	recent := c.recent[txid]
	c.mu.Unlock()
	if t != nil {
		return c.info(t), nil
	}
	rec, err := c.store.Get(txid)
	if err != nil {
		return nil, fmt.Errorf("%w: read decision store: %v", ErrUnavailable, err)
	}
	if rec != nil {
		info := recordInfo(rec, c)
		if recent != nil {
			// The record keeps milliseconds; memory has the exact start.
			info.Branches, info.Labels, info.Deadline, info.Timeline = recent.Branches, recent.Labels, recent.Deadline, recent.Timeline
			info.CreatedAt = recent.CreatedAt
			if info.Error == "" {
				info.Error = recent.Error
			}
			// Done marks are batched (doneMarkInterval): phase two may have
			// finished here before the record says so.
			if !rec.Done && recent.State == StateCommitted && info.State == StateCommitting {
				info.State = StateCommitted
			}
		}
		return info, nil
	}
	// An in-memory "unknown" (this node lost leadership while logging the
	// decision) is stale once this node serves again: its recovery has run
	// since, so the participants now tell the outcome (below).
	if recent != nil && recent.Outcome != OutcomeUnknown {
		return recent, nil
	}
	if created := txidTime(txid); c.now().Sub(created) > c.cfg.Retention {
		return nil, fmt.Errorf("%w: %s is older than the retention (%s); its outcome may have been forgotten", ErrNotFound, txid, c.cfg.Retention)
	}
	if created := txidTime(txid); created.After(c.now().Add(time.Minute)) {
		return nil, fmt.Errorf("%w: %s was not created by this cluster (its time is in the future)", ErrNotFound, txid)
	}
	// No decision is logged. A two-phase transaction without one is aborted
	// (presumed abort), but a one-phase commit logs no decision either: only
	// its participant knows. Ask every participant whether the GID committed.
	info := &TxInfo{TxID: txid, CreatedAt: txidTime(txid)}
	for _, name := range c.participantList() {
		p := c.parts[name]
		rec, ok := participants.Capability[participants.CommitRecorder](p)
		if !ok {
			info.State, info.Outcome = StateInDoubt, OutcomeUnknown
			info.Error = fmt.Sprintf("no decision is logged and participant %q cannot tell whether a one-phase commit happened", name)
			return info, nil
		}
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		committed, err := rec.Committed(cctx, c.GID(txid, name))
		cancel()
		if err != nil {
			info.State, info.Outcome = StateInDoubt, OutcomeUnknown
			info.Error = fmt.Sprintf("no decision is logged and participant %q could not be asked about a one-phase commit: %v", name, err)
			return info, nil
		}
		if committed {
			info.State, info.Outcome = StateCommitted, OutcomeCommitted
			info.Branches = []BranchInfo{{Participant: name, GID: c.GID(txid, name), State: BranchCommitted}}
			info.Error = ""
			return info, nil
		}
	}
	info.State, info.Outcome, info.Presumed = StateAborted, OutcomeAborted, true
	info.Error = "no commit decision was logged and no participant recorded a commit: presumed abort"
	return info, nil
}

func (c *Coordinator) participantList() []string {
	names := make([]string, 0, len(c.parts))
	for n := range c.parts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func recordInfo(rec *wal.Record, c *Coordinator) *TxInfo {
	info := &TxInfo{TxID: rec.TxID, Labels: rec.Labels, CreatedAt: time.UnixMilli(rec.CreatedMs), Error: rec.Reason, Heuristic: rec.Heuristic}
	committed := rec.Outcome == wal.OutcomeCommit
	switch {
	case committed && rec.Done:
		info.State, info.Outcome = StateCommitted, OutcomeCommitted
	case committed:
		info.State, info.Outcome = StateCommitting, OutcomeCommitted
	case rec.Done:
		info.State, info.Outcome = StateAborted, OutcomeAborted
	default:
		info.State, info.Outcome = StateAborting, OutcomeAborted
	}
	for _, p := range rec.Participants {
		bs := BranchPrepared
		if rec.Done && committed {
			bs = BranchCommitted
		} else if rec.Done {
			bs = BranchRolledBack
		}
		info.Branches = append(info.Branches, BranchInfo{Participant: p, GID: c.GID(rec.TxID, p), State: bs, Vote: "YES"})
	}
	return info
}

// ErrReplayed is returned by Run, with the earlier txid, when a transaction
// with the same idempotency key already committed: nothing was executed.
var ErrReplayed = errors.New("an earlier run with this idempotency key committed")

// maxIdempotencyKey bounds keys kept in the decision log.
const maxIdempotencyKey = 128

// reserveKey claims an idempotency key for one Run. It returns the txid of
// an earlier committed run with the key (replay), or waits while another
// run with the key is in flight here, or reserves the key (release it when
// done).
func (c *Coordinator) reserveKey(ctx context.Context, key string) (replayTxID string, err error) {
	for {
		c.mu.Lock()
		busy := c.byKey[key]
		if !busy {
			rec, err := c.store.ByIdempotencyKey(key)
			if err != nil {
				c.mu.Unlock()
				return "", fmt.Errorf("%w: read decision store: %v", ErrUnavailable, err)
			}
			if rec != nil && rec.Outcome == wal.OutcomeCommit {
				c.mu.Unlock()
				return rec.TxID, nil
			}
			c.byKey[key] = true
			c.mu.Unlock()
			return "", nil
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: a run with this idempotency key is still in flight", ErrOutcomeUnknown)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *Coordinator) releaseKey(key string) {
	c.mu.Lock()
	delete(c.byKey, key)
	c.mu.Unlock()
}

// releaseKeyStored releases key once transaction txid's decision is in the
// decision store (at once if it has none, or is stored already).
func (c *Coordinator) releaseKeyStored(key, txid string) {
	var stored <-chan struct{}
	c.mu.Lock()
	if t := c.active[txid]; t != nil {
		t.mu.Lock()
		stored = t.stored
		t.mu.Unlock()
	}
	c.mu.Unlock()
	if stored == nil {
		c.releaseKey(key)
		return
	}
	select {
	case <-stored:
		c.releaseKey(key)
	default:
		go func() {
			select {
			case <-stored:
			case <-c.stop:
			}
			c.releaseKey(key)
		}()
	}
}

// Run executes statements and commits, in one call. Statements run in order;
// a failing one rolls everything back. With an idempotency key, a run whose
// key already committed returns (earlier txid, nil, ErrReplayed) without
// executing anything; such runs always log their decision (no one-phase
// shortcut), so that a retry after a crash finds it.
func (c *Coordinator) Run(ctx context.Context, opts TxOptions, stmts []Statement) (string, []participants.Result, error) {
	if len(opts.IdempotencyKey) > maxIdempotencyKey {
		return "", nil, fieldErr("options.idempotency_key", "is %d bytes; at most %d", len(opts.IdempotencyKey), maxIdempotencyKey)
	}
	if len(stmts) == 0 {
		return "", nil, fieldErr("statements", "is empty; give at least one statement")
	}
	if max := c.lim().MaxStatements; len(stmts) > max {
		return "", nil, fieldErr("statements", "has %d statements; the limit is %d (max_statements)", len(stmts), max)
	}
	for i, st := range stmts {
		if err := c.checkStatement(i, st); err != nil {
			return "", nil, err
		}
	}
	var txid string
	if key := opts.IdempotencyKey; key != "" {
		if err := c.serving(); err != nil {
			return "", nil, err
		}
		replay, err := c.reserveKey(ctx, key)
		if err != nil {
			return "", nil, err
		}
		if replay != "" {
			return replay, nil, ErrReplayed
		}
		// Released when the run is over and its decision, if any, is in
		// the decision store, where the next run with the key looks.
		defer func() { c.releaseKeyStored(key, txid) }()
	}
	var err error
	if txid, _, err = c.Begin(ctx, opts); err != nil {
		return "", nil, err
	}
	if opts.OnBegin != nil {
		opts.OnBegin(txid)
	}
	t, err := c.lookup(txid)
	if err != nil {
		return txid, nil, err
	}
	t.opMu.Lock()
	results, err := c.runLocked(ctx, t, stmts)
	t.opMu.Unlock()
	if err != nil {
		return txid, nil, err
	}
	return txid, results, nil
}

// Commit decides the transaction. nil means committed; *AbortError means
// rolled back; ErrOutcomeUnknown means recovery will decide. Committing a
// transaction that already committed returns nil (a client's retry).
func (c *Coordinator) Commit(ctx context.Context, txid string) error {
	if err := c.serving(); err != nil {
		return err
	}
	t, err := c.lookup(txid)
	if err != nil {
		if errors.Is(err, ErrInvalidArgument) {
			return err
		}
		info, gerr := c.GetTransaction(ctx, txid)
		if gerr != nil {
			return err
		}
		switch info.Outcome {
		case OutcomeCommitted:
			return nil
		case OutcomeAborted:
			return &AbortError{TxID: txid, Reason: errors.New(info.Error)}
		case OutcomeUnknown:
			return fmt.Errorf("%w: %s", ErrOutcomeUnknown, txid)
		}
		return err
	}
	t.opMu.Lock()
	defer t.opMu.Unlock()
	return c.commitLocked(ctx, t)
}
