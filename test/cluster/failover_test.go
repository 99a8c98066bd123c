package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// crossStore begins a transaction writing key=val to both stores and
// returns it uncommitted.
func crossStore(ctx context.Context, t *testing.T, cl *client.Client, key, val string, pre ...string) *client.Tx {
	t.Helper()
	tx, err := cl.Begin(ctx, client.TxOptions{Timeout: 60 * time.Second, Labels: map[string]string{"test": t.Name()}})
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	for _, sql := range pre {
		if _, err := tx.Exec(ctx, "pg", sql); err != nil {
			t.Fatalf("pg %q: %v", sql, err)
		}
	}
	if _, err := tx.Exec(ctx, "pg", "INSERT INTO cluster_kv (k, v) VALUES ($1, $2)", key, val); err != nil {
		t.Fatalf("pg insert: %v", err)
	}
	if _, err := tx.Do(ctx, "surreal", client.Upsert(kvTable, key, map[string]any{"v": val})); err != nil {
		t.Fatalf("surreal upsert: %v", err)
	}
	return tx
}

// assertAllOrNothing checks key in both stores: val in each, or in neither.
func assertAllOrNothing(t *testing.T, s *stores, key, val string, committed bool) {
	t.Helper()
	pv, inPG, sv, inSur := s.kvBoth(key)
	switch {
	case committed && (!inPG || !inSur || pv != val || sv != val):
		t.Fatalf("committed %s incomplete: postgres %q(%v) surrealdb %q(%v)", key, pv, inPG, sv, inSur)
	case !committed && (inPG || inSur):
		t.Fatalf("aborted %s visible: postgres %v surrealdb %v", key, inPG, inSur)
	}
}

// TestLeaderKilledAtFailpoint SIGKILLs the leader of a 3-node cluster at each
// failpoint of the 2PC path, with raft's default timeouts (heartbeat and
// election 1 s, the settings the "under 3 s" goal refers to). The failpoint
// is armed on all three nodes so that whichever leads dies there; the dead
// node comes back without it.
//
// Proven per failpoint: the client sees an unknown outcome (never a failure);
// a surviving node is elected and recovers on its own; the transaction ends
// all-or-nothing in both stores — aborted (presumed abort) when the leader
// died before the decision, committed when the decision was durable — with
// no branch left prepared in PostgreSQL and no intent or lock left in
// SurrealDB; the client's WaitOutcome learns the same outcome; the restarted
// node catches up and all three decision stores are identical.
//
// Measured and printed: kill → new leader elected, kill → new leader
// serving, and kill → nothing in doubt (no prepared branch in either store
// and the transaction final — COMMITTED or ABORTED, not COMMITTING — at the
// new leader). The test fails only past a 20 s bound.
func TestLeaderKilledAtFailpoint(t *testing.T) {
	needDBs(t)
	cases := []struct {
		failpoint  string
		wantCommit bool
	}{
		{"before-decision", false},
		{"after-decision", true},
		{"mid-commit", true},
		{"before-forget", true},
		// Phase two finished on a decision committed in the Raft log
		// but not yet in the dying leader's decision store: when it
		// comes back, its store must replay it and converge.
		{"unstored-decision", true},
	}
	for _, tc := range cases {
		t.Run(tc.failpoint, func(t *testing.T) {
			c := newCluster(t, "fp", clusterOpts{})
			s := openStores(t)
			c.startAll(tc.failpoint)
			c.leader()
			cl := c.dial()
			ctx := context.Background()

			key := c.id + "-k"
			tx := crossStore(ctx, t, cl, key, "v")
			commitErr := tx.Commit(ctx)
			// Whichever node led ran the commit and died at the failpoint.
			leader, killedAt := c.firstExit(10*time.Second, c.procs...)
			if !leader.killedBySIGKILL() {
				t.Fatalf("leader %s exited, but not by its failpoint's SIGKILL; log:\n%s", leader.id, leader.logTail(40))
			}
			afterPhaseTwo := tc.failpoint == "before-forget" || tc.failpoint == "unstored-decision"
			switch {
			case tc.failpoint == "unstored-decision":
				// Phase two finished before the kill: the reply may have
				// left first. Committed or unknown are both true.
				if commitErr != nil && !errors.Is(commitErr, client.ErrOutcomeUnknown) {
					t.Fatalf("commit through a leader crash after phase two: want committed or unknown, got %v", commitErr)
				}
			case !errors.Is(commitErr, client.ErrOutcomeUnknown):
				t.Fatalf("commit through a leader crash must report an unknown outcome, got %v", commitErr)
			}
			// Right after the kill the transaction is in doubt somewhere
			// (after phase two: only in the log, as not yet done).
			if !afterPhaseTwo && len(s.inDoubt(c.prefix())) == 0 {
				t.Fatalf("nothing prepared right after a kill at %s", tc.failpoint)
			}

			survivors := c.others(leader)
			f := watchFailover(t, c, s, survivors, tx.ID(), killedAt, 20*time.Second)
			report(t, "kill→elected %s, →serving %s, →stores clean %s, →decision final %s, →nothing in doubt %s (default raft timeouts)",
				ms(f.elected), ms(f.serving), ms(f.clean), ms(f.final), ms(f.resolved))
			if f.resolved > 3*time.Second {
				t.Logf("NOTE: kill→nothing in doubt %s is above the 3 s goal", ms(f.resolved))
			}

			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			outcome, err := cl.WaitOutcome(wctx, tx.ID())
			cancel()
			want := pb.Outcome_ABORTED
			if tc.wantCommit {
				want = pb.Outcome_COMMITTED
			}
			if err != nil || outcome != want {
				t.Fatalf("WaitOutcome: %s %v, want %s", outcome, err, want)
			}
			assertAllOrNothing(t, s, key, "v", tc.wantCommit)

			// The dead node comes back without the failpoint and catches up.
			leader.launch()
			leader.waitUp(30 * time.Second)
			newLeader := c.leader()
			caught := c.waitCaughtUp(leader, newLeader, 30*time.Second)
			t.Logf("%s restarted and caught up with %s in %s", leader.id, newLeader.id, ms(caught))

			// Invariants at the end of every run.
			c.waitConverged(30*time.Second, c.procs...)
			c.assertNothingInDoubt(s)
			assertAllOrNothing(t, s, key, "v", tc.wantCommit)
		})
	}
}

