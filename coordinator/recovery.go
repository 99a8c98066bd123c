package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/wal"
)

// Start starts the background work: the leadership watcher (which, each
// time this node becomes leader, runs recovery before serving and, when it
// stops leading, abandons its active transactions), the periodic in-doubt
// scan and the done-mark batcher. They run until Stop.
func (c *Coordinator) Start(ctx context.Context) error {
	c.wg.Add(3)
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
		if err := f.Error(); err != nil {
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
	}
}

// Recover resolves what is in doubt: (a) every decided-but-not-done record
// is driven to completion; (b) every prepared branch with this cluster's
// prefix that has no commit decision and is not in flight on this node is
// rolled back (presumed abort, invariant 2). It first runs a Raft Barrier so
// that every entry of earlier terms is applied before the log is read.
func (c *Coordinator) Recover(ctx context.Context) (RecoveryReport, error) {
	start := time.Now()
	var rep RecoveryReport
	if err := c.raft.Barrier(c.cfg.ApplyTimeout).Error(); err != nil {
		return rep, fmt.Errorf("%w: barrier: %v", ErrUnavailable, err)
	}
	term := c.raft.CurrentTerm()
	var errs []error

	// (a) decided, not done.
	recs, err := c.store.List(wal.Filter{NotDone: true})
	if err != nil {
		return rep, err
	}
	var done []string
	for _, rec := range recs {
		if c.inFlight(rec.TxID) || c.beingMarked(rec.TxID) {
			continue
		}
		ok := true
		for _, pname := range rec.Participants {
			p, known := c.parts[pname]
			if !known {
				errs = append(errs, fmt.Errorf("txid %s: participant %q is not configured", rec.TxID, pname))
				ok = false
				rep.Left++
				continue
			}
			gid := c.GID(rec.TxID, pname)
			cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
			var err error
			if rec.Outcome == wal.OutcomeCommit {
				if !c.stillLeading(term) {
					cancel()
					return rep, errNotLeading
				}
				err = p.CommitPrepared(cctx, gid)
			} else {
				err = p.RollbackPrepared(cctx, gid)
			}
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", rec.Outcome, gid, err))
				ok = false
				rep.Left++
				continue
			}
			if rec.Outcome == wal.OutcomeCommit {
				rep.Committed++
			} else {
				rep.RolledBack++
			}
		}
		if ok {
			done = append(done, rec.TxID)
		}
	}
	if len(done) > 0 {
		f := c.raft.Apply(wal.Command{Type: wal.CmdDone, TxIDs: done, AtMs: c.now().UnixMilli()}.Encode(), c.cfg.ApplyTimeout)
		if err := f.Error(); err != nil {
			errs = append(errs, fmt.Errorf("mark done: %w", err))
		}
	}

	// (b) prepared branches at participants, in parallel per participant.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, p := range c.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
			branches, err := p.InDoubt(lctx, c.prefix)
			cancel()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("list in-doubt on %q: %w", name, err))
				rep.Left++
				mu.Unlock()
				return
			}
			for _, b := range branches {
				txid, _, ok := c.ParseGID(b.GID)
				if !ok {
					continue // not ours (invariant 6)
				}
				// Order matters: check in-flight first, then the log. A
				// transaction leaves the in-flight set only after its
				// decision is applied, so a commit cannot slip between.
				if c.inFlight(txid) {
					continue
				}
				rec, err := c.store.Get(txid)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				commit := rec != nil && rec.Outcome == wal.OutcomeCommit
				if !c.stillLeading(term) {
					return
				}
				if !commit {
					// Fence presumed abort: only a leader confirmed by a
					// quorum right now may roll back a branch that has no
					// decision in its log (a deposed leader's log may lack
					// a newer leader's decision; invariant 5).
					if err := c.raft.VerifyLeader().Error(); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%w: verify leader before presumed abort: %v", errNotLeading, err))
						mu.Unlock()
						return
					}
				}
				cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
				if commit {
					err = p.CommitPrepared(cctx, b.GID)
				} else {
					err = p.RollbackPrepared(cctx, b.GID)
				}
				cancel()
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("resolve %s: %w", b.GID, err))
					rep.Left++
				case commit:
					rep.Committed++
				default:
					rep.RolledBack++
					c.log.Info("presumed abort: rolled back prepared branch", "gid", b.GID, "participant", name)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.Took = time.Since(start)
	return rep, errors.Join(errs...)
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
		if err := f.Error(); err != nil {
			c.log.Warn("forget old decisions", "count", len(ids), "err", err)
			return
		}
		if len(recs) < forgetBatch {
			return
		}
	}
}
