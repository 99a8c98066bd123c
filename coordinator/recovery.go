package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

// Start starts the background work: the leadership watcher (which, each
// time this node becomes leader, runs recovery before serving and, when it
// stops leading, abandons its active transactions), the periodic in-doubt
// scan and the done-mark batcher. They run until Stop.
func (c *Coordinator) Start(ctx context.Context) error {
	c.wg.Add(4)
	go c.decideLoop()
	go c.doneLoop()
	go c.leadershipLoop()
	go c.scanLoop()
	return nil
}

// WaitServing blocks until this node serves transactions or ctx ends.
func (c *Coordinator) WaitServing(ctx context.Context) error {
	for c.serving() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return errors.New("coordinator stopped")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// leadershipLoop follows this node's Raft role. On becoming leader of a
// term: register this node's address, recover, then serve (readyTerm). On
// losing it: stop serving and roll back the transactions still ACTIVE here
// (their clients see them fail; prepared ones are the next leader's to
// resolve, by decision or presumed abort).
func (c *Coordinator) leadershipLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var ledTerm uint64
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		leading := c.raft.State() == raft.Leader
		term := c.raft.CurrentTerm()
		switch {
		case leading && term != ledTerm:
			ledTerm = term
			c.becomeLeader(term)
		case !leading && ledTerm != 0:
			ledTerm = 0
			c.readyTerm.Store(0)
			c.abandonActive()
		}
	}
}

func (c *Coordinator) becomeLeader(term uint64) {
	c.log.Info("became leader; recovering before serving", "term", term)
	c.registerMembers()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RecoveryStartupWait)
	rep, err := c.Recover(ctx)
	cancel()
	if errors.Is(err, errNotLeading) || c.raft.State() != raft.Leader || c.raft.CurrentTerm() != term {
		c.log.Warn("lost leadership during recovery", "term", term)
		return
	}
	if err != nil {
		c.log.Warn("recovery incomplete; continuing in the background", "term", term, "err", err)
	}
	c.log.Info("recovery done; serving", "term", term, "committed", rep.Committed, "rolled_back", rep.RolledBack,
		"left", rep.Left, "took", rep.Took)
	c.readyTerm.Store(term)
}

// registerMembers logs this node's gRPC address (and the configured
// peers') so that followers can send clients to the leader.
func (c *Coordinator) registerMembers() {
	want := map[string]string{}
	for id, addr := range c.cfg.PeerAddrs {
		want[id] = addr
	}
	if c.cfg.NodeID != "" && c.cfg.AdvertiseAddr != "" {
		want[c.cfg.NodeID] = c.cfg.AdvertiseAddr
	}
	have, err := c.store.Members()
	if err != nil {
		return
	}
	for id, addr := range want {
		if have[id] == addr {
			continue
		}
		f := c.raft.Apply(wal.Command{Type: wal.CmdMember, NodeID: id, Addr: addr}.Encode(), c.cfg.ApplyTimeout)
		if err := c.wait(f); err != nil {
			c.log.Warn("could not log member address", "node", id, "err", err)
		}
	}
}

// abandonActive rolls back every transaction still ACTIVE on this node
// after it lost leadership. Transactions in their commit protocol finish it
// on their own (their Raft apply fails or phase two stops at the fence).
func (c *Coordinator) abandonActive() {
	c.mu.Lock()
	var ts []*txn
	for _, t := range c.active {
		ts = append(ts, t)
	}
	c.mu.Unlock()
	if len(ts) > 0 {
		c.log.Warn("lost leadership; rolling back active transactions", "count", len(ts))
	}
	for _, t := range ts {
		go func(t *txn) {
			t.opMu.Lock()
			defer t.opMu.Unlock()
			t.mu.Lock()
			active := t.state == StateActive
			t.mu.Unlock()
			if active {
				c.abortLocked(t, "", errors.New("the coordinator lost leadership"))
			}
		}(t)
	}
}

// Stop ends background work. In-flight phase-two retries give up; the next
// start's recovery finishes them.
func (c *Coordinator) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
}

// Ready reports whether this node leads and has recovered.
func (c *Coordinator) Ready() bool { return c.serving() == nil }

