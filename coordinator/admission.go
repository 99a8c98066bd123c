package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// Admission control: a participant may bound how many two-phase
// transactions it takes part in at once. On the reference machine (2 cores
// shared by the coordinators and both databases) PostgreSQL's CPU per
// two-phase transaction rises by half past about 16 in flight (PREPARE and
// COMMIT PREPARED contend on its shared two-phase state, and every prepared
// transaction is in every snapshot), so letting more in lowers throughput:
// a transaction over the bound waits in the coordinator instead, in arrival
// order, before it prepares.

// admitter is an optional participants.Participant capability (both
// adapters have it): the participant's bound on two-phase transactions in
// flight. A slot is held from before the branch prepares until its COMMIT
// PREPARED (or rollback) is acknowledged, or it votes READ_ONLY.
type admitter interface {
	// EnterCommit takes a slot, waiting in arrival order until one is free
	// or ctx ends (then it returns an error and holds nothing).
	EnterCommit(ctx context.Context) error
	// LeaveCommit gives back a slot taken by EnterCommit.
	LeaveCommit()
}

// admitterOf finds p's admission capability through wrappers that expose
// Unwrap (metrics); nil if it has none.
func admitterOf(p participants.Participant) admitter {
	for p != nil {
		if a, ok := p.(admitter); ok {
			return a
		}
		w, ok := p.(interface {
			Unwrap() participants.Participant
		})
		if !ok {
			return nil
		}
		p = w.Unwrap()
	}
	return nil
}

// admission is the slots one transaction holds, one per participant. Its
// methods are safe on a nil *admission (no slots) and for concurrent use
// (phase two releases per branch, from several goroutines).
type admission struct {
	mu   sync.Mutex
	held map[string]admitter
}

// admit takes a slot on every named participant that has admission, in
// name order: all transactions take slots in the same order, so two never
// wait for each other's slots crosswise. It waits at most
// c.cfg.PrepareTimeout (and until ctx ends); on failure it gives back what
// it took and returns an error wrapping ErrLimit.
func (c *Coordinator) admit(ctx context.Context, names []string) (*admission, error) {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	var a *admission
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PrepareTimeout)
	defer cancel()
	start := time.Now()
	for _, name := range names {
		ad := admitterOf(c.parts[name])
		if ad == nil {
			continue
		}
		if err := ad.EnterCommit(ctx); err != nil {
			a.releaseAll()
			return nil, fmt.Errorf("%w: commit admission on participant %q: waited %s: %v",
				ErrLimit, name, time.Since(start).Round(time.Millisecond), err)
		}
		if a == nil {
			a = &admission{held: map[string]admitter{}}
		}
		a.held[name] = ad
	}
	return a, nil
}

// release gives back the slot held on one participant, if any.
func (a *admission) release(name string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	ad := a.held[name]
	delete(a.held, name)
	a.mu.Unlock()
	if ad != nil {
		ad.LeaveCommit()
	}
}

// releaseAll gives back every slot still held.
func (a *admission) releaseAll() {
	if a == nil {
		return
	}
	a.mu.Lock()
	held := a.held
	a.held = map[string]admitter{}
	a.mu.Unlock()
	for _, ad := range held {
		ad.LeaveCommit()
	}
}

// twoPhase reports whether a Run with these statements will commit in two
// phases (and so needs admission): it spans several participants, or it
// has an idempotency key (such runs always log their decision).
func twoPhase(opts TxOptions, stmts []Statement) bool {
	if opts.IdempotencyKey != "" {
		return true
	}
	if len(stmts) == 0 {
		return false
	}
	for _, st := range stmts[1:] {
		if st.Participant != stmts[0].Participant {
			return true
		}
	}
	return false
}
