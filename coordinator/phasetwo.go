package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

func (c *Coordinator) failpoint(name string) {
	if c.cfg.Knobs.Failpoint != nil {
		c.cfg.Knobs.Failpoint(name)
	}
}

func (c *Coordinator) armed(name string) bool {
	return c.cfg.Knobs.FailpointArmed != nil && c.cfg.Knobs.FailpointArmed(name)
}

// runLocked runs a one-shot Run's statements and commits; the caller holds
// t.opMu. Statements for a participant whose branch queues are sent with
// its prepare or one-phase commit; the others execute one by one, in
// order. Results come back in statement order once the commit decided.
func (c *Coordinator) runLocked(ctx context.Context, t *txn, stmts []Statement) ([]participants.Result, error) {
	// A two-phase Run is admitted before it opens any branch, so that one
	// waiting for admission holds no connection (see admission.go).
	var adm *admission
	if twoPhase(t.opts, stmts) {
		names := make([]string, len(stmts))
		for i, st := range stmts {
			names[i] = st.Participant
		}
		var err error
		if adm, err = c.admit(ctx, names); err != nil {
			return nil, c.abortLocked(t, "", err)
		}
	}
	handedOff := false
	defer func() {
		if !handedOff {
			adm.releaseAll()
		}
	}()
	results := make([]participants.Result, len(stmts))
	var queued map[string][]int // participant → indexes of its queued statements
	for i, st := range stmts {
		ok, err := c.queueLocked(ctx, t, st)
		if err != nil {
			return nil, err
		}
		if ok {
			if queued == nil {
				queued = map[string][]int{}
			}
			queued[st.Participant] = append(queued[st.Participant], i)
			continue
		}
		if results[i], err = c.execLocked(ctx, t, st); err != nil {
			return nil, err
		}
	}
	handedOff = true
	if err := c.commitWith(ctx, t, adm); err != nil {
		return nil, err
	}
	for name, idx := range queued {
		t.mu.Lock()
		br := t.branches[name]
		t.mu.Unlock()
		res := br.b.(participants.Queuer).QueuedResults()
		if len(res) != len(idx) {
			panic(fmt.Sprintf("coordinator: branch %s returned %d results for %d queued statements after a successful commit", br.gid, len(res), len(idx)))
		}
		for j, i := range idx {
			results[i] = res[j]
		}
	}
	return results, nil
}

// queueLocked queues st on its participant's branch (opening the branch if
// needed) when the branch queues, and reports whether it did. A statement
// the branch refuses at once aborts the transaction, like a failed Execute.
func (c *Coordinator) queueLocked(ctx context.Context, t *txn, st Statement) (bool, error) {
	t.mu.Lock()
	if _, _, err := Transition(t.state, EvExecute); err != nil {
		state := t.state
		t.mu.Unlock()
		return false, fmt.Errorf("%w: %s is %s; Execute needs ACTIVE", ErrNotActive, t.id, state)
	}
	if max := c.lim().MaxStatements; t.statements >= max {
		t.mu.Unlock()
		return false, fieldErr("statement", "transaction already ran %d statements (max_statements)", max)
	}
	br := t.branches[st.Participant]
	t.mu.Unlock()
	if br == nil {
		var err error
		if br, err = c.openBranchLocked(ctx, t, st.Participant); err != nil {
			return false, err
		}
	}
	q, ok := br.b.(participants.Queuer)
	if !ok {
		return false, nil
	}
	t.mu.Lock()
	t.statements++
	t.mu.Unlock()
	if err := q.Queue(st.Op); err != nil {
		t.mu.Lock()
		br.state, br.err = BranchFailed, err
		t.note(c.now(), "STATEMENT_FAILED", st.Participant, err.Error())
		t.mu.Unlock()
		return false, c.abortLocked(t, st.Participant, err)
	}
	return true, nil
}

// openBranchLocked opens the transaction's branch on a participant; the
// caller holds t.opMu. A failure aborts the transaction.
func (c *Coordinator) openBranchLocked(ctx context.Context, t *txn, participant string) (*branch, error) {
	ctx, cancel := context.WithDeadline(ctx, t.deadline)
	defer cancel()
	p := c.parts[participant]
	gid := c.GID(t.id, participant)
	b, err := p.Begin(ctx, gid, participants.BranchOptions{Isolation: t.opts.Isolation, Deadline: t.deadline})
	if err != nil {
		return nil, c.abortLocked(t, participant, fmt.Errorf("open branch: %w", err))
	}
	br := &branch{p: p, b: b, gid: gid, state: BranchActive}
	t.mu.Lock()
	t.note(c.now(), "BRANCH_OPENED", participant, gid)
	t.branches[participant] = br
	t.order = append(t.order, participant)
	t.mu.Unlock()
	return br, nil
}

