package coordinator

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// ErrDraining: this node is shutting down and takes no new transactions.
// It wraps ErrUnavailable, so clients retry elsewhere.
var ErrDraining = fmt.Errorf("%w: this node is shutting down and takes no new transactions; retry (the client moves to the next leader)", ErrUnavailable)

// Draining reports whether Drain was called: the node refuses new
// transactions while those it holds finish.
func (c *Coordinator) Draining() bool { return c.draining.Load() }

// Drain prepares a clean shutdown. From its call on, Begin and Run answer
// ErrDraining; transactions this node already holds may still Execute,
// Commit and Rollback. It waits until none is held or timeout passes, then,
// if this node leads a cluster with other voters, hands leadership to the
// most up-to-date one, so the cluster elects at once instead of after an
// election timeout, and clients that follow redirects find the new leader.
// It returns the number of transactions still held when it stopped waiting
// (the next leader's recovery resolves those). Drain is for shutdown only:
// there is no way back but a restart.
func (c *Coordinator) Drain(timeout time.Duration) (left int) {
	c.mu.Lock()
	c.draining.Store(true)
	c.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		if left = c.ActiveCount(); left == 0 {
			break
		}
		select {
		case <-deadline.C:
			break wait
		case <-c.stop:
			break wait
		case <-tick.C:
		}
	}
	if left > 0 {
		c.log.Warn("shutting down with transactions still held; the next leader's recovery resolves them", "held", left)
	}
	if c.raft.State() != raft.Leader || !c.hasOtherVoter() {
		return left
	}
	to, err := c.TransferLeadership("", "shutdown")
	if err != nil {
		c.log.Warn("leadership transfer before shutdown failed; the cluster elects after its election timeout", "err", err)
		return left
	}
	c.log.Info("leadership handed over before shutdown", "to", to)
	return left
}

// hasOtherVoter reports whether the cluster has a voter besides this node
// (a single-node cluster has nobody to hand leadership to).
func (c *Coordinator) hasOtherVoter() bool {
	f := c.raft.GetConfiguration()
	if err := c.wait(f); err != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != c.cfg.NodeID {
			return true
		}
	}
	return false
}
