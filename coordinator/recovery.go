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

// Start runs start-up recovery once this node leads, then serves, and keeps
// the periodic in-doubt scan and the done-mark batcher running until Stop.
// It returns when the first recovery pass finished (or RecoveryStartupWait
// passed, leaving the rest to the background) or ctx ends.
func (c *Coordinator) Start(ctx context.Context) error {
	c.wg.Add(1)
	go c.doneLoop()
	// Wait to lead (a single-voter cluster elects itself at once).
	for c.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return errors.New("coordinator stopped")
		case <-time.After(20 * time.Millisecond):
		}
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RecoveryStartupWait)
	rep, err := c.Recover(rctx)
	cancel()
	if err != nil {
		c.log.Warn("start-up recovery incomplete; continuing in the background", "err", err)
	}
	c.log.Info("start-up recovery done", "committed", rep.Committed, "rolled_back", rep.RolledBack,
		"left", rep.Left, "took", rep.Took)
	c.ready.Store(true)
	c.wg.Add(1)
	go c.scanLoop()
	return nil
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

// Ready reports whether start-up recovery is done.
func (c *Coordinator) Ready() bool { return c.ready.Load() }

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
		if c.raft.State() != raft.Leader {
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
				cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
				commit := rec != nil && rec.Outcome == wal.OutcomeCommit
				if commit {
					if !c.stillLeading(term) {
						cancel()
						return
					}
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

// forgetOld deletes done records older than the retention, in bounded batches.
func (c *Coordinator) forgetOld() {
	cutoff := c.now().Add(-c.cfg.Retention).UnixMilli()
	recs, err := c.store.List(wal.Filter{DoneBeforeMs: cutoff, Limit: 1024})
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
	}
}