// commitLocked runs the commit protocol; the caller holds t.opMu.
func (c *Coordinator) commitLocked(ctx context.Context, t *txn) error {
	return c.commitWith(ctx, t, nil)
}

// commitWith runs the commit protocol with the admission slots the
// transaction already holds (nil: it takes them before preparing, if it
// needs two phases). It owns adm: every slot is given back when its
// branch's phase two is acknowledged, or when the transaction ends
// otherwise. The caller holds t.opMu.
func (c *Coordinator) commitWith(ctx context.Context, t *txn, adm *admission) error {
	handedOff := false // to the phase-two goroutine
	defer func() {
		if !handedOff {
			adm.releaseAll()
		}
	}()
	t.mu.Lock()
	state := t.state
	switch state {
	case StateCommitted, StateCommitting:
		t.mu.Unlock()
		return nil
	case StateAborted, StateAborting:
		err := t.err
		t.mu.Unlock()
		return err
	case StateInDoubt:
		t.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrOutcomeUnknown, t.id)
	}
	if _, _, err := Transition(state, EvCommit); err != nil {
		t.mu.Unlock()
		return fmt.Errorf("%w: %s is %s", ErrNotActive, t.id, state)
	}
	if c.now().After(t.deadline) {
		t.mu.Unlock()
		return c.abortLocked(t, "", fmt.Errorf("timed out after %s before commit", t.opts.Timeout))
	}
	t.state = StatePreparing
	t.note(c.now(), "COMMIT_REQUESTED", "", fmt.Sprintf("%d branches", len(t.order)))
	brs := make([]*branch, 0, len(t.order))
	for _, name := range t.order {
		brs = append(brs, t.branches[name])
	}
	t.mu.Unlock()

	// The prepare phase and everything after it ignore the client's
	// cancellation: a half-prepared transaction must be finished by us.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PrepareTimeout)
	defer cancel()

	switch len(brs) {
	case 0:
		c.finish(t, StateCommitted)
		return nil
	case 1:
		if t.opts.IdempotencyKey == "" {
			return c.commitOnePhase(pctx, t, brs[0])
		}
	}

	if adm == nil {
		names := make([]string, len(brs))
		for i, br := range brs {
			names[i] = br.p.Name()
		}
		var err error
		if adm, err = c.admit(context.WithoutCancel(ctx), names); err != nil {
			return c.abortLocked(t, "", err)
		}
		// The wait for admission does not eat into the prepare timeout.
		var pcancel context.CancelFunc
		pctx, pcancel = context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PrepareTimeout)
		defer pcancel()
	}

	// From here until its decision is queued (or it aborts), the
	// transaction counts as preparing: a flight may linger for it (decide.go).
	c.preparing.Add(1)
	notPreparing := sync.OnceFunc(func() { c.preparing.Add(-1) })
	defer notPreparing()

	// Phase one: prepare all branches in parallel (the first on this
	// goroutine, whose stack is already grown: fewer goroutines to start).
	prepareOne := func(br *branch) {
		vote, err := br.b.Prepare(pctx)
		t.mu.Lock()
		defer t.mu.Unlock()
		br.vote, br.err = vote, err
		detail := vote.String()
		if err != nil {
			detail += ": " + err.Error()
		}
		t.note(c.now(), "VOTE", br.p.Name(), detail)
		switch {
		case err == nil && vote == participants.VoteYes:
			br.state = BranchPrepared
			br.receipt = participants.BranchReceipt(br.b)
		case err == nil && vote == participants.VoteReadOnly:
			br.state = BranchReadOnly
		default:
			br.state = BranchFailed
			if err == nil {
				br.err = fmt.Errorf("%w: prepare returned vote %s without an error", participants.ErrVoteNo, vote)
			}
		}
	}
	var wg sync.WaitGroup
	for _, br := range brs[1:] {
		wg.Add(1)
		go func(br *branch) {
			defer wg.Done()
			prepareOne(br)
		}(br)
	}
	prepareOne(brs[0])
	wg.Wait()

	var yes []string
	var receipts map[string]string
	for _, br := range brs {
		if br.state == BranchFailed {
			return c.abortLocked(t, br.p.Name(), fmt.Errorf("prepare: %w", br.err))
		}
		if br.state == BranchPrepared {
			yes = append(yes, br.p.Name())
			if br.receipt != "" {
				if receipts == nil {
					receipts = make(map[string]string, len(brs))
				}
				receipts[br.p.Name()] = br.receipt
			}
		}
	}
	for _, br := range brs {
		if br.state == BranchReadOnly { // it left the protocol
			adm.release(br.p.Name())
		}
	}
	if len(yes) == 0 { // every branch was read-only: nothing to decide
		c.finish(t, StateCommitted)
		return nil
	}
	c.failpoint(FailBeforeDecision)

	// The decision: durable on a Raft quorum before any COMMIT is sent.
	rec := &wal.Record{TxID: t.id, Outcome: wal.OutcomeCommit, Participants: yes, Receipts: receipts, Labels: t.opts.Labels,
		CreatedMs: t.created.UnixMilli(), DecidedMs: c.now().UnixMilli(), IdempotencyKey: t.opts.IdempotencyKey}
	notPreparing()
	applied, stored, err := c.applyDecision(rec)
	t.mu.Lock()
	t.stored = stored
	t.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			c.log.Warn("decision outcome unknown; recovery will resolve it", "txid", t.id, "err", err)
			t.mu.Lock()
			t.err = err
			t.note(c.now(), "OUTCOME_UNKNOWN", "", err.Error())
			t.mu.Unlock()
			c.finish(t, StateInDoubt)
			return err
		}
		return c.abortLocked(t, "", fmt.Errorf("decision not logged: %w", err))
	}
	if applied.Outcome != wal.OutcomeCommit { // an earlier abort decision won (txctl resolve)
		return c.abortLocked(t, "", fmt.Errorf("an abort decision was logged first: %s", applied.Reason))
	}
	t.mu.Lock()
	t.state = StateCommitting
	t.note(c.now(), "DECISION", "", fmt.Sprintf("COMMIT logged at raft index %d term %d", applied.Index, applied.Term))
	t.mu.Unlock()
	c.failpoint(FailAfterDecision)

	// Phase two. Reply once every branch acknowledged, or after
	// CommitReplyWait: the decision is durable, so COMMITTED is the truth
	// either way; the rest goes on in the background until acknowledged.
	done := make(chan struct{})
	c.wg.Add(1)
	handedOff = true
	go func() {
		defer c.wg.Done()
		defer adm.releaseAll() // branches left to recovery
		c.commitBranches(t, brs, applied.Term, adm)
		c.unstoredHold()
		t.mu.Lock()
		t.state = StateCommitted
		// A branch left unacknowledged (no longer leading; or not prepared
		// at its participant, which only an operator can explain) keeps the
		// decision open: recovery or txctl finish it, so no done mark.
		acked := true
		for _, br := range brs {
			acked = acked && (br.state != BranchPrepared)
		}
		t.mu.Unlock()
		c.failpoint(FailBeforeForget)
		if acked {
			c.markDone(t.id)
		}
		close(done) // the reply need not wait for finish's wait for the store
		c.finish(t, StateCommitted)
	}()
	if t.opts.AckDecision {
		return nil
	}
	select {
	case <-done:
	case <-time.After(c.cfg.CommitReplyWait):
		c.log.Warn("phase two still running; replying COMMITTED", "txid", t.id)
	}
	return nil
}