// RecoveryReport counts what a recovery pass did.
type RecoveryReport struct {
	Committed  int // branches committed because the log says COMMIT
	RolledBack int // branches rolled back (abort decision or presumed abort)
	Left       int // branches still unresolved (participant unreachable...)
	Took       time.Duration
}

func (c *Coordinator) scanLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.RecoveryInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		if c.serving() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RecoveryInterval*4)
		rep, err := c.Recover(ctx)
		cancel()
		if err != nil || rep.Committed+rep.RolledBack+rep.Left > 0 {
			c.log.Info("recovery scan", "committed", rep.Committed, "rolled_back", rep.RolledBack, "left", rep.Left, "err", err)
		}
		c.forgetOld()
		c.pruneAudit()
	}
}

// Recover resolves what is in doubt: (a) every decided-but-not-done record
// is driven to completion; (b) every prepared branch with this cluster's
// prefix that has no commit decision and is not in flight on this node is
// rolled back (presumed abort, invariant 2). It first runs a Raft Barrier so
// that every entry of earlier terms is applied before the log is read, and a
// VerifyLeader before the first presumed-abort rollback.
func (c *Coordinator) Recover(ctx context.Context) (RecoveryReport, error) {
	start := time.Now()
	var rep RecoveryReport
	plan, err := c.RecoveryPass(ctx, false)
	for _, a := range plan.Actions {
		switch {
		case a.Action != ActCommit && a.Action != ActRollBack:
		case a.Err != nil:
			rep.Left++
		case a.Action == ActCommit:
			rep.Committed++
		default:
			rep.RolledBack++
		}
	}
	rep.Left += len(plan.Unreachable)
	rep.Took = time.Since(start)
	if o := c.cfg.Observer; o != nil {
		n, oldest := 0, time.Duration(0)
		for _, a := range plan.Actions {
			if a.Ours && a.Action != ActInProgress {
				if a.Err == nil && (a.Action == ActCommit || a.Action == ActRollBack) {
					o.RecoveryAction(strings.ToLower(a.Action.String()), nil)
					continue // resolved by this pass
				}
				if a.Err != nil {
					o.RecoveryAction(strings.ToLower(a.Action.String()), a.Err)
				}
				n++
				if !a.PreparedAt.IsZero() && time.Since(a.PreparedAt) > oldest {
					oldest = time.Since(a.PreparedAt)
				}
			}
		}
		o.InDoubt(n, oldest)
	}
	return rep, err
}

// Action is what recovery does (or would do) about one branch.
type Action int

const (
	ActCommit     Action = iota + 1 // the log says COMMIT
	ActRollBack                     // abort decision, or presumed abort
	ActLeftAlone                    // not this cluster's GID (invariant 6)
	ActInProgress                   // in flight on this leader
)

func (a Action) String() string {
	return [...]string{"", "WILL_COMMIT", "WILL_ROLL_BACK", "LEFT_ALONE", "IN_PROGRESS"}[a]
}

// RecoveryAction is one planned (and maybe executed) step.
type RecoveryAction struct {
	Participant string
	GID         string
	TxID        string // empty for a GID that is not ours
	Ours        bool
	Decision    string // COMMIT, ABORT or NONE
	Heuristic   bool
	Action      Action
	Reason      string
	PreparedAt  time.Time
	Locks       []string
	// Receipt: the branch's receipt, from the decision record or the
	// participant's listing, handed back at COMMIT PREPARED.
	Receipt string
	// NotPrepared: a branch of an undone decision that its participant no
	// longer holds prepared.
	NotPrepared bool
	Err         error // set when executing it failed
}

// RecoveryPlan is a recovery pass: actions in order, the decided records
// whose phase two is unfinished, and participants that could not be listed.
type RecoveryPlan struct {
	Actions     []RecoveryAction
	Undone      []*wal.Record
	Unreachable map[string]error
}

