package txctl

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/wal"
)

func (o *options) inspectCommand() *cobra.Command {
	var dataDir, file, txid string
	var pending bool
	var limit int
	c := &cobra.Command{
		Use:   "inspect (--data-dir DIR | --file SNAPSHOT)",
		Short: "Read a STOPPED node's decision store offline, read-only: records, members, audit verification",
		Long: `Opens a stopped node's decisions.db (in its data_dir), or a snapshot saved with
txctl snapshot save, READ-ONLY — bbolt takes a shared lock and writes nothing,
so the files stay byte-identical — and shows:

  the store's applied Raft index and content digest (compare replicas with it),
  how far raft.db's log goes beyond it (entries replayed when the node starts),
  every decision record (outcome, done, heuristic, participants, times, index),
  the members' gRPC addresses, and the audit trail with its hash-chain check.

For disaster recovery: which decisions did the cluster hold, which were not
finished (done = no), which were set by an operator, was the audit trail
tampered with. A running node holds the file's lock: stop it first, or ask the
live cluster instead. Exit 3 when the audit chain does not verify.`,
		Example: `  txctl inspect --data-dir /var/lib/txcoord/n1
  txctl inspect --data-dir /var/lib/txcoord/n1 --pending
  txctl inspect --file decisions-2026-11-26.snap --txid 0190a1b2c3d4e5f60718
  txctl inspect --data-dir /var/lib/txcoord/n1 -o json | jq '.audit.verified'`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			path := dataDir
			if file != "" {
				path = file
			}
			if limit < 0 {
				return exitf(ExitUsage, "--limit %d: must be >= 0 (0 = all)", limit)
			}
			v, err := readStore(path)
			if err != nil {
				return exitf(ExitFailure, "inspect %s: %v", path, err)
			}
			recs := filterRecords(v.Records, txid, pending, limit)
			if o.json() {
				if err := o.printJSON(inspectJSON(v, recs)); err != nil {
					return err
				}
			} else {
				o.printInspect(v, recs, len(v.Records))
			}
			if !v.AuditVerdict.OK {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "", "a stopped node's data_dir (holds decisions.db and raft.db)")
	f.StringVar(&file, "file", "", "a decision store file instead (a saved snapshot, or decisions.db itself)")
	f.StringVar(&txid, "txid", "", "show only this transaction's record")
	f.BoolVar(&pending, "pending", false, "show only records whose phase two is not done")
	f.IntVar(&limit, "limit", 0, "show at most this many records (0 = all)")
	c.MarkFlagsOneRequired("data-dir", "file")
	c.MarkFlagsMutuallyExclusive("data-dir", "file")
	_ = c.MarkFlagDirname("data-dir")
	return c
}

func filterRecords(recs []*wal.Record, txid string, pending bool, limit int) []*wal.Record {
	var out []*wal.Record
	for _, r := range recs {
		if (txid != "" && r.TxID != txid) || (pending && r.Done) {
			continue
		}
		out = append(out, r)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// auditJSON is an audit entry as txctl prints it (times as RFC 3339).
type auditJSON struct {
	Seq      uint64 `json:"seq"`
	At       string `json:"at"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	TxID     string `json:"txid"`
	Detail   string `json:"detail"`
	Reason   string `json:"reason"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

func auditEntryJSON(a wal.AuditEntry) auditJSON {
	return auditJSON{Seq: a.Seq, At: tsTime(msTime(a.AtMs)), Actor: a.Actor, Action: a.Action, TxID: a.TxID,
		Detail: a.Detail, Reason: a.Reason, PrevHash: a.PrevHash, Hash: a.Hash}
}

// verdictJSON is the audit chain check, as every audit output shows it.
type verdictJSON struct {
	Verified    bool   `json:"verified"`
	Entries     int    `json:"entries"`
	BrokenAtSeq uint64 `json:"broken_at_seq"`
	Problem     string `json:"problem"`
	HeadSeq     uint64 `json:"head_seq"`
	HeadHash    string `json:"head_hash"`
	// Pruned entries end at the anchor (0: none pruned).
	AnchorSeq  uint64 `json:"anchor_seq,omitempty"`
	AnchorHash string `json:"anchor_hash,omitempty"`
}

func inspectJSON(v *storeView, recs []*wal.Record) any {
	type record struct {
		TxID         string            `json:"txid"`
		Outcome      string            `json:"outcome"`
		Done         bool              `json:"done"`
		Heuristic    bool              `json:"heuristic"`
		Participants []string          `json:"participants"`
		Labels       map[string]string `json:"labels"`
		Created      string            `json:"created"`
		Decided      string            `json:"decided"`
		DoneAt       string            `json:"done_at"`
		Term         uint64            `json:"term"`
		Index        uint64            `json:"index"`
		Reason       string            `json:"reason"`
	}
	rs := []record{}
	for _, r := range recs {
		rs = append(rs, record{TxID: r.TxID, Outcome: r.Outcome.String(), Done: r.Done, Heuristic: r.Heuristic,
			Participants: append([]string{}, r.Participants...), Labels: r.Labels, Created: tsTime(msTime(r.CreatedMs)),
			Decided: tsTime(msTime(r.DecidedMs)), DoneAt: tsTime(msTime(r.DoneMs)), Term: r.Term, Index: r.Index, Reason: r.Reason})
	}
	entries := []auditJSON{}
	for _, a := range v.Audit {
		entries = append(entries, auditEntryJSON(a))
	}
	pendingN := 0
	for _, r := range v.Records {
		if !r.Done {
			pendingN++
		}
	}
	return map[string]any{
		"store":         v.Path,
		"size_bytes":    v.SizeBytes,
		"applied_index": v.Applied,
		"digest":        v.Digest,
		"records_total": len(v.Records),
		"pending_total": pendingN,
		"raft":          v.Raft,
		"members":       v.Members,
		"records":       rs,
		"audit": map[string]any{
			"entries": entries,
			"verdict": verdict(v.AuditVerdict),
		},
	}
}

func verdict(v wal.AuditVerdict) verdictJSON {
	return verdictJSON{Verified: v.OK, Entries: int(v.Entries), BrokenAtSeq: v.BrokenAt, Problem: v.Problem,
		HeadSeq: v.HeadSeq, HeadHash: v.HeadHash, AnchorSeq: v.AnchorSeq, AnchorHash: v.AnchorHash}
}

func (o *options) printInspect(v *storeView, recs []*wal.Record, total int) {
	pendingN := 0
	for _, r := range v.Records {
		if !r.Done {
			pendingN++
		}
	}
	kv := o.table()
	kv.row("store", v.Path+" (opened read-only)")
	kv.row("size", fmt.Sprintf("%d bytes", v.SizeBytes))
	kv.row("applied", fmt.Sprintf("raft index %d", v.Applied))
	kv.row("digest", "sha256 "+v.Digest)
	kv.row("records", fmt.Sprintf("%d (%d not done)", total, pendingN))
	if r := v.Raft; r != nil {
		if r.Err != "" {
			kv.row("raft.db", "not readable: "+r.Err)
		} else {
			kv.row("raft.db", fmt.Sprintf("log %d..%d, term %d; %d entries after the store's applied index (commands among them are replayed at start)",
				r.FirstIndex, r.LastIndex, r.CurrentTerm, r.Unapplied))
		}
		if len(r.SnapshotDirs) > 0 {
			kv.row("snapshots", strings.Join(r.SnapshotDirs, ", "))
		}
	}
	kv.flush()

	o.section("MEMBERS")
	if len(v.Members) == 0 {
		o.printf("(none logged)\n")
	} else {
		ids := make([]string, 0, len(v.Members))
		for id := range v.Members {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		t := o.table("ID", "GRPC")
		for _, id := range ids {
			t.row(id, v.Members[id])
		}
		t.flush()
	}

	o.section("DECISIONS")
	if len(recs) == 0 {
		o.printf("(none)\n")
	} else {
		t := o.table("TXID", "OUTCOME", "DONE", "HEURISTIC", "PARTICIPANTS", "CREATED", "DECIDED", "TERM/INDEX", "REASON")
		for _, r := range recs {
			t.row(r.TxID, r.Outcome, yesNo(r.Done), yesNo(r.Heuristic), strings.Join(r.Participants, ","),
				tsTime(msTime(r.CreatedMs)), tsTime(msTime(r.DecidedMs)), fmt.Sprintf("%d/%d", r.Term, r.Index), r.Reason)
		}
		t.flush()
		if len(recs) < total {
			o.printf("(%d of %d records shown)\n", len(recs), total)
		}
	}

	o.section("AUDIT TRAIL (operator entries; txctl audit list --kind decision for decisions)")
	o.printAudit(v.Audit, v.AuditVerdict)
}

// printAudit prints entries and the chain verdict.
func (o *options) printAudit(entries []wal.AuditEntry, v wal.AuditVerdict) {
	ok, brokenAt := v.OK, v.BrokenAt
	if len(entries) == 0 {
		o.printf("(no entries)\n")
	} else {
		t := o.table("SEQ", "AT", "ACTOR", "ACTION", "TXID", "REASON", "DETAIL", "HASH")
		for _, a := range entries {
			mark := ""
			if !ok && a.Seq == brokenAt {
				mark = " <-- BROKEN"
			}
			t.row(fmt.Sprint(a.Seq)+mark, tsTime(msTime(a.AtMs)), a.Actor, a.Action, a.TxID, a.Reason, a.Detail, short(a.Hash, 12))
		}
		t.flush()
	}
	o.printVerdict(verdict(v))
}

func (o *options) printVerdict(v verdictJSON) {
	if v.Verified {
		o.printf("audit chain: verified (%s", plural(v.Entries, "entry", "entries"))
		if v.Entries > 0 {
			o.printf(", head seq %d hash %s", v.HeadSeq, v.HeadHash)
		}
		if v.AnchorSeq > 0 {
			o.printf("; entries up to seq %d pruned, chain anchored at hash %s", v.AnchorSeq, v.AnchorHash)
		}
		o.printf(")\n")
		return
	}
	o.printf("audit chain: BROKEN at seq %d: %s\n", v.BrokenAtSeq, v.Problem)
	o.printf("  the entry at seq %d (or the link to it) was changed after it was written; entries from there on cannot be trusted\n", v.BrokenAtSeq)
}