func (c *Coordinator) commitOnePhase(ctx context.Context, t *txn, br *branch) error {
	err := br.b.CommitOnePhase(ctx)
	t.mu.Lock()
	switch {
	case err == nil:
		br.state = BranchCommitted
		t.mu.Unlock()
		c.finish(t, StateCommitted)
		return nil
	case errors.Is(err, participants.ErrAmbiguous):
		br.state, br.err = BranchFailed, err
		t.err = fmt.Errorf("%w: one-phase commit on %q: %v", ErrOutcomeUnknown, br.p.Name(), err)
		uerr := t.err
		t.mu.Unlock()
		c.finish(t, StateInDoubt)
		return uerr
	default:
		br.state, br.err = BranchFailed, err
		t.mu.Unlock()
		return c.abortLocked(t, br.p.Name(), fmt.Errorf("commit: %w", err))
	}
}

// applyDecision appends a decision to the Raft log (in the next flight, see
// decide.go) and waits for it to be applied: committed on a quorum and
// applied in the leader's decision store, whose own commit may still be
// under way; the channel returned closes once it is done (or waiting for
// it ended). ErrNotLeader and ErrEnqueueTimeout mean the entry was never
// appended (definitely not decided); other failures leave the outcome
// unknown (invariant 3).
func (c *Coordinator) applyDecision(rec *wal.Record) (*wal.Record, <-chan struct{}, error) {
	req := decideReq{rec: rec, slot: make(chan flightSlot, 1)}
	// Queueing is bounded like raft's own enqueue (ApplyTimeout): a decision
	// that never got into a flight was never appended, so not decided.
	enqueue := time.NewTimer(c.cfg.ApplyTimeout)
	defer enqueue.Stop()
	select {
	case c.decideQ <- req:
	case <-enqueue.C:
		return nil, nil, fmt.Errorf("%w: %v (the decision queue stayed full)", ErrUnavailable, raft.ErrEnqueueTimeout)
	case <-c.stop:
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, raft.ErrRaftShutdown)
	}
	var slot flightSlot
	select {
	case slot = <-req.slot:
	case <-c.stop:
		// Queued, perhaps appended: not known.
		return nil, nil, fmt.Errorf("%w: raft apply: %v", ErrOutcomeUnknown, raft.ErrRaftShutdown)
	}
	select {
	case <-slot.flight.done:
	case <-c.stop:
		return nil, nil, fmt.Errorf("%w: raft apply: %v", ErrOutcomeUnknown, raft.ErrRaftShutdown)
	}
	stored := slot.flight.stored
	if err := slot.flight.err; err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, stored, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return nil, stored, fmt.Errorf("%w: raft apply: %v", ErrOutcomeUnknown, err)
	}
	res := slot.result()
	if res.Err != nil {
		return nil, stored, res.Err
	}
	if res.Record == nil {
		// The store skipped the entry (its applied index is past it): the
		// decision's fate is not what this entry says. Start-up refuses such
		// a store; if it happens anyway, the outcome is unknown.
		return nil, stored, fmt.Errorf("%w: the decision entry was skipped by the decision store", ErrOutcomeUnknown)
	}
	return res.Record, stored, nil
}

