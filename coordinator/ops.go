package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/wal"
)

// Operator commands (txctl): listing, in-doubt diff, heuristic resolution,
// the audit trail and snapshots of the decision store.

// ErrDecisionConflict: a heuristic resolution would contradict a logged
// decision and was not forced.
var ErrDecisionConflict = errors.New("contradicts the logged decision")

// TxFilter selects transactions for ListTransactions.
type TxFilter struct {
	State       string // a State name; empty for any
	MinAge      time.Duration
	Participant string
	Label       string // key=value
	Sort        string // "age" (default) or "txid"
	Limit       int
}

// maxList bounds one listing.
const maxList = 10000

// ListTransactions lists active, recently finished and logged transactions
// known to this node, filtered and sorted; truncated reports more matches.
func (c *Coordinator) ListTransactions(f TxFilter) ([]*TxInfo, bool, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > maxList {
		return nil, false, fieldErr("limit", "at most %d", maxList)
	}
	if f.Sort != "" && f.Sort != "age" && f.Sort != "txid" {
		return nil, false, fieldErr("sort", "%q: use age or txid", f.Sort)
	}
	if f.State != "" {
		known := false
		for _, s := range AllStates {
			known = known || s.String() == f.State
		}
		if !known {
			return nil, false, fieldErr("state", "%q: use one of ACTIVE, PREPARING, COMMITTING, ABORTING, COMMITTED, ABORTED, IN_DOUBT", f.State)
		}
	}
	var lk, lv string
	if f.Label != "" {
		var ok bool
		if lk, lv, ok = strings.Cut(f.Label, "="); !ok {
			return nil, false, fieldErr("label", "%q: want key=value", f.Label)
		}
	}
	byID := map[string]*TxInfo{}
	c.mu.Lock()
	active := make([]*txn, 0, len(c.active))
	for _, t := range c.active {
		active = append(active, t)
	}
	for id, info := range c.recent {
		byID[id] = info
	}
	c.mu.Unlock()
	for _, t := range active {
		byID[t.id] = c.info(t)
	}
	recs, err := c.store.List(wal.Filter{})
	if err != nil {
		return nil, false, err
	}
	for _, rec := range recs {
		if _, ok := byID[rec.TxID]; !ok || rec.Heuristic {
			byID[rec.TxID] = recordInfo(rec, c)
		}
	}
	now := c.now()
	var out []*TxInfo
	for _, info := range byID {
		if f.State != "" && info.State.String() != f.State {
			continue
		}
		if f.MinAge > 0 && now.Sub(info.CreatedAt) < f.MinAge {
			continue
		}
		if f.Participant != "" && !hasBranch(info, f.Participant) {
			continue
		}
		if lk != "" && info.Labels[lk] != lv {
			continue
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if f.Sort == "txid" || out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].TxID < out[j].TxID
		}
		return out[i].CreatedAt.Before(out[j].CreatedAt)
	})
	truncated := len(out) > f.Limit
	if truncated {
		out = out[:f.Limit]
	}
	return out, truncated, nil
}

func hasBranch(info *TxInfo, participant string) bool {
	for _, b := range info.Branches {
		if b.Participant == participant {
			return true
		}
	}
	return false
}

