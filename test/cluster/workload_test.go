package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/wire"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
)

// outcome is what the workload knows about one attempted transaction.
type outcome int

const (
	// outCommitted: Run returned nil, or an unknown outcome resolved to
	// COMMITTED by WaitOutcome. Both stores must hold its writes.
	outCommitted outcome = iota + 1
	// outAborted: Run returned ErrAborted, or an unknown outcome resolved
	// to ABORTED. Neither store may hold its writes.
	outAborted
	// outRefused: the server answered UNAVAILABLE before beginning a
	// transaction (no txid): nothing was done. Neither store may hold it.
	outRefused
	// outUnresolved: the outcome is unknown and there is no txid to ask
	// about (a transport failure during Run). Both or neither store may
	// hold its writes, never one.
	outUnresolved
)

// attempt is one Run of the workload: a row in PostgreSQL and a record in
// SurrealDB with the same key and value.
type attempt struct {
	key, txid string
	out       outcome
	err       error
	began     time.Time
	took      time.Duration // Run plus, for an unknown outcome, WaitOutcome
}

// workload runs cross-store transactions with the Run API from several
// goroutines, each with its own client of the whole cluster, until stopped.
type workload struct {
	t      *testing.T
	c      *cluster
	prefix string
	stop   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	attempts []attempt
	counts   map[string]int
	failures []string // client-visible failures that are not retryable
	maxStall time.Duration
	commits  []time.Time       // when each committed attempt returned
	inflight map[int]time.Time // worker → when its current Run began
	started  time.Time
	stopped  time.Time
}

// startLoad starts workers goroutines against the given nodes (all when
// none given).
func (c *cluster) startLoad(workers int, ps ...*proc) *workload {
	w := &workload{t: c.t, c: c, prefix: c.id + "-w", stop: make(chan struct{}), counts: map[string]int{}, started: time.Now(),
		inflight: map[int]time.Time{}}
	for i := 0; i < workers; i++ {
		cl, err := client.Dial(context.Background(), c.addrs(ps...))
		if err != nil {
			c.t.Fatal(err)
		}
		w.wg.Add(1)
		go w.worker(i, cl)
	}
	c.t.Cleanup(w.halt)
	return w
}

