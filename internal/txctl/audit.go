package txctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"github.com/txcoord/txcoord/wal"
)

func (o *options) auditCommand() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "audit",
		Short: "The hash-chained audit trail: list, verify",
		Long: `Every logged decision, heuristic resolution (txctl resolve), membership change,
snapshot restore, configuration reload and authorization denial is appended
to an audit trail in the replicated decision store. Each
entry's hash covers its content and the previous entry's hash, so an entry
edited in a store file breaks the chain from there on.`,
		Example: `  txctl audit list
  txctl audit verify
  txctl audit verify --data-dir /var/lib/txcoord/n1`,
	})
	c.AddCommand(o.auditListCommand(), o.auditVerifyCommand())
	return c
}

// readAudit reads the entries q selects and the verdict on the whole trail
// from the cluster, or from a stopped node's store with --data-dir.
func (o *options) readAudit(ctx context.Context, dataDir string, q wal.AuditQuery) ([]wal.AuditEntry, verdictJSON, error) {
	if dataDir != "" {
		file, err := storeFile(dataDir)
		if err != nil {
			return nil, verdictJSON{}, exitf(ExitFailure, "read %s: %v", dataDir, err)
		}
		s, err := wal.Open(file, wal.Options{ReadOnly: true, OpenTimeout: storeLockWait})
		if err != nil {
			return nil, verdictJSON{}, exitf(ExitFailure, "read %s: %v", dataDir, err)
		}
		defer s.Close()
		entries, v, err := s.QueryAudit(q)
		if err != nil {
			return nil, verdictJSON{}, exitf(ExitFailure, "read %s: %v", dataDir, err)
		}
		return entries, verdict(v), nil
	}
	c, err := o.dial(ctx)
	if err != nil {
		return nil, verdictJSON{}, err
	}
	defer c.Close()
	resp, err := c.ListAudit(ctx, &pb.ListAuditRequest{Limit: uint32(q.Limit), Kind: q.Kind, Action: q.Action, Txid: q.TxID, Seq: q.Seq})
	if err != nil {
		return nil, verdictJSON{}, err
	}
	entries := fromProtoAudit(resp.Entries)
	return entries, verdict(wal.AuditVerdict{OK: resp.Verified, BrokenAt: resp.BrokenAtSeq, Problem: resp.Problem,
		Entries: resp.Total, HeadSeq: resp.HeadSeq, HeadHash: resp.HeadHash, AnchorSeq: resp.AnchorSeq, AnchorHash: resp.AnchorHash}), nil
}

func fromProtoAudit(in []*pb.AuditEntry) []wal.AuditEntry {
	out := make([]wal.AuditEntry, 0, len(in))
	for _, a := range in {
		var at int64
		if a.At != nil {
			at = a.At.AsTime().UnixMilli()
		}
		out = append(out, wal.AuditEntry{Seq: a.Seq, AtMs: at, Actor: a.Actor, Action: a.Action, TxID: a.Txid,
			Detail: a.Detail, Reason: a.Reason, PrevHash: a.PrevHash, Hash: a.Hash})
	}
	return out
}