// stillLeading fences phase two: only the leader of the term in which the
// decision was applied (or a later term's leader, which recovers it) may
// send phase-two messages (invariant 5).
func (c *Coordinator) stillLeading(term uint64) bool {
	return c.raft.State() == raft.Leader && (term == 0 || c.raft.CurrentTerm() >= term)
}

// commitBranches commits every prepared branch, retrying each with backoff
// until acknowledged or until this node stops leading (the next leader's
// recovery takes over). With FailMidCommit armed, branches commit one after
// another so the failpoint falls between two commits.
func (c *Coordinator) commitBranches(t *txn, brs []*branch, term uint64, adm *admission) {
	var targets []*branch
	for _, br := range brs {
		if br.state == BranchPrepared {
			targets = append(targets, br)
		}
	}
	commitOne := func(br *branch) {
		err := c.retryPhaseTwo(br.p, br.gid, br.receipt, term, true, c.retryNoter(t, br))
		t.mu.Lock()
		if err == nil {
			br.state = BranchCommitted
			t.note(c.now(), "COMMITTED", br.p.Name(), "")
		} else {
			br.err = err
			t.note(c.now(), "COMMIT_LEFT_TO_RECOVERY", br.p.Name(), err.Error())
		}
		t.mu.Unlock()
		adm.release(br.p.Name())
	}
	if c.armed(FailMidCommit) {
		for i, br := range targets {
			commitOne(br)
			if i == 0 {
				c.failpoint(FailMidCommit)
			}
		}
		return
	}
	if len(targets) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, br := range targets[1:] {
		wg.Add(1)
		go func(br *branch) {
			defer wg.Done()
			commitOne(br)
		}(br)
	}
	commitOne(targets[0])
	wg.Wait()
}

// rollbackBranches rolls back every branch of a transaction that will not
// commit: unprepared ones locally, possibly prepared ones by GID, retried.
func (c *Coordinator) rollbackBranches(t *txn) {
	t.mu.Lock()
	brs := make([]*branch, 0, len(t.order))
	for _, name := range t.order {
		brs = append(brs, t.branches[name])
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, br := range brs {
		wg.Add(1)
		go func(br *branch) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CallTimeout)
			if err := br.b.Rollback(ctx); err != nil {
				c.log.Debug("rollback of unprepared branch", "gid", br.gid, "err", err)
			}
			cancel()
			// A YES vote, or a prepare whose result we do not know, may have
			// left a prepared branch behind: roll it back by GID.
			mayBePrepared := br.state == BranchPrepared ||
				(br.state == BranchFailed && errors.Is(br.err, participants.ErrAmbiguous))
			if mayBePrepared {
				if err := c.retryPhaseTwo(br.p, br.gid, "", 0, false, c.retryNoter(t, br)); err != nil {
					c.log.Warn("rollback left to recovery", "gid", br.gid, "err", err)
					return
				}
			}
			t.mu.Lock()
			if br.state != BranchFailed && br.state != BranchReadOnly {
				br.state = BranchRolledBack
			}
			t.note(c.now(), "ROLLED_BACK", br.p.Name(), "")
			t.mu.Unlock()
		}(br)
	}
	wg.Wait()
}