// Resolve records an operator's heuristic decision for txid and drives the
// branches to it. It refuses (ErrDecisionConflict) to contradict a logged
// decision unless force; every accepted use is in the audit trail.
func (c *Coordinator) Resolve(ctx context.Context, txid string, commit bool, reason, actor string, force bool) (*TxInfo, *wal.AuditEntry, error) {
	actor, err := c.checkOperatorCall(txid, reason, "say why the coordinator's own recovery is overridden", actor)
	if err != nil {
		return nil, nil, err
	}
	if c.inFlight(txid) {
		return nil, nil, fmt.Errorf("%w: %s is in flight on the leader; let it finish or time out", ErrNotActive, txid)
	}
	outcome := wal.OutcomeAbort
	if commit {
		outcome = wal.OutcomeCommit
	}
	// The participants that hold a prepared branch of txid now.
	names := c.participantList()
	held, err := c.preparedBranches(ctx, txid, names)
	if err != nil {
		return nil, nil, err
	}
	var parts []string
	var receipts map[string]string
	for _, name := range names {
		b, ok := held[name]
		if !ok {
			continue
		}
		parts = append(parts, name)
		if b.Receipt != "" {
			if receipts == nil {
				receipts = map[string]string{}
			}
			receipts[name] = b.Receipt
		}
	}
	prev, err := c.store.Get(txid)
	if err != nil {
		return nil, nil, err
	}
	detail := fmt.Sprintf("heuristic %s; prepared on [%s]", outcome, strings.Join(parts, ","))
	if prev != nil && prev.Outcome != outcome {
		if !force {
			return nil, nil, fmt.Errorf("%w: %s has a logged %s decision (raft index %d); resolving it %s needs --force",
				ErrDecisionConflict, txid, prev.Outcome, prev.Index, outcome)
		}
		// Even forced, a contradiction is only possible while every branch
		// of the logged decision is still prepared: one already applied
		// cannot be undone, and the result would be a mixed outcome.
		var applied []string
		for _, p := range prev.Participants {
			if !slices.Contains(parts, p) {
				applied = append(applied, p)
			}
		}
		if len(applied) > 0 {
			return nil, nil, fmt.Errorf("%w: %s's logged %s was already applied on [%s]; a forced %s would leave it half done, so it is refused",
				ErrDecisionConflict, txid, prev.Outcome, strings.Join(applied, ","), outcome)
		}
		detail += fmt.Sprintf("; FORCED over the logged %s decision", prev.Outcome)
	}
	now := c.now().UnixMilli()
	cmd := wal.Command{Type: wal.CmdResolve, Force: force,
		Decision: &wal.Record{TxID: txid, Outcome: outcome, Participants: parts, Receipts: receipts, Reason: reason, CreatedMs: txidTime(txid).UnixMilli(), DecidedMs: now},
		Audit:    &wal.AuditEntry{AtMs: now, Actor: actor, Action: "RESOLVE", TxID: txid, Detail: detail, Reason: reason}}
	f := c.raft.Apply(cmd.Encode(), c.cfg.ApplyTimeout)
	if err := c.wait(f); err != nil {
		return nil, nil, fmt.Errorf("%w: log the resolution: %v", ErrOutcomeUnknown, err)
	}
	res := f.Response().(*wal.ApplyResult)
	if res.Err != nil {
		return nil, nil, res.Err
	}
	if res.Conflict && !force {
		return nil, nil, fmt.Errorf("%w: %s was decided %s meanwhile", ErrDecisionConflict, txid, res.Record.Outcome)
	}
	c.log.Warn("heuristic resolution", "txid", txid, "outcome", outcome, "actor", actor, "force", force, "reason", reason)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RecoveryStartupWait)
	_, rerr := c.RecoveryPass(rctx, false)
	cancel()
	if rerr != nil {
		c.log.Warn("recovery after resolution incomplete; the periodic scan retries", "txid", txid, "err", rerr)
	}
	info, err := c.GetTransaction(ctx, txid)
	if err != nil {
		return nil, nil, err
	}
	entries, _, _ := c.store.QueryAudit(wal.AuditQuery{Action: "RESOLVE", TxID: txid, Limit: 1})
	var entry *wal.AuditEntry
	if len(entries) == 1 {
		entry = &entries[0]
	}
	return info, entry, nil
}

// Audit returns the audit entries q selects and the verdict on the whole
// hash chain.
func (c *Coordinator) Audit(q wal.AuditQuery) ([]wal.AuditEntry, wal.AuditVerdict, error) {
	return c.store.QueryAudit(q)
}

// Audit appends an operator action to the audit trail (leader only; a
// failure is logged, not returned: the action itself already happened).
func (c *Coordinator) AuditAction(action, detail, actor string) { c.audit(action, detail, actor) }

// audit appends an entry through Raft (membership changes, restores).
func (c *Coordinator) audit(action, detail, actor string) {
	e := &wal.AuditEntry{AtMs: c.now().UnixMilli(), Actor: actor, Action: action, Detail: detail}
	if err := c.wait(c.raft.Apply(wal.Command{Type: wal.CmdAudit, Audit: e}.Encode(), c.cfg.ApplyTimeout)); err != nil {
		c.log.Warn("audit entry not logged", "action", action, "err", err)
	}
}