// Plan lists what recovery would do now without doing it. With foreign, it
// also lists prepared branches that are not this cluster's (LEFT_ALONE), as
// txctl in-doubt shows them.
func (c *Coordinator) Plan(ctx context.Context, foreign bool) (RecoveryPlan, error) {
	plan := RecoveryPlan{Unreachable: map[string]error{}}
	if err := c.wait(c.raft.Barrier(c.cfg.ApplyTimeout)); err != nil {
		return plan, fmt.Errorf("%w: barrier: %v", ErrUnavailable, err)
	}
	seen := map[string]int{} // GID → index in plan.Actions
	recs, err := c.store.List(wal.Filter{NotDone: true})
	if err != nil {
		return plan, err
	}
	for _, rec := range recs {
		if c.inFlight(rec.TxID) || c.beingMarked(rec.TxID) {
			continue
		}
		plan.Undone = append(plan.Undone, rec)
		for _, pname := range rec.Participants {
			a := RecoveryAction{Participant: pname, GID: c.GID(rec.TxID, pname), TxID: rec.TxID, Ours: true,
				Decision: rec.Outcome.String(), Heuristic: rec.Heuristic, Receipt: rec.Receipts[pname]}
			a.Action, a.Reason = decisionAction(rec)
			seen[a.GID] = len(plan.Actions)
			plan.Actions = append(plan.Actions, a)
		}
	}

	prefix := c.prefix
	if foreign {
		prefix = ""
	}
	type listing struct {
		name     string
		branches []participants.InDoubtBranch
		err      error
	}
	results := make(chan listing, len(c.parts))
	for name, p := range c.parts {
		go func() {
			lctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
			defer cancel()
			b, err := p.InDoubt(lctx, prefix)
			results <- listing{name, b, err}
		}()
	}
	var found []RecoveryAction
	listed := map[string]map[string]bool{} // participant → GIDs it holds prepared
	for range c.parts {
		l := <-results
		if l.err != nil {
			plan.Unreachable[l.name] = l.err
			continue
		}
		listed[l.name] = map[string]bool{}
		for _, b := range l.branches {
			listed[l.name][b.GID] = true
			if i, ok := seen[b.GID]; ok {
				// A branch of an undone decision, still prepared: show its age and locks.
				plan.Actions[i].PreparedAt, plan.Actions[i].Locks = b.PreparedAt, b.Locks
				if plan.Actions[i].Receipt == "" {
					plan.Actions[i].Receipt = b.Receipt
				}
				continue
			}
			a := RecoveryAction{Participant: l.name, GID: b.GID, PreparedAt: b.PreparedAt, Locks: b.Locks, Decision: "NONE", Receipt: b.Receipt}
			txid, _, ok := c.ParseGID(b.GID)
			switch {
			case !ok:
				a.Action, a.Reason = ActLeftAlone, "not this cluster's GID (prefix "+c.prefix+"): never touched"
			case c.inFlight(txid):
				a.TxID, a.Ours = txid, true
				a.Action, a.Reason = ActInProgress, "the transaction is in flight on this leader"
			default:
				// In-flight is checked before the log: a transaction leaves
				// the in-flight set only after its decision is applied.
				a.TxID, a.Ours = txid, true
				rec, err := c.store.Get(txid)
				if err != nil {
					return plan, err
				}
				if rec != nil {
					a.Decision, a.Heuristic = rec.Outcome.String(), rec.Heuristic
					a.Action, a.Reason = decisionAction(rec)
				} else {
					a.Action, a.Reason = ActRollBack, "no commit decision in the log: presumed abort"
				}
			}
			found = append(found, a)
		}
	}
	for gid, i := range seen {
		a := &plan.Actions[i]
		if l, ok := listed[a.Participant]; ok && !l[gid] {
			a.Reason += "; the branch is no longer prepared at the participant (already applied, or gone)"
			a.NotPrepared = true
		}
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].Participant != found[j].Participant {
			return found[i].Participant < found[j].Participant
		}
		return found[i].GID < found[j].GID
	})
	plan.Actions = append(plan.Actions, found...)
	return plan, nil
}

func decisionAction(rec *wal.Record) (Action, string) {
	how := fmt.Sprintf("the log says %s (raft index %d)", rec.Outcome, rec.Index)
	if rec.Heuristic {
		how = fmt.Sprintf("heuristic decision %s by an operator: %s", rec.Outcome, rec.Reason)
	}
	if rec.Outcome == wal.OutcomeCommit {
		return ActCommit, how
	}
	return ActRollBack, how
}