func (w *workload) worker(n int, cl *client.Client) {
	defer w.wg.Done()
	defer cl.Close()
	lastOK := time.Now()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := fmt.Sprintf("%s%d-%05d", w.prefix, n, i)
		began := time.Now()
		w.mu.Lock()
		w.inflight[n] = began
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		txid, _, err := cl.Run(ctx, client.TxOptions{Timeout: 15 * time.Second},
			client.On("pg", client.SQL("INSERT INTO cluster_kv (k, v) VALUES ($1, $2)", key, key)),
			client.On("surreal", client.Upsert(kvTable, key, map[string]any{"v": key})))
		cancel()
		a := w.classify(cl, key, txid, err)
		a.began, a.took = began, time.Since(began)
		w.mu.Lock()
		delete(w.inflight, n)
		w.attempts = append(w.attempts, a)
		if a.out == outCommitted {
			w.commits = append(w.commits, time.Now())
			if stall := time.Since(lastOK); stall > w.maxStall {
				w.maxStall = stall
			}
			lastOK = time.Now()
		}
		w.mu.Unlock()
		if err != nil {
			select { // do not spin on a node that is down
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// classify sorts one Run's result, resolving unknown outcomes that have a
// txid with WaitOutcome.
func (w *workload) classify(cl *client.Client, key, txid string, err error) attempt {
	a := attempt{key: key, txid: txid, err: err}
	count := func(what string) {
		w.mu.Lock()
		w.counts[what]++
		w.mu.Unlock()
	}
	fail := func(what string) {
		w.mu.Lock()
		w.counts[what]++
		if len(w.failures) < 20 {
			w.failures = append(w.failures, fmt.Sprintf("%s: key %s txid %s: %v", what, key, a.txid, err))
		}
		w.mu.Unlock()
	}
	var ce *client.Error
	errors.As(err, &ce)
	switch {
	case err == nil:
		a.out = outCommitted
		count("committed")
	case errors.Is(err, client.ErrOutcomeUnknown) && ce != nil && ce.TxID != "":
		a.txid = ce.TxID
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		o, werr := cl.WaitOutcome(ctx, ce.TxID)
		cancel()
		switch {
		case werr != nil:
			a.out = outUnresolved
			fail("unknown, WaitOutcome failed")
		case o == pb.Outcome_COMMITTED:
			a.out = outCommitted
			count("unknown→committed")
		default:
			a.out = outAborted
			count("unknown→aborted")
		}
	case ce != nil && ce.Code == codes.Unavailable && ce.Reason == wire.ReasonUnavailable:
		// The server refused before beginning (Run reports it as an
		// unknown outcome without a txid; the server's reason says nothing
		// was done).
		a.out = outRefused
		count("refused UNAVAILABLE")
	case errors.Is(err, client.ErrUnavailable):
		a.out = outRefused
		count("refused UNAVAILABLE")
	case errors.Is(err, client.ErrOutcomeUnknown):
		// A transport failure: no txid, so nothing to ask about.
		a.out = outUnresolved
		count("unknown without txid (transport)")
	case errors.Is(err, client.ErrAborted) && ce != nil && leadershipLost(ce.Message):
		// Its coordinator lost leadership before the decision was logged
		// (on this loaded 2-core machine a heartbeat can be missed): a
		// definite abort the application may retry.
		a.out = outAborted
		count("aborted: coordinator lost leadership")
	case errors.Is(err, client.ErrAborted):
		a.out = outAborted
		fail("aborted")
	default:
		a.out = outUnresolved
		fail("other error")
	}
	return a
}

// longestGap is the longest time between from and to without a commit.
func (w *workload) longestGap(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ts []time.Time
	for _, t := range w.commits {
		if t.After(from) && t.Before(to) {
			ts = append(ts, t)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	prev, gap := from, time.Duration(0)
	for _, t := range append(ts, to) {
		gap = max(gap, t.Sub(prev))
		prev = t
	}
	return gap
}

// waitAnswered waits until no Run begun before t is still in flight, at
// most bound, and returns how many still are (with the oldest's start).
func (w *workload) waitAnswered(t time.Time, bound time.Duration) (oldest time.Time, stuck int) {
	deadline := time.Now().Add(bound)
	for {
		oldest, stuck = time.Time{}, 0
		w.mu.Lock()
		for _, b := range w.inflight {
			if b.Before(t) {
				stuck++
				if oldest.IsZero() || b.Before(oldest) {
					oldest = b
				}
			}
		}
		w.mu.Unlock()
		if stuck == 0 || time.Now().After(deadline) {
			return oldest, stuck
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committed counts the attempts known to have committed so far.
func (w *workload) committed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts["committed"] + w.counts["unknown→committed"]
}

// leadershipLost recognises, in an abort's message, a coordinator that lost
// leadership before the decision was logged. Matching text is a test-only
// heuristic for the report: if the wording changes, such aborts count as
// failures (loudly), never the other way round.
func leadershipLost(msg string) bool {
	return strings.Contains(msg, "decision not logged") &&
		(strings.Contains(msg, "not the leader") || strings.Contains(msg, "leadership"))
}

// halt stops the workers and waits for them (idempotent).
func (w *workload) halt() {
	w.mu.Lock()
	select {
	case <-w.stop:
		w.mu.Unlock()
		return
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	w.wg.Wait()
	w.mu.Lock()
	w.stopped = time.Now()
	w.mu.Unlock()
}

// summary is one line of counts.
func (w *workload) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []string
	for k, v := range w.counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	d := w.stopped.Sub(w.started)
	var slowest attempt
	for _, a := range w.attempts {
		if a.took > slowest.took {
			slowest = a
		}
	}
	return fmt.Sprintf("%d attempts in %s (%.0f committed/s): %s; longest stall without a commit %s; slowest attempt %s at +%s (%v)",
		len(w.attempts), ms(d), float64(w.counts["committed"]+w.counts["unknown→committed"])/d.Seconds(),
		strings.Join(parts, " "), ms(w.maxStall), ms(slowest.took), ms(slowest.began.Sub(w.started)), slowest.err)
}

// check verifies the workload against both stores and the decision log:
// every committed attempt is in both stores (no lost decision) and its txid
// reads COMMITTED; nothing aborted or refused is anywhere; an unresolved one
// is in both or neither; no row exists in one store only or unattempted.
// It fails the test for client-visible failures that are not retryable.
func (w *workload) check(s *stores, leader *proc) {
	t := w.t
	t.Helper()
	w.halt()
	pgm, surm := s.pgKV(w.prefix), s.surKV(w.prefix)
	w.mu.Lock()
	attempts := append([]attempt(nil), w.attempts...)
	failures := append([]string(nil), w.failures...)
	w.mu.Unlock()
	var bad []string
	badf := func(format string, args ...any) {
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	attempted := map[string]bool{}
	var committedTx []string
	unresolvedCommitted := 0
	for _, a := range attempts {
		attempted[a.key] = true
		pv, inPG := pgm[a.key]
		sv, inSur := surm[a.key]
		switch a.out {
		case outCommitted:
			if !inPG || !inSur || pv != a.key || sv != a.key {
				badf("LOST: committed %s (txid %s): postgres %q(%v) surrealdb %q(%v)", a.key, a.txid, pv, inPG, sv, inSur)
			}
			if a.txid != "" {
				committedTx = append(committedTx, a.txid)
			}
		case outAborted, outRefused:
			if inPG || inSur {
				badf("aborted/refused %s (txid %s, err %v) is visible: postgres %v surrealdb %v", a.key, a.txid, a.err, inPG, inSur)
			}
		case outUnresolved:
			if inPG != inSur {
				badf("NOT ATOMIC: unresolved %s: postgres %v surrealdb %v", a.key, inPG, inSur)
			}
			if inPG && inSur {
				unresolvedCommitted++
			}
		}
	}
	for k := range pgm {
		if !attempted[k] {
			badf("postgres has %s, never attempted", k)
		}
		if _, ok := surm[k]; !ok {
			badf("NOT ATOMIC: %s in postgres only", k)
		}
	}
	for k := range surm {
		if !attempted[k] {
			badf("surrealdb has %s, never attempted", k)
		}
		if _, ok := pgm[k]; !ok {
			badf("NOT ATOMIC: %s in surrealdb only", k)
		}
	}
	// Every committed txid has its decision in the log.
	cl := w.c.dial(leader)
	for _, txid := range committedTx {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := cl.GetTransaction(ctx, txid)
		cancel()
		if err != nil || info.Outcome != pb.Outcome_COMMITTED {
			badf("decision of committed %s: %v %v", txid, info.GetOutcome(), err)
		}
	}
	t.Logf("workload: %d rows in each store, %d decisions checked; unresolved attempts that committed: %d",
		len(pgm), len(committedTx), unresolvedCommitted)
	if unresolvedCommitted > 0 {
		badf("%d transactions committed although Run reported an unknown outcome without a txid: the client cannot learn they committed", unresolvedCommitted)
	}
	if len(bad) > 0 {
		t.Errorf("workload invariants violated:\n%s", strings.Join(bad, "\n"))
	}
	if len(failures) > 0 {
		t.Errorf("client-visible failures that are not retryable UNAVAILABLE or resolved unknown outcomes:\n%s", strings.Join(failures, "\n"))
	}
	if w.counts["committed"]+w.counts["unknown→committed"] == 0 {
		t.Errorf("the workload committed nothing")
	}
}