// SaveSnapshot writes a consistent copy of this node's decision store.
func (c *Coordinator) SaveSnapshot(w io.Writer) (int64, error) {
	return c.store.WriteTo(w)
}

// RestoreSnapshot replaces the cluster's decision state with a snapshot
// saved by SaveSnapshot, through Raft's user restore (every node installs
// it). The snapshot is validated first, and its applied index reset, since
// it may come from a log that is not this cluster's.
func (c *Coordinator) RestoreSnapshot(r io.Reader, actor string) (int, error) {
	if err := c.mustLead(); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "txcoord-restore")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "decisions.db")
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return 0, fmt.Errorf("receive snapshot: %w", err)
	}
	f.Close()
	n, err := wal.PrepareRestore(path, c.cfg.ClusterID)
	if errors.Is(err, wal.ErrOtherCluster) {
		return 0, fieldErr("snapshot", "was saved by another cluster (%v); its decisions are about GIDs this cluster never touches: restore a snapshot of this cluster", err)
	}
	if err != nil {
		return 0, fieldErr("snapshot", "not a valid decision store: %v", err)
	}
	in, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return 0, err
	}
	// The snapshot's member table is another cluster's (or an older one):
	// keep this cluster's addresses across the restore.
	members, err := c.store.Members()
	if err != nil {
		return 0, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: st.Size()}
	if err := c.raft.Restore(meta, in, 2*time.Minute); err != nil {
		return 0, fmt.Errorf("%w: raft restore: %v", ErrUnavailable, err)
	}
	if restored, err := c.store.Members(); err == nil {
		for id := range restored {
			if _, ok := members[id]; !ok {
				c.raft.Apply(wal.Command{Type: wal.CmdMember, NodeID: id}.Encode(), c.cfg.ApplyTimeout)
			}
		}
		for id, addr := range members {
			if restored[id] != addr {
				if err := c.wait(c.raft.Apply(wal.Command{Type: wal.CmdMember, NodeID: id, Addr: addr}.Encode(), c.cfg.ApplyTimeout)); err != nil {
					c.log.Warn("could not re-log a member address after restore", "node", id, "err", err)
				}
			}
		}
	}
	c.audit("SNAPSHOT_RESTORE", fmt.Sprintf("%d decisions restored", n), actor)
	c.log.Warn("decision store restored from a snapshot", "decisions", n, "actor", actor)
	return n, nil
}

// maxDenialAudits bounds authorization denials written to the audit trail
// per second: a client hammering with a bad token must not flood the log
// (the rest are counted and logged locally).
const maxDenialAudits = 10

// AuditDenial records an authorization denial: in the audit trail when this
// node leads (bounded per second), in the local log always.
func (c *Coordinator) AuditDenial(identity, method, reason string) {
	c.log.Warn("access denied", "client", identity, "method", method, "reason", reason)
	if c.raft.State() != raft.Leader {
		return
	}
	c.mu.Lock()
	now := c.now()
	if now.Sub(c.denialWindow) >= time.Second {
		c.denialWindow, c.denialCount = now, 0
	}
	c.denialCount++
	over := c.denialCount > maxDenialAudits
	c.mu.Unlock()
	if over {
		return
	}
	if identity == "" {
		identity = "unauthenticated"
	}
	go c.audit("AUTHZ_DENIED", method+": "+reason, identity)
}

// checkOperatorCall checks what every operator call on a txid needs — a
// valid txid, a reason (why says what it should tell), a serving leader —
// and returns the actor to record ("unknown" when none was given).
func (c *Coordinator) checkOperatorCall(txid, reason, why, actor string) (string, error) {
	if err := validateTxID(txid); err != nil {
		return "", err
	}
	if strings.TrimSpace(reason) == "" {
		return "", fieldErr("reason", "is required: %s", why)
	}
	if actor == "" {
		actor = "unknown"
	}
	if err := c.serving(); err != nil {
		return "", err
	}
	return actor, nil
}

