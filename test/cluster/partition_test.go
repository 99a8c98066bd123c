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

// TestPartitionedLeader cuts the leader off from the majority: every Raft
// link to and from it goes through its own proxy, and all of the leader's
// are blackholed (its links to the databases stay up: a coordinator cut off
// from its peers but not from the participants is the dangerous case).
//
// Before the cut, transaction T1 runs on the leader with its SurrealDB
// branch prepared and its PostgreSQL PREPARE held back by a blocker, so its
// commit is in progress with the decision pending. Then:
//
//   - the isolated old leader steps down and makes no decision: its decision
//     store (StoreDigest) is unchanged for the whole isolation, T1's Commit
//     returns an error (not success), and T1's writes never become visible;
//   - T2, executed on the leader before the cut and committed right after it
//     (the leader may still believe it leads for up to its lease, 1 s, and
//     can prepare and append the decision to its own log), does not commit:
//     its Commit returns an error, its branches end rolled back, the entry
//     never reaches the old leader's store and is gone after the heal;
//   - the majority elects a new leader, whose recovery rolls back T1's
//     prepared SurrealDB branch (presumed abort: no decision in its log, not
//     in flight there) while the old leader is still cut off;
//   - when the blocker lets T1's PostgreSQL PREPARE finish (the old leader
//     still talks to PostgreSQL), the prepared branch is rolled back too
//     (by the old leader's own abort after its decision could not be logged,
//     or by the majority's periodic presumed abort) — never committed;
//   - the majority commits new cross-store transactions while the old
//     leader is cut off;
//   - after the heal all three decision stores are identical, nothing is in
//     doubt, T1 is aborted everywhere and the new work is in both stores.
func TestPartitionedLeader(t *testing.T) {
	// A 2 s heartbeat timeout gives the leader a 1 s lease: after the cut it
	// keeps believing it leads for about a second, long enough for its
	// periodic recovery scan (every 1 s) to run while it is cut off.
	c := newCluster(t, "part", clusterOpts{heartbeat: 2 * time.Second, proxies: true, prepareTimeout: 30 * time.Second})
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

	// Some committed work before the cut.
	onOld := c.dial(old)
	pre := c.id + "-pre"
	if _, _, err := onOld.Run(ctx, client.TxOptions{},
		client.On("pg", client.SQL("INSERT INTO cluster_kv (k, v) VALUES ($1, 'pre')", pre)),
		client.On("surreal", client.Upsert(kvTable, pre, map[string]any{"v": "pre"}))); err != nil {
		t.Fatalf("commit before the cut: %v", err)
	}

	// T1: prepared on SurrealDB, PREPARE held back on PostgreSQL.
	blockKey := c.id + "-b1"
	blk := s.block(blockKey)
	k1 := c.id + "-t1"
	t1 := crossStore(ctx, t, onOld, k1, "t1", "SET LOCAL lock_timeout = '60s'",
		fmt.Sprintf("INSERT INTO cluster_uniq (k) VALUES (%s)", quote(blockKey)))
	c.requireOn(old, t1.ID())
	t1Done := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		t1Done <- t1.Commit(cctx)
	}()
	eventually(t, 20*time.Second, "T1 prepared on SurrealDB and waiting in PREPARE on PostgreSQL", func() bool {
		return s.surIntent(c.gid(t1.ID(), "surreal")) && s.prepareWaiting(c.gid(t1.ID(), "pg"))
	})

	// T2: executed on both stores, committed right after the cut (while the
	// old leader may still believe it leads: it can prepare and even append
	// the decision to its own log, but never get it committed).
	k2 := c.id + "-t2"
	t2 := crossStore(ctx, t, onOld, k2, "t2")
	c.requireOn(old, t2.ID())

	before, err := old.digest()
	if err != nil {
		t.Fatal(err)
	}
	logOff := old.logSize()
	cut := time.Now()
	for _, p := range majority {
		c.links[old.id][p.id].Blackhole()
		c.links[p.id][old.id].Blackhole()
	}
	t2Done := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		t2Done <- t2.Commit(cctx)
	}()
	t.Logf("cut %s (leader, applied %d) off from %s", old.id, before.AppliedIndex, ids(majority))

	// The old leader steps down; the majority elects and recovers.
	var stepDown, serving time.Duration
	var newLeader *proc
	for stepDown == 0 || newLeader == nil {
		if stepDown == 0 {
			if st, err := old.status(); err == nil && st.State != "Leader" {
				stepDown = time.Since(cut)
			}
		}
		for _, p := range majority {
			if st, err := p.status(); newLeader == nil && err == nil && st.State == "Leader" && st.Ready {
				newLeader, serving = p, time.Since(cut)
			}
		}
		if time.Since(cut) > 20*time.Second {
			t.Fatalf("20s after the cut: isolated leader stepped down after %s, majority leader %v", ms(stepDown), newLeader)
		}
		time.Sleep(20 * time.Millisecond)
	}
	report(t, "partition: isolated %s stopped leading %s after the cut; majority leader %s serving %s after the cut",
		old.id, ms(stepDown), newLeader.id, ms(serving))

	// The new leader rolls back T1's prepared SurrealDB branch (presumed
	// abort) while the old leader is cut off.
	eventually(t, 20*time.Second, "T1's SurrealDB branch rolled back by the majority", func() bool {
		return !s.surIntent(c.gid(t1.ID(), "surreal"))
	})
	t.Logf("T1's SurrealDB intent rolled back by the majority %s after the cut", ms(time.Since(cut)))

	// Let T1's PostgreSQL PREPARE finish: the branch becomes prepared (the
	// old leader's connection to PostgreSQL is up); it must end rolled back.
	blk.release()
	eventually(t, 20*time.Second, "T1's PostgreSQL PREPARE finished", func() bool {
		return !s.prepareWaiting(c.gid(t1.ID(), "pg"))
	})
	eventually(t, 20*time.Second, "T1's PostgreSQL branch not prepared", func() bool {
		return !s.pgIsPrepared(c.gid(t1.ID(), "pg"))
	})
	var t1Err error
	select {
	case t1Err = <-t1Done:
	case <-time.After(30 * time.Second):
		t.Fatal("T1's Commit on the isolated leader did not return within 30s")
	}
	if t1Err == nil {
		t.Fatal("T1 committed on the isolated leader")
	}
	t.Logf("T1's Commit on the isolated leader: %v", t1Err)
	assertAllOrNothing(t, s, k1, "t1", false)
	var t2Err error
	select {
	case t2Err = <-t2Done:
	case <-time.After(30 * time.Second):
		t.Fatal("T2's Commit on the isolated leader did not return within 30s")
	}
	if t2Err == nil {
		t.Fatal("T2 committed on the isolated leader")
	}
	t.Logf("T2's Commit on the isolated leader: %v", t2Err)
	eventually(t, 20*time.Second, "T2 not prepared anywhere (rolled back)", func() bool {
		return !s.pgIsPrepared(c.gid(t2.ID(), "pg")) && !s.surIntent(c.gid(t2.ID(), "surreal"))
	})
	assertAllOrNothing(t, s, k2, "t2", false)

	// The majority goes on committing.
	onMajority := c.dial(majority...)
	var newKeys []string
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("%s-m%d", c.id, i)
		runCommitted(t, onMajority, k)
		newKeys = append(newKeys, k)
	}
	for _, tx := range []*client.Tx{t1, t2} {
		info, err := onMajority.GetTransaction(ctx, tx.ID())
		if err != nil || info.Outcome != pb.Outcome_ABORTED {
			t.Fatalf("%s at the new leader: %v %v, want ABORTED", tx.ID(), info.GetOutcome(), err)
		}
	}

	// The isolated node decided nothing: its store is exactly as before.
	during, err := old.digest()
	if err != nil {
		t.Fatal(err)
	}
	if during.AppliedIndex != before.AppliedIndex || during.Sha256 != before.Sha256 {
		t.Fatalf("the isolated node's decision store changed: %s → %s", digestLine([]*pb.StoreDigestResponse{before}), digestLine([]*pb.StoreDigestResponse{during}))
	}
	if st, err := old.status(); err != nil || st.State == "Leader" {
		t.Fatalf("the isolated node still leads: %s %v", statusLine(st), err)
	}
	isolatedLog := old.logSince(logOff)
	if strings.Contains(isolatedLog, "presumed abort") {
		t.Fatalf("the isolated node ran presumed abort:\n%s", grepLines(isolatedLog, "presumed abort"))
	}
	report(t, "partition: recovery scans the isolated node started while it still believed it led (each fenced by its Barrier): %d",
		strings.Count(isolatedLog, "barrier: leadership lost"))
	t.Logf("what the isolated node logged about its own undecided T1 and T2:\n%s", grepLines(isolatedLog, "roll", "abort", "commit"))

	// Heal and converge.
	healed := time.Now()
	for _, p := range majority {
		c.links[old.id][p.id].Heal()
		c.links[p.id][old.id].Heal()
	}
	final := c.leader()
	c.waitConverged(30*time.Second, c.procs...)
	report(t, "partition: healed; stores identical %s after the heal (leader %s)", ms(time.Since(healed)), final.id)

	c.assertNothingInDoubt(s)
	assertAllOrNothing(t, s, pre, "pre", true)
	assertAllOrNothing(t, s, k1, "t1", false)
	assertAllOrNothing(t, s, k2, "t2", false)
	for _, k := range newKeys {
		assertAllOrNothing(t, s, k, k, true)
	}
	finalCl := c.dial(final)
	for _, tx := range []*client.Tx{t1, t2} {
		if o, err := finalCl.WaitOutcome(ctx, tx.ID()); err != nil || o != pb.Outcome_ABORTED {
			t.Fatalf("%s after the heal: %s %v, want ABORTED", tx.ID(), o, err)
		}
	}
}