// errNotLeading stops phase-two retries on a deposed leader.
var errNotLeading = errors.New("no longer the leader; the next leader recovers this branch")

// retryPhaseTwo sends COMMIT PREPARED (commit=true, with the branch's
// receipt) or ROLLBACK PREPARED for gid until the participant acknowledges, backing off exponentially between
// RetryMin and RetryMax. It runs on a context the client cannot cancel and
// gives up only when this node stops leading or the coordinator stops.
func (c *Coordinator) retryPhaseTwo(p participants.Participant, gid, receipt string, term uint64, commit bool, onRetry func(error)) error {
	backoff := c.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		if commit && !c.stillLeading(term) {
			return errNotLeading
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CallTimeout)
		var err error
		if commit {
			err = participants.CommitPreparedReceipt(ctx, p, gid, receipt)
		} else {
			err = p.RollbackPrepared(ctx, gid)
		}
		cancel()
		if err == nil {
			return nil
		}
		if commit && errors.Is(err, participants.ErrNotPrepared) {
			// The decision says commit but the branch is gone: only an
			// operator can tell what happened (restored backup?). Keep the
			// record not-done so txctl shows it; do not spin.
			c.log.Error("committed branch is not prepared at its participant", "gid", gid, "participant", p.Name(), "err", err)
			return err
		}
		if onRetry != nil {
			onRetry(err)
		}
		c.log.Warn("phase two failed; retrying", "gid", gid, "participant", p.Name(), "commit", commit, "attempt", attempt, "backoff", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-c.stop:
			return errors.New("coordinator stopping")
		}
		backoff *= 2
		if backoff > c.cfg.RetryMax {
			backoff = c.cfg.RetryMax
		}
	}
}

// retryNoter counts a branch's failed phase-two attempts on its timeline.
func (c *Coordinator) retryNoter(t *txn, br *branch) func(error) {
	return func(err error) {
		t.mu.Lock()
		br.retries++
		t.note(c.now(), "RETRY", br.p.Name(), err.Error())
		t.mu.Unlock()
	}
}

// markDone queues a txid for the batched done mark. Dropping one when the
// queue is full is safe: the record stays not-done and the periodic
// recovery re-commits (a no-op) and marks it.
func (c *Coordinator) markDone(txid string) {
	c.mu.Lock()
	c.marking[txid] = struct{}{}
	c.mu.Unlock()
	select {
	case c.doneCh <- txid:
	default:
		c.mu.Lock()
		delete(c.marking, txid)
		c.mu.Unlock()
		c.log.Warn("done queue full; recovery will mark the transaction", "txid", txid)
	}
}

// doneMarkInterval is how often queued done marks are logged (sooner when
// maxDoneBatch are queued). Every Raft entry costs a round of fsyncs on each
// node (log and decision store): at 20 ms, done marks made as many Raft
// batches as the decisions themselves at 300 transactions/s. Nothing waits
// for a done mark: it only lets recovery skip a finished record and
// retention forget it.
const doneMarkInterval = 100 * time.Millisecond

// doneLoop batches done marks into one Raft entry per doneMarkInterval.
func (c *Coordinator) doneLoop() {
	defer c.wg.Done()
	const maxBatch = 512 // keeps one entry well under raft's size comfort zone
	tick := time.NewTicker(doneMarkInterval)
	defer tick.Stop()
	var batch []string
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if c.raft.State() == raft.Leader {
			f := c.raft.Apply(wal.Command{Type: wal.CmdDone, TxIDs: batch, AtMs: c.now().UnixMilli()}.Encode(), c.cfg.ApplyTimeout)
			if err := c.wait(f); err != nil {
				c.log.Warn("done marks not logged; recovery will retry", "count", len(batch), "err", err)
			}
		}
		c.mu.Lock()
		for _, id := range batch {
			delete(c.marking, id)
		}
		c.mu.Unlock()
		batch = nil
	}
	for {
		select {
		case id := <-c.doneCh:
			batch = append(batch, id)
			if len(batch) >= maxBatch {
				flush()
			}
		case <-tick.C:
			flush()
		case <-c.stop:
			flush()
			return
		}
	}
}