// failover is what watchFailover saw, as durations after the kill.
type failover struct {
	elected  time.Duration // a survivor first seen leading
	serving  time.Duration // ... and recovered (serving)
	clean    time.Duration // both stores first seen with nothing prepared
	final    time.Duration // the transaction first seen COMMITTED or ABORTED (not COMMITTING) at the leader
	resolved time.Duration // all of the above at once: nothing in doubt
}

// watchFailover polls the survivors and both stores every 20 ms from the
// kill on until the new leader serves, nothing is prepared in either store
// and the transaction is final at the new leader.
func watchFailover(t *testing.T, c *cluster, s *stores, survivors []*proc, txid string, killedAt time.Time, bound time.Duration) failover {
	t.Helper()
	var f failover
	for {
		var leader *proc
		for _, p := range survivors {
			if st, err := p.status(); err == nil && st.State == "Leader" {
				if f.elected == 0 {
					f.elected = time.Since(killedAt)
				}
				if st.Ready {
					leader = p
					if f.serving == 0 {
						f.serving = time.Since(killedAt)
					}
				}
			}
		}
		clean := len(s.inDoubt(c.prefix())) == 0
		if clean && f.clean == 0 {
			f.clean = time.Since(killedAt)
		}
		final := false
		if leader != nil {
			if info, err := c.txState(leader, txid); err == nil &&
				(info.State == pb.TransactionState_COMMITTED_STATE || info.State == pb.TransactionState_ABORTED_STATE) {
				final = true
				if f.final == 0 {
					f.final = time.Since(killedAt)
				}
			}
		}
		if leader != nil && clean && final {
			f.resolved = time.Since(killedAt)
			return f
		}
		if time.Since(killedAt) > bound {
			t.Fatalf("not resolved %s after the kill (elected %s, serving %s, stores clean %s, final %s); in doubt: %v",
				bound, ms(f.elected), ms(f.serving), ms(f.clean), ms(f.final), s.inDoubt(c.prefix()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
