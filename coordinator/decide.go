package coordinator

import (
	"bytes"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/wal"
)

// Decisions are handed to Raft in flights: while one flight is replicated
// and applied, new decisions queue, and the next flight appends them all
// at once, as one log entry (wal.CmdDecideMany; a flight of one is a plain
// CmdDecide), so each Raft round — log append, replication, decision-store
// transaction, on every node — carries many decisions for the per-entry
// cost of one. A decision that finds no flight in progress goes at once,
// so a lone transaction waits for nothing.

// A small flight may linger (Config.DecisionLinger): when it would leave
// with fewer than lingerFlight decisions while other transactions of this
// node are still preparing, it waits for their decisions — until it holds
// lingerFlight, none is preparing any more, or the linger is over. Each
// Raft entry costs a log append, replication and a decision-store
// transaction on every node, two fdatasyncs each, whatever it carries;
// when decisions arrive spread out (a few hundred a second behind slow
// participants) most flights carried one or two, and those fixed costs
// were most of the coordinators' CPU. A flight that is already large
// gains little from more and does not wait (measured: waiting there only
// added latency), and a transaction deciding alone never waits: nothing
// else is preparing.

// lingerFlight is the flight size past which a flight does not linger.
const lingerFlight = 8

// maxFlight bounds the decisions of one flight, and so one entry's size
// (a decision record is a few hundred bytes).
const maxFlight = 256

// decideReq is one decision waiting for a flight; the flight hands back
// where its outcome will be.
type decideReq struct {
	rec  *wal.Record
	slot chan flightSlot // buffered, 1
}

// flightSlot is a decision's place in a flight: the flight's outcome and
// the decision's index in it (-1 when the flight is a single CmdDecide).
type flightSlot struct {
	flight *flight
	index  int
}

// flight is the outcome of one flight's entry, filled by decideLoop (Raft
// futures allow only one waiter) before done is closed. done closes once
// the entry is applied (entryApplied), stored once the decision store has
// also committed it, or when waiting for that ended (an error, a timeout,
// Stop).
type flight struct {
	done   chan struct{}
	stored chan struct{}
	err    error
	res    *wal.ApplyResult
}

// result is the decision's own ApplyResult once the flight is done and
// succeeded: an error of the whole entry is every decision's; an entry the
// store skipped (its applied index was past it) gives a result without a
// record, which the caller reports as unknown.
func (s flightSlot) result() *wal.ApplyResult {
	res := s.flight.res
	if s.index < 0 || res.Err != nil {
		return res
	}
	if s.index < len(res.Batch) {
		return &res.Batch[s.index]
	}
	return &wal.ApplyResult{}
}

