package coordinator

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/wal"
)

// A decision that cannot get into a flight within ApplyTimeout was never
// appended: applyDecision says unavailable (definitely not decided), not
// unknown, and does not wait longer.
func TestApplyDecisionEnqueueIsBounded(t *testing.T) {
	c := &Coordinator{cfg: Config{ApplyTimeout: 20 * time.Millisecond}, decideQ: make(chan decideReq), stop: make(chan struct{})}
	_, _, err := c.applyDecision(&wal.Record{TxID: "x", Outcome: wal.OutcomeCommit})
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a decision that never left the queue: want ErrUnavailable, got %v", err)
	}
}

// Decisions queued together go to Raft as one entry (CmdDecideMany), and
// each requester gets its own decision's result from it — including a
// conflict, when an earlier decision for the same txid won.
func TestFlightIsOneEntry(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	c := &Coordinator{cfg: h.c.cfg, raft: h.r, decideQ: make(chan decideReq, 8), stop: make(chan struct{})}
	recs := []*wal.Record{
		{TxID: h.c.newTxID(), Outcome: wal.OutcomeCommit, Participants: []string{"a"}},
		{TxID: h.c.newTxID(), Outcome: wal.OutcomeCommit, Participants: []string{"a", "b"}},
	}
	recs = append(recs, &wal.Record{TxID: recs[0].TxID, Outcome: wal.OutcomeAbort}) // loses to recs[0]
	reqs := make([]decideReq, len(recs))
	for i, r := range recs {
		reqs[i] = decideReq{rec: r, slot: make(chan flightSlot, 1)}
		c.decideQ <- reqs[i] // queued before the loop runs: one flight
	}
	lastBefore := h.r.LastIndex()
	c.wg.Add(1)
	go c.decideLoop()
	defer func() { close(c.stop); c.wg.Wait() }()
	for i, req := range reqs {
		slot := <-req.slot
		select {
		case <-slot.flight.done:
		case <-time.After(5 * time.Second):
			t.Fatal("flight never finished")
		}
		if slot.flight.err != nil || slot.index != i {
			t.Fatalf("decision %d: flight err %v, index %d", i, slot.flight.err, slot.index)
		}
		res := slot.result()
		if res.Err != nil || res.Record == nil || res.Record.TxID != recs[i].TxID {
			t.Fatalf("decision %d: result %+v", i, res)
		}
		if conflict := i == 2; res.Conflict != conflict || res.Record.Outcome != wal.OutcomeCommit {
			t.Fatalf("decision %d: conflict %v, outcome %s", i, res.Conflict, res.Record.Outcome)
		}
	}
	if n := h.r.LastIndex() - lastBefore; n != 1 {
		t.Fatalf("the flight took %d log entries, want 1", n)
	}
	for _, r := range recs[:2] {
		if got, _ := h.store.Get(r.TxID); got == nil || got.Outcome != wal.OutcomeCommit {
			t.Fatalf("decision of %s not in the store: %+v", r.TxID, got)
		}
	}
}

