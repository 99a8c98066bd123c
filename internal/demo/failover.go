package demo

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// inDoubtPoll is the period of the in-doubt polls after the kill (two
// queries each, one per database).
const inDoubtPoll = 100 * time.Millisecond

// failover follows the transfers around the kill: when each began, which
// have an outcome the client knows, and the first commit of a transfer begun
// after the kill (only a new leader can have run it). Safe for concurrent use.
type failover struct {
	gidPrefix string

	mu          sync.Mutex
	began       map[string]time.Time // txid → when Begin returned
	settled     map[string]bool      // txid → the client knows the outcome
	killAt      time.Time            // zero until the kill
	firstCommit time.Time            // zero until a transfer begun after the kill commits
}

func newFailover(gidPrefix string) *failover {
	return &failover{gidPrefix: gidPrefix, began: map[string]time.Time{}, settled: map[string]bool{}}
}

// begun records a transaction as Begin returned it.
func (f *failover) begun(txid string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.began[txid] = at
}

// finished records a transfer whose worker is done with it: its outcome is
// known unless Commit's was unknown and WaitOutcome did not resolve it.
func (f *failover) finished(r transferResult) {
	if r.txid == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settled[r.txid] = r.known()
	if r.kind == resCommitted && !f.killAt.IsZero() && f.began[r.txid].After(f.killAt) &&
		(f.firstCommit.IsZero() || r.ended.Before(f.firstCommit)) {
		f.firstCommit = r.ended
	}
}

// kill records the moment the kill was sent.
func (f *failover) kill(at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killAt = at
}

// failoverTime is the time from the kill to the first commit of a transfer
// begun after it (ok false: none yet).
func (f *failover) failoverTime() (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killAt.IsZero() || f.firstCommit.IsZero() {
		return 0, false
	}
	return f.firstCommit.Sub(f.killAt), true
}

// inDoubtCount is what the kill left in doubt at one poll.
type inDoubtCount struct {
	PG      int      // prepared PostgreSQL transactions of transfers begun before the kill
	Surreal int      // SurrealDB intents of transfers begun before the kill
	Open    int      // transfers begun before the kill whose outcome the client does not know yet
	TxIDs   []string // the transfers concerned (sorted)
}

func (c inDoubtCount) zero() bool { return c.PG+c.Surreal+c.Open == 0 }

// txidOfGID extracts the txid from a GID "<prefix><txid>:<participant>".
func txidOfGID(prefix, gid string) (string, bool) {
	rest, ok := strings.CutPrefix(gid, prefix)
	if !ok {
		return "", false
	}
	txid, _, ok := strings.Cut(rest, ":")
	if !ok || txid == "" {
		return "", false
	}
	return txid, true
}

// inDoubt counts, among the GIDs listed in the databases, the branches of
// transactions begun before the kill (a GID of a transaction this run did not
// begin counts too: it can only be older), and the transfers begun before
// the kill whose outcome is not known yet. Branches of transfers begun after
// the kill are the new leader's ordinary work, not in doubt.
func (f *failover) inDoubt(pgGIDs, surrealGIDs []string) inDoubtCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	var c inDoubtCount
	txids := map[string]bool{}
	old := func(gid string) bool {
		txid, ok := txidOfGID(f.gidPrefix, gid)
		if !ok {
			return true
		}
		at, known := f.began[txid]
		if known && !f.killAt.IsZero() && !at.Before(f.killAt) {
			return false
		}
		txids[txid] = true
		return true
	}
	for _, g := range pgGIDs {
		if old(g) {
			c.PG++
		}
	}
	for _, g := range surrealGIDs {
		if old(g) {
			c.Surreal++
		}
	}
	for txid, at := range f.began {
		if !f.killAt.IsZero() && at.Before(f.killAt) && !f.settled[txid] {
			c.Open++
			txids[txid] = true
		}
	}
	for t := range txids {
		c.TxIDs = append(c.TxIDs, t)
	}
	sort.Strings(c.TxIDs)
	return c
}

// InDoubtWatch is what the polls after the kill saw.
type InDoubtWatch struct {
	AtKill     inDoubtCount  // the first poll, right after the kill
	Last       inDoubtCount  // the last poll
	Cleared    bool          // a poll found nothing in doubt
	ClearAfter time.Duration // kill → that poll
	Polls      int
	Err        error // the last poll error, if any
}

// watchInDoubt polls the databases from the kill until nothing the kill left
// is in doubt (no branch of a transfer begun before it, no such transfer
// with an unknown outcome), or ctx ends.
func watchInDoubt(ctx context.Context, chk *checker, f *failover, killAt time.Time) InDoubtWatch {
	var w InDoubtWatch
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pg, s, err := chk.inDoubtGIDs(cctx)
		cancel()
		if err != nil {
			w.Err = err
		} else {
			c := f.inDoubt(pg, s)
			if w.Polls == 0 {
				w.AtKill = c
			}
			w.Polls++
			w.Last = c
			if c.zero() {
				w.Cleared, w.ClearAfter = true, time.Since(killAt)
				return w
			}
		}
		select {
		case <-ctx.Done():
			return w
		case <-time.After(inDoubtPoll):
		}
	}
}

// known reports whether the client knows the transfer's outcome.
func (r transferResult) known() bool {
	switch r.kind {
	case resCommitted, resAborted, resNotRun:
		return true
	case resUnknown:
		return r.outcome == pb.Outcome_COMMITTED || r.outcome == pb.Outcome_ABORTED
	}
	return false
}