func (o *options) auditListCommand() *cobra.Command {
	var dataDir, txid, action, kind string
	var limit int
	c := &cobra.Command{
		Use:   "list",
		Short: "List audit entries (oldest first) and whether the hash chain verifies",
		Long: `Lists the audit trail, oldest first: who did what, when and why. Every logged
decision is an entry (action DECISION, kind "decision"); everything else
(resolutions, membership, restores, config reloads, authorization denials)
is kind "operator". --kind picks one of them (default all). The chain is
verified over the whole trail whatever the filters. Exit 3 when it does not
verify.`,
		Example: `  txctl audit list --kind operator
  txctl audit list --kind decision --limit 50
  txctl audit list --txid 0190a1b2c3d4e5f60718
  txctl audit list --action RESOLVE --limit 20 -o json
  txctl audit list --data-dir /var/lib/txcoord/n1`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if limit < 0 || limit > 10000 {
				return exitf(ExitUsage, "--limit %d: use 0 (all, at most 10000 from a cluster) to 10000", limit)
			}
			if kind == "all" {
				kind = wal.KindAll
			}
			if kind != wal.KindAll && kind != wal.KindDecision && kind != wal.KindOperator {
				return exitf(ExitUsage, "--kind %q: use operator, decision or all", kind)
			}
			shown, vd, err := o.readAudit(ctx, dataDir, wal.AuditQuery{Kind: kind, Action: action, TxID: txid, Limit: limit})
			if err != nil {
				return err
			}
			if o.json() {
				js := []auditJSON{}
				for _, e := range shown {
					js = append(js, auditEntryJSON(e))
				}
				if err := o.printJSON(map[string]any{"entries": js, "verdict": vd}); err != nil {
					return err
				}
			} else {
				o.printAuditShown(shown, vd)
			}
			if !vd.Verified {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "", "read a stopped node's store offline instead of asking the cluster")
	f.StringVar(&txid, "txid", "", "only entries about this transaction")
	f.StringVar(&kind, "kind", "all", "operator (everything but decisions), decision, or all")
	f.StringVar(&action, "action", "", "only this action (DECISION, RESOLVE, MEMBER_ADD, MEMBER_REMOVE, SNAPSHOT_RESTORE, CONFIG_RELOAD, AUTHZ_DENIED...)")
	f.IntVar(&limit, "limit", 0, "only the newest N matching entries (0 = all)")
	_ = c.RegisterFlagCompletionFunc("kind", fixedCompletions("operator", "decision", "all"))
	_ = c.RegisterFlagCompletionFunc("action", fixedCompletions("DECISION", "RESOLVE", "MEMBER_ADD", "MEMBER_REMOVE", "SNAPSHOT_RESTORE", "CONFIG_RELOAD", "CONFIG_RELOAD_REFUSED", "AUTHZ_DENIED"))
	_ = c.MarkFlagDirname("data-dir")
	return c
}

func (o *options) printAuditShown(shown []wal.AuditEntry, vd verdictJSON) {
	if len(shown) == 0 {
		o.printf("(no entries)\n")
	} else {
		t := o.table("SEQ", "AT", "ACTOR", "ACTION", "TXID", "REASON", "DETAIL")
		for _, a := range shown {
			mark := ""
			if !vd.Verified && a.Seq == vd.BrokenAtSeq {
				mark = " <-- BROKEN"
			}
			t.row(fmt.Sprint(a.Seq)+mark, tsTime(msTime(a.AtMs)), a.Actor, a.Action, a.TxID, a.Reason, a.Detail)
		}
		t.flush()
	}
	o.printVerdict(vd)
}

func (o *options) auditVerifyCommand() *cobra.Command {
	var dataDir string
	c := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit trail's hash chain; exit 3 and name the first bad entry when it does not",
		Long: `Recomputes every entry's hash from its content and the previous entry's hash.
On the live cluster the leader's store is checked; with --data-dir a stopped
node's store is read offline (read-only). Exit 0 when the chain verifies, 3
when it does not (the first entry that does not match is named).`,
		Example: `  txctl audit verify
  txctl audit verify --data-dir /var/lib/txcoord/n1 -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			entries, vd, err := o.readAudit(ctx, dataDir, wal.AuditQuery{Limit: 1})
			if err != nil {
				return err
			}
			if !vd.Verified && vd.BrokenAtSeq > 0 {
				// Show the entry named, whatever its kind and age.
				entries, _, _ = o.readAudit(ctx, dataDir, wal.AuditQuery{Seq: vd.BrokenAtSeq, Limit: 1})
			}
			if o.json() {
				if err := o.printJSON(vd); err != nil {
					return err
				}
			} else {
				o.printVerdict(vd)
				if !vd.Verified {
					for _, e := range entries {
						if e.Seq == vd.BrokenAtSeq {
							o.printf("  seq %d: %s %s by %s, txid %s, reason %q, detail %q\n", e.Seq, tsTime(msTime(e.AtMs)),
								e.Action, e.Actor, e.TxID, e.Reason, e.Detail)
						}
					}
				}
			}
			if !vd.Verified {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	c.Flags().StringVar(&dataDir, "data-dir", "", "verify a stopped node's store offline instead of the cluster's")
	_ = c.MarkFlagDirname("data-dir")
	return c
}
