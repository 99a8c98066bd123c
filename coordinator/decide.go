package coordinator

import (
	"fmt"
	"time"

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
// futures allow only one waiter) before done is closed.
type flight struct {
	done chan struct{}
	err  error
	res  *wal.ApplyResult
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
		fl := &flight{done: make(chan struct{})}
		for i, r := range batch {
			idx := i
			if len(batch) == 1 {
				idx = -1
			}
			r.slot <- flightSlot{flight: fl, index: idx}
		}
		f := c.raft.Apply(cmd.Encode(), c.cfg.ApplyTimeout)
		fl.err = c.wait(f)
		if fl.err == nil {
			res, ok := f.Response().(*wal.ApplyResult)
			if !ok {
				panic(fmt.Sprintf("coordinator: decision entry returned %T", f.Response()))
			}
			fl.res = res
		}
		if o, ok := c.cfg.Observer.(FlightObserver); ok {
			o.FlightApplied(len(batch), sent.Sub(lingerFrom), time.Since(sent))
		}
		close(fl.done)
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