// RecoveryPass plans one recovery pass and, unless dryRun, executes it:
// commits and rollbacks on the participants, then done marks for the
// decided records whose every branch acknowledged. Each action's Err says
// how it went.
func (c *Coordinator) RecoveryPass(ctx context.Context, dryRun bool) (RecoveryPlan, error) {
	term := c.raft.CurrentTerm()
	plan, err := c.Plan(ctx, false)
	if err != nil || dryRun {
		return plan, err
	}
	var errs []error
	for name, uerr := range plan.Unreachable {
		errs = append(errs, fmt.Errorf("list in-doubt on %q: %w", name, uerr))
	}
	verified := false
	failed := map[string]bool{} // txids with a failed action
	var mu sync.Mutex
	var wg sync.WaitGroup
	// One goroutine per participant; actions on one participant run in order.
	byPart := map[string][]int{}
	for i, a := range plan.Actions {
		if a.Action == ActCommit || a.Action == ActRollBack {
			byPart[a.Participant] = append(byPart[a.Participant], i)
		}
	}
	for _, i := range flatten(byPart) {
		if plan.Actions[i].Action == ActRollBack && plan.Actions[i].Decision == "NONE" && !verified {
			// Fence presumed abort: only a leader confirmed by a quorum now
			// may roll back a branch with no decision in its log (a deposed
			// leader's log may lack a newer leader's decision; invariant 5).
			// Every branch in the plan was listed before this check.
			if err := c.wait(c.raft.VerifyLeader()); err != nil {
				return plan, fmt.Errorf("%w: verify leader before presumed abort: %v", errNotLeading, err)
			}
			verified = true
		}
	}
	if !c.stillLeading(term) {
		return plan, errNotLeading
	}
	for pname, idxs := range byPart {
		p, known := c.parts[pname]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range idxs {
				a := &plan.Actions[i]
				var err error
				switch {
				case !known:
					err = fmt.Errorf("participant %q is not configured", pname)
				case !c.stillLeading(term):
					err = errNotLeading
				default:
					cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
					if a.Action == ActCommit {
						err = participants.CommitPreparedReceipt(cctx, p, a.GID, a.Receipt)
					} else {
						err = p.RollbackPrepared(cctx, a.GID)
					}
					cancel()
				}
				mu.Lock()
				a.Err = err
				if err != nil {
					failed[a.TxID] = true
					errs = append(errs, fmt.Errorf("%s %s: %w", a.Action, a.GID, err))
				} else if a.Decision == "NONE" {
					c.log.Info("presumed abort: rolled back prepared branch", "gid", a.GID, "participant", pname)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var done []string
	for _, rec := range plan.Undone {
		if !failed[rec.TxID] {
			done = append(done, rec.TxID)
		}
	}
	if len(done) > 0 {
		f := c.raft.Apply(wal.Command{Type: wal.CmdDone, TxIDs: done, AtMs: c.now().UnixMilli()}.Encode(), c.cfg.ApplyTimeout)
		if err := c.wait(f); err != nil {
			errs = append(errs, fmt.Errorf("mark done: %w", err))
		}
	}
	return plan, errors.Join(errs...)
}

func flatten(m map[string][]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v...)
	}
	return out
}

// beingMarked: phase two finished here and the done mark is on its way.
func (c *Coordinator) beingMarked(txid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.marking[txid]
	return ok
}

func (c *Coordinator) inFlight(txid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.active[txid]
	return ok
}

// forgetOld deletes done records older than the retention, in batches of
// forgetBatch entries and at most forgetBatches batches per scan (so one
// scan's Raft traffic is bounded; a backlog drains over a few scans).
func (c *Coordinator) forgetOld() {
	const forgetBatch, forgetBatches = 1024, 64
	cutoff := c.now().Add(-c.cfg.Retention).UnixMilli()
	for i := 0; i < forgetBatches; i++ {
		recs, err := c.store.List(wal.Filter{DoneBeforeMs: cutoff, Limit: forgetBatch})
		if err != nil || len(recs) == 0 {
			return
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.TxID
		}
		f := c.raft.Apply(wal.Command{Type: wal.CmdForget, TxIDs: ids}.Encode(), c.cfg.ApplyTimeout)
		if err := c.wait(f); err != nil {
			c.log.Warn("forget old decisions", "count", len(ids), "err", err)
			return
		}
		if len(recs) < forgetBatch {
			return
		}
	}
}
