package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
)

// TestRunMovesOffDeadNode checks that a client using only the Run API keeps
// working when the node it talks to dies for good: the client is given every
// node's address, the leader is SIGKILLed and not restarted, and the two
// survivors elect a new leader. Run on the dead node fails at the transport
// (reported as an unknown outcome without a txid, which is correct: the
// client cannot tell whether the request arrived); the next calls must go
// to another node and commit. (This test found that Run never moved off a
// dead node; fixed in client/client.go by 3d93c49.)
func TestRunMovesOffDeadNode(t *testing.T) {
	c := newCluster(t, "runmove", clusterOpts{tuned: true})
	s := openStores(t)
	c.startAll()
	leader := c.leader()
	survivors := c.others(leader)
	// The leader first, so that the client talks to it.
	cl := c.dial(append([]*proc{leader}, survivors...)...)
	runCommitted(t, cl, c.id+"-before")

	leader.kill()
	killed := time.Now()
	newLeader, readyAt := c.leaderAmong(20*time.Second, survivors...)
	t.Logf("killed leader %s; %s serving %s later", leader.id, newLeader.id, ms(readyAt.Sub(killed)))

	runs := runUntilCommitted(c, cl, killed, 10*time.Second, 10*time.Second)
	keys, failures, lastErr, committedAfter := runs.keys, runs.failures, runs.lastErr, runs.committedAfter
	report(t, "Run after the leader's death: first commit %s after the kill (0 = none in 10s); failures %v",
		ms(committedAfter), failures)

	// Whatever happened, nothing is half-done, and the cluster itself works.
	fresh := c.dial(survivors...)
	runCommitted(t, fresh, c.id+"-fresh")
	c.waitConverged(30*time.Second, survivors...)
	c.assertNothingInDoubt(s)
	for _, k := range keys {
		_, inPG, _, inSur := s.kvBoth(k)
		if inPG != inSur {
			t.Fatalf("NOT ATOMIC: %s postgres %v surrealdb %v", k, inPG, inSur)
		}
	}
	if committedAfter == 0 {
		t.Errorf("BUG: client.Run stays on the dead node %s: every Run for 10s after the kill failed (%v; last: %v) "+
			"while %s had been serving since %s after the kill and a fresh client commits at once: "+
			"Run must move to another node after a transport error (c.follow), as retry() does for Begin/GetTransaction.",
			leader.id, failures, lastErr, newLeader.id, ms(readyAt.Sub(killed)))
	}
}

// TestRunMovesOffHungNode: like TestRunMovesOffDeadNode, but the leader
// hangs (SIGSTOP) instead of dying. A hung node neither refuses nor
// redirects: each call to it ends in the caller's own deadline
// (DEADLINE_EXCEEDED). Proven: after such a timeout the client sends the
// next calls to another node and commits there once the survivors have
// elected a leader; everything ends atomic and nothing is in doubt once
// the node resumes.
func TestRunMovesOffHungNode(t *testing.T) {
	c := newCluster(t, "runhang", clusterOpts{tuned: true})
	s := openStores(t)
	c.startAll()
	leader := c.leader()
	survivors := c.others(leader)
	cl := c.dial(append([]*proc{leader}, survivors...)...)
	runCommitted(t, cl, c.id+"-before")

	leader.pause()
	paused := time.Now()
	t.Cleanup(func() {
		if leader.isPaused() {
			leader.resume()
		}
	})
	newLeader, readyAt := c.leaderAmong(20*time.Second, survivors...)
	t.Logf("paused leader %s; %s serving %s later", leader.id, newLeader.id, ms(readyAt.Sub(paused)))

	runs := runUntilCommitted(c, cl, paused, 15*time.Second, time.Second)
	keys, failures, lastErr, committedAfter := runs.keys, runs.failures, runs.lastErr, runs.committedAfter
	report(t, "Run after the leader hung: first commit %s after SIGSTOP (0 = none in 15s); failures %v",
		ms(committedAfter), failures)
	if committedAfter == 0 {
		t.Errorf("client.Run stays on the hung node %s: every Run for 15s after SIGSTOP failed (%v; last: %v) "+
			"while %s had been serving since %s after it: a call that times out must move the client to another node",
			leader.id, failures, lastErr, newLeader.id, ms(readyAt.Sub(paused)))
	}

	leader.resume()
	c.waitConverged(30*time.Second, c.procs...)
	c.assertNothingInDoubt(s)
	for _, k := range keys {
		_, inPG, _, inSur := s.kvBoth(k)
		if inPG != inSur {
			t.Fatalf("NOT ATOMIC: %s postgres %v surrealdb %v", k, inPG, inSur)
		}
	}
}

// runsUntilCommit is what runUntilCommitted saw.
type runsUntilCommit struct {
	keys           []string       // every key a Run tried to write
	failures       map[string]int // failed Runs by kind
	lastErr        error
	committedAfter time.Duration // since the fault; 0: no Run committed
}

// runUntilCommitted runs cross-store Runs (each bounded by callTimeout,
// 100 ms apart) until one commits or window has passed since the fault.
func runUntilCommitted(c *cluster, cl *client.Client, fault time.Time, window, callTimeout time.Duration) runsUntilCommit {
	r := runsUntilCommit{failures: map[string]int{}}
	for i := 0; time.Since(fault) < window; i++ {
		key := fmt.Sprintf("%s-after%03d", c.id, i)
		r.keys = append(r.keys, key)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, _, err := cl.Run(ctx, client.TxOptions{},
			client.On("pg", client.SQL("INSERT INTO cluster_kv (k, v) VALUES ($1, $1)", key)),
			client.On("surreal", client.Upsert(kvTable, key, map[string]any{"v": key})))
		cancel()
		if err == nil {
			r.committedAfter = time.Since(fault)
			return r
		}
		r.lastErr = err
		var ce *client.Error
		if errors.As(err, &ce) {
			r.failures[fmt.Sprintf("%s %s (txid known: %v)", ce.Code, errKind(err), ce.TxID != "")]++
		} else {
			r.failures[err.Error()]++
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

// errKind names the client error class of err.
func errKind(err error) string {
	if errors.Is(err, client.ErrOutcomeUnknown) {
		return "unknown outcome"
	}
	if errors.Is(err, client.ErrUnavailable) {
		return "unavailable"
	}
	return "other"
}
