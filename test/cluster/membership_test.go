package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// TestMembershipUnderLoad grows a 3-node cluster to 5 voters (n4 and n5 start
// with raft.join naming one follower, and ask to be added) and then removes
// the leader with RemoveServer, all under a load of 3 goroutines running
// cross-store transactions.
//
// Proven: joining nodes are added as voters with their gRPC addresses and
// catch up; removing the leader hands leadership to one of the remaining
// four; the cluster keeps deciding throughout (the load commits in every
// phase); ClusterStatus on every remaining member shows exactly the four
// expected voters; at the end their four decision stores are identical at
// one applied index, nothing is in doubt, and the load's work is atomic with
// no decision lost. Also required: the RemoveServer call and every Run the
// removed leader accepted are answered (bounded waits; a removed leader
// whose Raft shut down must not hold calls forever). Raft keeps its default
// timeouts (1 s), which a loaded 2-core machine keeps without flapping.
func TestMembershipUnderLoad(t *testing.T) {
	c := newCluster(t, "member", clusterOpts{})
	s := openStores(t)
	c.startAll()
	leader := c.leader()
	load := c.startLoad(3)
	time.Sleep(time.Second)

	follower := c.procs[0]
	if follower == leader {
		follower = c.procs[1]
	}
	for _, id := range []string{"n4", "n5"} {
		p := c.newProc(id)
		c.procs = append(c.procs, p)
		c.writeConfig(p, []string{follower.grpc})
		began := time.Now()
		committedBefore := load.committed()
		p.launch()
		p.waitUp(30 * time.Second)
		eventually(t, 40*time.Second, id+" is a voter in the leader's configuration", func() bool {
			st, err := c.leader().status()
			return err == nil && hasVoter(st.Members, id, p.grpc)
		})
		leader = c.leader()
		caught := c.waitCaughtUp(p, leader, 30*time.Second)
		t.Logf("%s joined; longest time without a commit meanwhile %s", id, ms(load.longestGap(began, time.Now())))
		report(t, "membership: %s joined via %s in %s (caught up with %s %s after being added); %d transactions committed meanwhile",
			id, follower.id, ms(time.Since(began)), leader.id, ms(caught), load.committed()-committedBefore)
		time.Sleep(500 * time.Millisecond)
	}
	expectVoters(t, c, c.live(), "n1", "n2", "n3", "n4", "n5")

	// Remove the leader.
	victim := c.leader()
	var rest []*proc
	var restIDs []string
	for _, p := range c.procs {
		if p != victim {
			rest = append(rest, p)
			restIDs = append(restIDs, p.id)
		}
	}
	committedBefore := load.committed()
	began := time.Now()
	// A healthy coordinator answers an admin call within its own bounds
	// (membershipTimeout 30 s); 40 s is a bound on waiting, not a timing.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	err := c.dial(victim).RemoveServer(ctx, victim.id)
	cancel()
	if err != nil {
		hangs := victim.dumpStacks("raft.(*deferError).Error")
		t.Errorf("BUG: RemoveServer(%s) sent to %s itself (the leader) did not answer: %v. The removed leader shuts Raft "+
			"down (ShutdownOnRemove) and a raft future waited on without bound is never answered. Goroutines of %s waiting on raft futures:\n%s",
			victim.id, victim.id, err, victim.id, hangs)
	}
	newLeader, readyAt := c.leaderAmong(30*time.Second, rest...)
	report(t, "membership: removed leader %s; %s serving %s after RemoveServer was sent", victim.id, newLeader.id, ms(readyAt.Sub(began)))

	// Every Run begun before the new leader served must be answered (by the removed
	// node or another) before the removed node is stopped: a node that
	// holds an RPC forever hides it until its shutdown cuts it off. Bound:
	// prepare_timeout 10 s + apply_timeout 5 s + commit_reply_wait 5 s
	// answer any Run; 25 s is a bound on waiting.
	// Runs begun until the new leader served may have reached the victim.
	if oldest, stuck := load.waitAnswered(readyAt, 25*time.Second); stuck > 0 {
		hangs := "(the removed node had already exited)"
		if victim.running() {
			hangs = victim.dumpStacks("raft.(*deferError).Error")
		}
		t.Errorf("BUG: %d Run call(s) begun before leader %s was replaced still unanswered 25s later (the oldest began %s after "+
			"RemoveServer was sent). The removed leader's Raft shut itself down (ShutdownOnRemove) while the coordinator waited on a raft "+
			"future that is never answered after shutdown (applyDecision has no bound: coordinator/phasetwo.go). Goroutines of %s "+
			"waiting on raft futures:\n%s", stuck, victim.id, ms(oldest.Sub(began)), victim.id, hangs)
	}
	if victim.running() {
		termAt := time.Now()
		victim.term(30 * time.Second)
		t.Logf("the removed node stopped %s after SIGTERM", ms(time.Since(termAt)))
	}
	eventually(t, 30*time.Second, "the load commits after the removal", func() bool { return load.committed() > committedBefore+10 })
	time.Sleep(time.Second)
	t.Logf("removal: longest time without a commit %s", ms(load.longestGap(began, time.Now())))
	load.halt()
	report(t, "membership: load %s", load.summary())

	expectVoters(t, c, rest, restIDs...)
	final := c.leader()
	c.waitConverged(30*time.Second, rest...)
	expectVoters(t, c, rest, restIDs...)
	c.assertNothingInDoubt(s)
	load.check(s, final)
}

func hasVoter(ms []*pb.Member, id, grpc string) bool {
	for _, m := range ms {
		if m.Id == id && m.Suffrage == "VOTER" && (grpc == "" || m.GrpcAddress == grpc) {
			return true
		}
	}
	return false
}

// expectVoters waits (bounded) until every node in ps reports exactly the
// voters ids, each with its gRPC address, and the same leader.
func expectVoters(t *testing.T, c *cluster, ps []*proc, voters ...string) {
	t.Helper()
	want := append([]string(nil), voters...)
	sort.Strings(want)
	var last string
	ok := func() bool {
		leaders := map[string]bool{}
		for _, p := range ps {
			st, err := p.status()
			if err != nil {
				last = fmt.Sprintf("%s: %v", p.id, err)
				return false
			}
			var got []string
			for _, m := range st.Members {
				addr := c.byID(m.Id)
				if m.Suffrage != "VOTER" || addr == nil || m.GrpcAddress != addr.grpc {
					last = fmt.Sprintf("%s sees %s as %s at %q", p.id, m.Id, m.Suffrage, m.GrpcAddress)
					return false
				}
				got = append(got, m.Id)
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				last = fmt.Sprintf("%s sees voters %v", p.id, got)
				return false
			}
			leaders[st.LeaderId] = true
		}
		if len(leaders) != 1 || leaders[""] {
			last = fmt.Sprintf("leaders seen: %v", leaders)
			return false
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("membership is not %v on %s: %s", want, ids(ps), last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ClusterStatus on %s: voters %v", ids(ps), want)
}