// ActionMarkDone is the audit action of MarkDone.
const ActionMarkDone = "MARK_DONE"

// MarkDone closes a logged decision that recovery cannot carry out — a
// COMMIT whose branch its database no longer holds prepared (ErrNotPrepared:
// a restored backup, a ROLLBACK PREPARED by hand) once an operator has
// repaired the data — by marking it done through Raft, with its audit
// entry, so recovery stops driving it and retention forgets it. It refuses
// (ErrDecisionConflict) while any of the decision's branches is still
// prepared: recovery (txctl recover) carries those out. A decision already
// done is returned as it is, with no audit entry.
func (c *Coordinator) MarkDone(ctx context.Context, txid, reason, actor string) (*TxInfo, *wal.AuditEntry, error) {
	actor, err := c.checkOperatorCall(txid, reason, "say how the decision was carried out or repaired", actor)
	if err != nil {
		return nil, nil, err
	}
	if c.inFlight(txid) || c.beingMarked(txid) {
		return nil, nil, fmt.Errorf("%w: %s is in flight on the leader; let it finish", ErrNotActive, txid)
	}
	rec, err := c.store.Get(txid)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read decision store: %v", ErrUnavailable, err)
	}
	if rec == nil {
		return nil, nil, fmt.Errorf("%w: no decision is logged for %s", ErrNotFound, txid)
	}
	if !rec.Done {
		held, err := c.preparedBranches(ctx, txid, rec.Participants)
		if err != nil {
			return nil, nil, err
		}
		var prepared []string
		for _, name := range rec.Participants {
			if _, ok := held[name]; ok {
				prepared = append(prepared, name)
			}
		}
		if len(prepared) > 0 {
			return nil, nil, fmt.Errorf("%w: %s's branches on [%s] are still prepared: txctl recover carries out its logged %s; mark done only a decision none of whose branches is prepared",
				ErrDecisionConflict, txid, strings.Join(prepared, ","), rec.Outcome)
		}
		now := c.now().UnixMilli()
		cmd := wal.Command{Type: wal.CmdDone, TxIDs: []string{txid}, AtMs: now,
			Audit: &wal.AuditEntry{AtMs: now, Actor: actor, Action: ActionMarkDone, TxID: txid, Reason: reason,
				Detail: fmt.Sprintf("logged %s marked done by an operator; no branch prepared on [%s]", rec.Outcome, strings.Join(rec.Participants, ","))}}
		if err := c.wait(c.raft.Apply(cmd.Encode(), c.cfg.ApplyTimeout)); err != nil {
			return nil, nil, fmt.Errorf("%w: log the done mark: %v", ErrOutcomeUnknown, err)
		}
		c.log.Warn("decision marked done by an operator", "txid", txid, "outcome", rec.Outcome, "actor", actor, "reason", reason)
	}
	info, err := c.GetTransaction(ctx, txid)
	if err != nil {
		return nil, nil, err
	}
	if rec.Done {
		return info, nil, nil
	}
	entries, _, _ := c.store.QueryAudit(wal.AuditQuery{Action: ActionMarkDone, TxID: txid, Limit: 1})
	var entry *wal.AuditEntry
	if len(entries) == 1 {
		entry = &entries[0]
	}
	return info, entry, nil
}

// preparedBranches asks each named participant whether it holds txid's
// branch prepared now, and returns the branches that are, by participant.
// A participant that is not configured here or cannot be listed is an
// error wrapping ErrUnavailable: nothing is guessed.
func (c *Coordinator) preparedBranches(ctx context.Context, txid string, names []string) (map[string]participants.InDoubtBranch, error) {
	held := map[string]participants.InDoubtBranch{}
	for _, name := range names {
		p, ok := c.parts[name]
		if !ok {
			return nil, fmt.Errorf("%w: participant %q is not configured on this node, so whether it holds %s's branch prepared cannot be checked", ErrUnavailable, name, txid)
		}
		gid := c.GID(txid, name)
		lctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		bs, err := p.InDoubt(lctx, gid)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: list %q: %v", ErrUnavailable, name, err)
		}
		for _, b := range bs {
			if b.GID == gid {
				held[name] = b
			}
		}
	}
	return held, nil
}
