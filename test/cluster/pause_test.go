package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// TestPausedLeader SIGSTOPs the leader for several election timeouts while it
// runs two transactions, lets the majority elect a new leader and work, and
// SIGCONTs the old one while the NEW leader has a transaction prepared with
// its decision pending. Setup, on the old leader L before the pause:
//
//   - Tp: SurrealDB branch prepared, PostgreSQL PREPARE held back by a
//     blocker (its commit is in progress, decision pending);
//   - Ta: executed on both stores, never committed (ACTIVE).
//
// While L is stopped: the majority elects M, whose recovery rolls back Tp's
// SurrealDB branch (presumed abort); the blocker is released, so Tp's
// PostgreSQL PREPARE completes (its YES vote waits in L's socket) and M's
// periodic scan rolls that prepared branch back too; M commits new work; and
// Tm starts on M with its SurrealDB branch prepared and its PostgreSQL
// PREPARE held back by a second blocker.
//
// Then L resumes. It wakes up believing it leads, with Tp's votes all YES
// and a recovery scan due (its ticker fired while it was stopped). Proven:
//
//   - L makes no decision and commits nothing: Tp's Commit returns an error,
//     Tp ends aborted in both stores, and L's store converges to M's;
//   - L rolls back nothing of M's: for 3 s (three recovery intervals) after
//     L resumed, Tm's SurrealDB branch stays prepared and its PostgreSQL
//     PREPARE stays pending; L's log shows no presumed abort after resuming;
//     then the blocker is released and Tm commits in both stores;
//   - Ta's Commit on L after resuming fails (not success) and Ta's writes
//     never appear;
//   - at the end all decision stores are identical and nothing is in doubt.
//
// L may still roll back the branches of its own Tp after failing to log
// Tp's decision: that is safe (Tp's decision can only ever be logged by L
// itself, and it was not) and is shown in the test log.
func TestPausedLeader(t *testing.T) {
	c := newCluster(t, "pause", clusterOpts{tuned: true, prepareTimeout: 60 * time.Second})
	s := openStores(t)
	c.startAll()
	old := c.leader()
	var majority []*proc
	for _, p := range c.procs {
		if p != old {
			majority = append(majority, p)
		}
	}
	ctx := context.Background()
	onOld := c.dial(old)

	// Tp: prepared on SurrealDB, PREPARE held back on PostgreSQL.
	bp := s.block(c.id + "-bp")
	kp := c.id + "-tp"
	tp := crossStore(ctx, t, onOld, kp, "tp", "SET LOCAL lock_timeout = '60s'",
		fmt.Sprintf("INSERT INTO cluster_uniq (k) VALUES (%s)", quote(bp.key)))
	c.requireOn(old, tp.ID())
	tpDone := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		tpDone <- tp.Commit(cctx)
	}()
	tpPG, tpSur := c.gid(tp.ID(), "pg"), c.gid(tp.ID(), "surreal")
	eventually(t, 20*time.Second, "Tp prepared on SurrealDB and waiting in PREPARE on PostgreSQL", func() bool {
		return s.surIntent(tpSur) && s.prepareWaiting(tpPG)
	})
	// Ta: active, never committed.
	ka := c.id + "-ta"
	ta := crossStore(ctx, t, onOld, ka, "ta")
	c.requireOn(old, ta.ID())

	stopped := time.Now()
	old.pause()
	t.Logf("SIGSTOP %s (leader) with Tp %s prepared/pending and Ta %s active", old.id, tp.ID(), ta.ID())

	newLeader, readyAt := c.leaderAmong(20*time.Second, majority...)
	report(t, "pause: %s elected and serving %s after SIGSTOP of %s", newLeader.id, ms(readyAt.Sub(stopped)), old.id)
	eventually(t, 20*time.Second, "Tp's SurrealDB branch rolled back by the new leader", func() bool { return !s.surIntent(tpSur) })

	// Tp's PostgreSQL PREPARE completes while L is stopped; the new leader's
	// periodic scan rolls the prepared branch back.
	bp.release()
	eventually(t, 20*time.Second, "Tp's PostgreSQL PREPARE finished", func() bool { return !s.prepareWaiting(tpPG) })
	eventually(t, 20*time.Second, "Tp's prepared PostgreSQL branch rolled back by the new leader", func() bool { return !s.pgIsPrepared(tpPG) })

	// The majority works.
	onNew := c.dial(majority...)
	var newKeys []string
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("%s-m%d", c.id, i)
		runCommitted(t, onNew, k)
		newKeys = append(newKeys, k)
	}

	// Tm on the new leader: SurrealDB prepared, PostgreSQL PREPARE pending.
	bm := s.block(c.id + "-bm")
	km := c.id + "-tm"
	tm := crossStore(ctx, t, onNew, km, "tm", "SET LOCAL lock_timeout = '60s'",
		fmt.Sprintf("INSERT INTO cluster_uniq (k) VALUES (%s)", quote(bm.key)))
	c.requireOn(newLeader, tm.ID())
	tmDone := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		tmDone <- tm.Commit(cctx)
	}()
	tmPG, tmSur := c.gid(tm.ID(), "pg"), c.gid(tm.ID(), "surreal")
	eventually(t, 20*time.Second, "Tm prepared on SurrealDB and waiting in PREPARE on PostgreSQL", func() bool {
		return s.surIntent(tmSur) && s.prepareWaiting(tmPG)
	})

	// Keep L stopped for at least 3 s (six election timeouts, three recovery
	// intervals: its scan is due the moment it wakes), then resume it and
	// watch it for three recovery intervals.
	if d := 3*time.Second - time.Since(stopped); d > 0 {
		time.Sleep(d)
	}
	logOff := old.logSize()
	resumed := time.Now()
	old.resume()
	t.Logf("SIGCONT %s after %s stopped", old.id, ms(resumed.Sub(stopped)))
	// What the old leader does to Tm can be told apart from the new leader's
	// own doing only while the new leader keeps leading in its term (on this
	// 2-core machine under load, a 500 ms heartbeat can be missed and the
	// new leader deposed; its successor would then rightly roll Tm back).
	var mTerm uint64
	if st, err := newLeader.status(); err == nil && st.State == "Leader" {
		mTerm = st.Term
	}
	mStable := mTerm != 0
	var steppedDown, rejoined, unstableAt time.Duration
	for (time.Since(resumed) < 3*time.Second && mStable) || rejoined == 0 {
		if mStable {
			if st, err := newLeader.status(); err != nil || st.State != "Leader" || st.Term != mTerm {
				mStable, unstableAt = false, time.Since(resumed)
			}
		}
		if mStable && !s.surIntent(tmSur) {
			t.Fatalf("Tm's prepared SurrealDB branch was rolled back %s after the old leader resumed, while %s still led; old leader's log:\n%s",
				ms(time.Since(resumed)), newLeader.id, old.logSince(logOff))
		}
		if mStable && !s.prepareWaiting(tmPG) {
			t.Fatalf("Tm's PostgreSQL PREPARE is no longer pending %s after the old leader resumed", ms(time.Since(resumed)))
		}
		if st, err := old.status(); err == nil && st.State != "Leader" {
			if steppedDown == 0 {
				steppedDown = time.Since(resumed)
			}
			if rejoined == 0 && st.State == "Follower" && st.LeaderId != "" && st.LeaderId != old.id {
				rejoined = time.Since(resumed)
			}
		}
		if time.Since(resumed) > 20*time.Second {
			t.Fatalf("the old leader did not follow a leader within 20s of resuming")
		}
		time.Sleep(50 * time.Millisecond)
	}
	report(t, "pause: resumed %s stopped leading %s and followed a leader %s after SIGCONT", old.id, ms(steppedDown), ms(rejoined))
	if !mStable {
		report(t, "NOTE: %s stopped leading term %d %s after the old leader resumed, so Tm was watched for %s only; %s's log:\n%s",
			newLeader.id, mTerm, ms(unstableAt), ms(unstableAt), newLeader.id,
			grepLines(newLeader.logSince(0), "lost leadership", "heartbeat timeout", "election", "became leader"))
	}
	resumedLog := old.logSince(logOff)
	if strings.Contains(resumedLog, "presumed abort") {
		t.Fatalf("the resumed old leader ran presumed abort:\n%s", grepLines(resumedLog, "presumed abort"))
	}
	t.Logf("the resumed old leader's log:\n%s", grepLines(resumedLog, "roll", "abort", "commit", "decision", "leader"))

	// Tp's Commit (answered by the old leader) is not a success, and Tp is
	// aborted everywhere.
	var tpErr error
	select {
	case tpErr = <-tpDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Tp's Commit did not return within 30s of the old leader resuming")
	}
	if tpErr == nil {
		t.Fatal("Tp committed on the paused old leader")
	}
	t.Logf("Tp's Commit on the resumed old leader: %v", tpErr)

	// Ta, still on the old leader, cannot commit.
	if err := ta.Commit(ctx); err == nil {
		t.Fatal("Ta committed on the deposed leader")
	} else {
		t.Logf("Ta's Commit on the deposed leader: %v", err)
	}

	// Tm goes on and commits (unless its coordinator lost leadership first:
	// then it is aborted, by that coordinator or by presumed abort).
	bm.release()
	tmOutcome := pb.Outcome_COMMITTED
	select {
	case err := <-tmDone:
		switch {
		case err == nil || errors.Is(err, client.ErrOutcomeUnknown):
		case errors.Is(err, client.ErrAborted) && !leadsIn(newLeader, mTerm):
			report(t, "NOTE: Tm aborted because its coordinator %s no longer leads term %d: %v", newLeader.id, mTerm, err)
			tmOutcome = pb.Outcome_ABORTED
		default:
			t.Fatalf("Tm on the new leader: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Tm's Commit did not return within 30s of its blocker's release")
	}
	final := c.leader()
	cl := c.dial(final)
	if !mStable {
		// Tm's outcome is whatever the log says; it must be all-or-nothing.
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		tmOutcome, _ = cl.WaitOutcome(wctx, tm.ID())
		cancel()
	}
	for _, want := range []struct {
		tx      *client.Tx
		key     string
		outcome pb.Outcome
	}{{tp, kp, pb.Outcome_ABORTED}, {ta, ka, pb.Outcome_ABORTED}, {tm, km, tmOutcome}} {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		o, err := cl.WaitOutcome(wctx, want.tx.ID())
		cancel()
		if err != nil || o != want.outcome {
			t.Fatalf("%s: %s %v, want %s", want.tx.ID(), o, err, want.outcome)
		}
	}

	c.waitConverged(30*time.Second, c.procs...)
	c.assertNothingInDoubt(s)
	assertAllOrNothing(t, s, kp, "tp", false)
	assertAllOrNothing(t, s, ka, "ta", false)
	assertAllOrNothing(t, s, km, "tm", tmOutcome == pb.Outcome_COMMITTED)
	for _, k := range newKeys {
		assertAllOrNothing(t, s, k, k, true)
	}
}

// leadsIn reports whether p leads in term.
func leadsIn(p *proc, term uint64) bool {
	st, err := p.status()
	return err == nil && st.State == "Leader" && st.Term == term
}
