package cluster

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestRollingRestart restarts all three nodes one at a time (SIGTERM, wait
// for the exit, start again, wait until it follows the leader and has
// applied what the leader had applied) under a steady load of 4 goroutines
// running cross-store transactions with the Run API.
//
// Proven: the cluster keeps deciding through every restart (the leader's
// included); a stopping leader hands leadership over before it exits; no decision is lost (every committed transaction's writes are
// in both stores and its decision in the log); every transaction is
// all-or-nothing, including those whose outcome the client could not learn;
// the only client-visible errors are UNAVAILABLE refusals and unknown
// outcomes (those with a txid resolved by WaitOutcome; counted and printed);
// at the end the three decision stores are identical and nothing is in doubt.
// Raft keeps its default timeouts (1 s) here: with 500 ms, a loaded 2-core
// machine misses heartbeats and leadership changes for no reason.
// "Caught up" means: following the leader with at least the applied index
// the leader had when the wait began (under load the leader moves on; with
// no load that is equality).
func TestRollingRestart(t *testing.T) {
	c := newCluster(t, "roll", clusterOpts{})
	s := openStores(t)
	c.startAll()
	c.leader()

	load := c.startLoad(4)
	time.Sleep(time.Second) // steady state before the first restart
	for _, p := range c.procs {
		leader := c.leader()
		wasLeader := p == leader
		began := time.Now()
		p.term(30 * time.Second)
		stopped := time.Since(began)
		if wasLeader {
			// A stopping leader drains and hands leadership over rather than
			// leaving the cluster to notice it is gone (Coordinator.Drain).
			body, err := os.ReadFile(p.logPath)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(body), "leadership handed over before shutdown") {
				t.Fatalf("leader %s stopped without handing leadership over; log tail:\n%s", p.id, p.logTail(30))
			}
		}
		time.Sleep(300 * time.Millisecond)
		p.launch()
		p.waitUp(30 * time.Second)
		up := time.Since(began)
		leader = c.leader()
		caught := time.Duration(0)
		if leader != p { // a restarted node may win the election and lead again
			caught = c.waitCaughtUp(p, leader, 30*time.Second)
		}
		time.Sleep(time.Second) // let the load run on the full cluster
		report(t, "rolling: %s (leader before: %v) stopped in %s, answering %s after SIGTERM, caught up with %s %s later; longest time without a commit %s",
			p.id, wasLeader, ms(stopped), ms(up), leader.id, ms(caught), ms(load.longestGap(began, time.Now())))
	}
	load.halt()
	report(t, "rolling: load %s", load.summary())

	leader := c.leader()
	c.waitConverged(30*time.Second, c.procs...)
	c.assertNothingInDoubt(s)
	load.check(s, leader)
}
