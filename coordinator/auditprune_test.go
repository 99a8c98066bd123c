package coordinator

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/wal"
)

// Audit entries older than the audit retention are pruned by the leader
// through Raft; what is left verifies from the anchor, and younger entries
// stay.
func TestAuditRetentionPrunesThroughRaft(t *testing.T) {
	var skew atomic.Int64
	h := newHarness(t, TestingKnobs{}, func(c *Config) { c.AuditRetention = time.Hour })
	h.c.mu.Lock()
	h.c.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	h.c.mu.Unlock()
	for i := 0; i < 5; i++ {
		txid := h.begin(t, write("a"), write("b"))
		if err := h.c.Commit(context.Background(), txid); err != nil {
			t.Fatal(err)
		}
	}
	h.settle(t)
	h.c.pruneAudit()
	if _, v, _ := h.store.QueryAudit(wal.AuditQuery{}); v.AnchorSeq != 0 || v.Entries != 5 {
		t.Fatalf("pruned entries younger than the retention: %+v", v)
	}
	skew.Store(int64(2 * time.Hour))
	h.c.pruneAudit()
	es, v, err := h.store.QueryAudit(wal.AuditQuery{})
	if err != nil || !v.OK || v.AnchorSeq != 5 || len(es) != 1 || es[0].Action != wal.ActionAuditPrune || es[0].PrevHash != v.AnchorHash {
		t.Fatalf("after the retention: %+v %+v %v", v, es, err)
	}
}