// runCommitted runs one cross-store transaction writing key=key until it
// commits: an unknown outcome with a txid is resolved with WaitOutcome; an
// abort, or a refusal or transport failure before a txid existed, is retried
// (the key is reused, so an attempt that did commit unseen makes the retry
// fail on the primary key and the test fail). Retries are logged: on a quiet
// cluster there are none.
func runCommitted(t *testing.T, cl *client.Client, key string) string {
	t.Helper()
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		txid, _, err := cl.Run(cctx, client.TxOptions{},
			client.On("pg", client.SQL("INSERT INTO cluster_kv (k, v) VALUES ($1, $1)", key)),
			client.On("surreal", client.Upsert(kvTable, key, map[string]any{"v": key})))
		cancel()
		var ce *client.Error
		errors.As(err, &ce)
		switch {
		case err == nil:
			return txid
		case errors.Is(err, client.ErrOutcomeUnknown) && ce != nil && ce.TxID != "":
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			o, werr := cl.WaitOutcome(wctx, ce.TxID)
			cancel()
			if werr != nil {
				t.Fatalf("%s: outcome of %s: %v", key, ce.TxID, werr)
			}
			if o == pb.Outcome_COMMITTED {
				return ce.TxID
			}
		case ce != nil && (errors.Is(err, client.ErrAborted) || ce.TxID == "" &&
			(errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrOutcomeUnknown))):
		default:
			t.Fatalf("%s: %v", key, err)
		}
		if attempt >= 10 {
			t.Fatalf("%s: not committed after %d attempts; last: %v", key, attempt, err)
		}
		t.Logf("%s: attempt %d did not commit (%v); retrying", key, attempt, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// grepLines returns the lines of text containing any of words.
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, "\n")
}