// decideLoop runs the flights until Stop: one entry per flight, waited for
// (bounded by wait's timeout) before the next flight goes.
func (c *Coordinator) decideLoop() {
	defer c.wg.Done()
	batch := make([]decideReq, 0, maxFlight)
	for {
		batch = batch[:0]
		select {
		case <-c.stop:
			return
		case r := <-c.decideQ:
			batch = append(batch, r)
		}
	drain:
		for len(batch) < maxFlight {
			select {
			case r := <-c.decideQ:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		lingerFrom := time.Now()
		batch = c.linger(batch)
		sent := time.Now()
		cmd := wal.Command{Type: wal.CmdDecide, Decision: batch[0].rec}
		if len(batch) > 1 {
			cmd = wal.Command{Type: wal.CmdDecideMany, Decisions: make([]*wal.Record, len(batch))}
			for i, r := range batch {
				cmd.Decisions[i] = r.rec
			}
		}
		fl := &flight{done: make(chan struct{}), stored: make(chan struct{})}
		for i, r := range batch {
			idx := i
			if len(batch) == 1 {
				idx = -1
			}
			r.slot <- flightSlot{flight: fl, index: idx}
		}
		n := len(batch)
		c.fly(fl, cmd.Encode(), func() {
			if o, ok := c.cfg.Observer.(FlightObserver); ok {
				o.FlightApplied(n, sent.Sub(lingerFrom), time.Since(sent))
			}
		})
	}
}

// fly appends a flight's entry and fills fl: done closes when the entry is
// applied (or failed), after applied is called, and stored when the
// decision store has committed the entry too. fly returns after both, so
// one flight is pending at a time and entryApplied needs to match just it.
// Every wait is bounded by FutureTimeout.
func (c *Coordinator) fly(fl *flight, data []byte, applied func()) {
	defer close(fl.stored)
	pf := &pendingFlight{data: data, applied: make(chan *wal.ApplyResult, 1)}
	c.pending.Store(pf)
	defer c.pending.Store(nil)
	f := c.raft.Apply(data, c.cfg.ApplyTimeout)
	stored := make(chan error, 1)
	go func() { stored <- f.Error() }()
	timeout := time.NewTimer(c.cfg.FutureTimeout)
	defer timeout.Stop()
	select {
	case fl.res = <-pf.applied:
	case fl.err = <-stored:
		if fl.err == nil {
			res, ok := f.Response().(*wal.ApplyResult)
			if !ok {
				panic(fmt.Sprintf("coordinator: decision entry returned %T", f.Response()))
			}
			fl.res = res
		}
		applied()
		close(fl.done)
		return
	case <-timeout.C:
		fl.err = errFutureTimeout
	case <-c.stop:
		fl.err = raft.ErrRaftShutdown
	}
	applied()
	close(fl.done)
	if fl.err != nil {
		return
	}
	select {
	case <-stored:
	case <-timeout.C:
	case <-c.stop:
	}
}

// pendingFlight is a flight's entry as sent to Raft, and where its result
// goes once the entry is applied.
type pendingFlight struct {
	data    []byte
	applied chan *wal.ApplyResult // buffered, 1
}

// entryApplied hands the pending flight its entry's result as soon as the
// entry is applied in the decision store's write transaction, before that
// transaction commits. The entry is committed in the Raft log by then
// (durable on a quorum), and the store replays it from the log after a
// crash before the store's commit (the store's applied index is behind:
// invariant 7), so phase two need not wait for the store's fsync.
func (c *Coordinator) entryApplied(entries []wal.Entry, results []wal.ApplyResult) {
	pf := c.pending.Load()
	if pf == nil {
		return
	}
	for i, e := range entries {
		if bytes.Equal(e.Data, pf.data) {
			r := results[i]
			select {
			case pf.applied <- &r:
			default:
			}
			if c.armed(FailUnstoredDecision) {
				// Crash tests: keep the store from committing this entry
				// until phase two of one of its decisions finished, then
				// crash there. Bounded (phase two may never finish, and
				// chaos arms this with a probability: most holds do not
				// end in a crash).
				hold := time.NewTimer(2 * time.Second)
				select {
				case <-c.unstored:
				case <-hold.C:
				case <-c.stop:
				}
				hold.Stop()
				c.failpoint(FailUnstoredDecision)
			}
			return
		}
	}
}

// unstoredHold tells entryApplied, held under FailUnstoredDecision, that a
// transaction's phase two finished.
func (c *Coordinator) unstoredHold() {
	if c.armed(FailUnstoredDecision) {
		select {
		case c.unstored <- struct{}{}:
		default:
		}
	}
}

// linger adds to batch the decisions of transactions still preparing, for
// at most Config.DecisionLinger (see above), and returns it.
func (c *Coordinator) linger(batch []decideReq) []decideReq {
	if c.cfg.DecisionLinger <= 0 || len(batch) >= lingerFlight || c.preparing.Load() == 0 {
		return batch
	}
	timer := time.NewTimer(c.cfg.DecisionLinger)
	defer timer.Stop()
	for len(batch) < lingerFlight && c.preparing.Load() > 0 {
		select {
		case r := <-c.decideQ:
			batch = append(batch, r)
		case <-timer.C:
			return batch
		case <-c.stop:
			return batch
		}
	}
	return batch
}
