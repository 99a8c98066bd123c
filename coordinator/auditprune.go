package coordinator

import (
	"github.com/txcoord/txcoord/wal"
)

// pruneAuditBatches bounds the prune entries one scan sends (each deletes
// at most a few thousand entries): a backlog drains over a few scans.
const pruneAuditBatches = 16

// pruneAudit deletes audit entries older than the audit retention, through
// Raft (CmdAuditPrune), so every replica prunes the same entries and keeps
// the same anchor. Leader only; called by the periodic scan. A failure is
// logged: the next scan tries again.
func (c *Coordinator) pruneAudit() {
	if c.cfg.AuditRetention <= 0 {
		return
	}
	cutoff := c.now().Add(-c.cfg.AuditRetention).UnixMilli()
	for i := 0; i < pruneAuditBatches; i++ {
		before, err := c.store.AuditPrunePoint(cutoff, 4096)
		if err != nil || before == 0 {
			return
		}
		cmd := wal.Command{Type: wal.CmdAuditPrune, AuditBefore: before, AtMs: c.now().UnixMilli()}
		if err := c.wait(c.raft.Apply(cmd.Encode(), c.cfg.ApplyTimeout)); err != nil {
			c.log.Warn("prune the audit trail", "before_seq", before, "err", err)
			return
		}
	}
}