// A flight lingers for the decisions of transactions still preparing: it
// carries them in the same entry once none is preparing; a decision with
// nothing else preparing goes at once; and the linger is bounded.
func TestFlightLingers(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	cfg := h.c.cfg
	cfg.DecisionLinger = time.Minute // only the preparing count or the test ends a linger
	flights := &flightLog{}
	cfg.Observer = flights
	c := &Coordinator{cfg: cfg, raft: h.r, decideQ: make(chan decideReq, 8), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.decideLoop()
	defer func() { close(c.stop); c.wg.Wait() }()
	decide := func() decideReq {
		r := decideReq{rec: &wal.Record{TxID: h.c.newTxID(), Outcome: wal.OutcomeCommit, Participants: []string{"a"}},
			slot: make(chan flightSlot, 1)}
		c.decideQ <- r
		return r
	}
	done := func(what string, r decideReq) flightSlot {
		t.Helper()
		select {
		case slot := <-r.slot:
			select {
			case <-slot.flight.done:
				if slot.flight.err != nil {
					t.Fatalf("%s: %v", what, slot.flight.err)
				}
				return slot
			case <-time.After(10 * time.Second):
			}
		case <-time.After(10 * time.Second):
		}
		t.Fatalf("%s: no flight within 10s", what)
		return flightSlot{}
	}

	// Alone: nothing is preparing, so no linger.
	before := h.r.LastIndex()
	if s := done("a lone decision", decide()); s.index != -1 {
		t.Fatalf("a lone decision went as index %d of a flight", s.index)
	}
	if n := h.r.LastIndex() - before; n != 1 {
		t.Fatalf("a lone decision took %d entries", n)
	}

	// Another transaction is preparing: the first decision waits for it.
	c.preparing.Store(1)
	first := decide()
	select {
	case <-first.slot:
		t.Fatal("the flight left while a transaction was still preparing")
	case <-time.After(100 * time.Millisecond):
	}
	before = h.r.LastIndex()
	c.preparing.Store(0) // as commitWith does just before queueing its decision
	second := decide()
	s1, s2 := done("first", first), done("second", second)
	if s1.flight != s2.flight || s1.index != 0 || s2.index != 1 {
		t.Fatalf("not one flight: %p/%d and %p/%d", s1.flight, s1.index, s2.flight, s2.index)
	}
	if n := h.r.LastIndex() - before; n != 1 {
		t.Fatalf("the lingering flight took %d entries, want 1", n)
	}
	// The observer saw both flights: the lone one without a linger, then
	// the two decisions that waited (at least the 100 ms the test held the
	// preparing count).
	if got := flights.get(); len(got) != 2 || got[0].decisions != 1 || got[0].lingered >= 100*time.Millisecond ||
		got[1].decisions != 2 || got[1].lingered < 100*time.Millisecond || got[1].raft <= 0 {
		t.Fatalf("flights observed: %+v", got)
	}

	// A linger ends after DecisionLinger even if something stays preparing.
	c.cfg.DecisionLinger = 50 * time.Millisecond
	c.preparing.Store(1)
	done("a bounded linger", decide())
}

// flightLog is an Observer that records flights (FlightObserver).
type flightLog struct {
	mu      sync.Mutex
	flights []flightSeen
}

type flightSeen struct {
	decisions      int
	lingered, raft time.Duration
}

func (f *flightLog) TransactionFinished(string, map[string]string) {}
func (f *flightLog) InDoubt(int, time.Duration)                    {}
func (f *flightLog) RecoveryAction(string, error)                  {}
func (f *flightLog) FlightApplied(decisions int, lingered, raft time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flights = append(f.flights, flightSeen{decisions, lingered, raft})
}

func (f *flightLog) get() []flightSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]flightSeen(nil), f.flights...)
}

// entryApplied resolves the pending flight with the result of its own
// entry, once, and does nothing for any other entry or when no flight is
// pending.
func TestEntryAppliedResolvesThePendingFlight(t *testing.T) {
	c := &Coordinator{}
	c.entryApplied([]wal.Entry{{Data: []byte("mine")}}, []wal.ApplyResult{{}}) // nothing pending
	observed := 0
	fl := &flight{data: []byte("mine"), done: make(chan struct{}), stored: make(chan struct{}), applied: func() { observed++ }}
	c.pending.Store(fl)
	c.entryApplied([]wal.Entry{{Data: []byte("other")}}, []wal.ApplyResult{{Record: &wal.Record{TxID: "o"}}})
	select {
	case <-fl.done:
		t.Fatalf("another entry resolved the flight: %+v", fl.res)
	default:
	}
	mine := &wal.Record{TxID: "m"}
	c.entryApplied([]wal.Entry{{Data: []byte("other")}, {Data: []byte("mine")}}, []wal.ApplyResult{{}, {Record: mine}})
	select {
	case <-fl.done:
	default:
		t.Fatal("the flight's entry was applied but the flight not resolved")
	}
	if fl.err != nil || fl.res == nil || fl.res.Record != mine {
		t.Fatalf("resolved with %+v, %v; want the flight's own result", fl.res, fl.err)
	}
	// Raft's answer comes later; the first resolution stands.
	fl.resolve(nil, errFutureTimeout)
	if fl.err != nil || fl.res.Record != mine || observed != 1 {
		t.Fatalf("a second resolution changed the flight (%+v, %v) or observed it again (%d)", fl.res, fl.err, observed)
	}
}

// A transaction whose phase two ran before the decision store committed
// its decision stays active (GetTransaction answers from memory, recovery
// leaves it alone) until the store has it.
func TestFinishWaitsForTheStoredDecision(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	stored := make(chan struct{})
	tx := &txn{id: h.c.newTxID(), created: time.Now(), state: StateCommitting, branches: map[string]*branch{}, stored: stored}
	h.c.mu.Lock()
	h.c.active[tx.id] = tx
	h.c.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		h.c.finish(tx, StateCommitted)
		close(finished)
	}()
	select {
	case <-finished:
		t.Fatal("finish did not wait for the decision store")
	case <-time.After(50 * time.Millisecond):
	}
	if !h.c.inFlight(tx.id) {
		t.Fatal("the transaction left the active set before its decision was stored")
	}
	close(stored)
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("finish still waiting after the decision was stored")
	}
	if h.c.inFlight(tx.id) {
		t.Fatal("the transaction is still active after finish")
	}
}
