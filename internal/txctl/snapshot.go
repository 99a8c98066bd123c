package txctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

func (o *options) snapshotCommand() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "snapshot",
		Short: "Save the decision store to a file, or restore the cluster's decision state from one",
		Example: `  txctl snapshot save decisions-$(date +%F).snap
  txctl snapshot restore decisions-2026-11-26.snap --yes`,
	})
	c.AddCommand(o.snapshotSaveCommand(), o.snapshotRestoreCommand())
	return c
}

// fileSummary describes a store file (a snapshot) for the operator.
type fileSummary struct {
	File        string      `json:"file"`
	Bytes       int64       `json:"bytes"`
	SHA256      string      `json:"sha256"`
	Applied     uint64      `json:"applied_index"`
	Digest      string      `json:"digest"`
	Records     int         `json:"records"`
	Pending     int         `json:"pending"`
	Members     int         `json:"members"`
	Audit       verdictJSON `json:"audit"`
	SavedFrom   string      `json:"saved_from,omitempty"`
	Restored    uint64      `json:"restored_decisions,omitempty"`
	RestoredBy  string      `json:"restored_by,omitempty"`
	NothingSent bool        `json:"nothing_sent,omitempty"`
}

// summarize validates a store file by opening it read-only and reading all of it.
func summarize(path string) (fileSummary, error) {
	v, err := readStore(path)
	if err != nil {
		return fileSummary{}, err
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return fileSummary{}, err
	}
	s := fileSummary{File: path, Bytes: v.SizeBytes, SHA256: sum, Applied: v.Applied, Digest: v.Digest,
		Records: len(v.Records), Members: len(v.Members), Audit: verdict(v.AuditVerdict)}
	for _, r := range v.Records {
		if !r.Done {
			s.Pending++
		}
	}
	return s, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (o *options) printSummary(s fileSummary) {
	kv := o.table()
	kv.row("file", s.File)
	kv.row("size", fmt.Sprintf("%d bytes, sha256 %s", s.Bytes, s.SHA256))
	if s.SavedFrom != "" {
		kv.row("saved from", s.SavedFrom)
	}
	kv.row("applied", fmt.Sprintf("raft index %d", s.Applied))
	kv.row("decisions", fmt.Sprintf("%d (%d not done)", s.Records, s.Pending))
	kv.row("members", s.Members)
	kv.row("digest", "sha256 "+s.Digest)
	kv.flush()
	o.printVerdict(s.Audit)
}

func (o *options) snapshotSaveCommand() *cobra.Command {
	var overwrite bool
	c := &cobra.Command{
		Use:   "save FILE",
		Short: "Stream a consistent copy of a node's decision store into FILE",
		Long: `Streams a consistent copy of the decision store of the node txctl talks to (the
first --addr; any node, it need not lead) into FILE, then opens the copy
read-only to check that it is a valid store and prints what it holds. FILE is
written under a temporary name and renamed when complete, so a failed save
leaves no half file. An existing FILE is kept unless --overwrite.`,
		Example: `  txctl snapshot save decisions-$(date +%F).snap
  txctl --addr 10.0.0.2:7400 snapshot save n2.snap -o json`,
		Args: cobra.ExactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			path := args[0]
			if _, err := os.Stat(path); err == nil && !overwrite {
				return exitf(ExitUsage, "%s exists: choose another name or add --overwrite", path)
			}
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.ClusterStatus(ctx)
			if err != nil {
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".partial-*")
			if err != nil {
				return exitf(ExitFailure, "create %s: %v", path, err)
			}
			defer os.Remove(tmp.Name()) // after the rename there is nothing left to remove
			if _, err := c.SaveSnapshot(ctx, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return exitf(ExitFailure, "sync %s: %v", tmp.Name(), err)
			}
			if err := tmp.Close(); err != nil {
				return exitf(ExitFailure, "close %s: %v", tmp.Name(), err)
			}
			if _, err := summarize(tmp.Name()); err != nil {
				return exitf(ExitFailure, "the snapshot received from %s is not a valid store: %v", st.NodeId, err)
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return exitf(ExitFailure, "rename into %s: %v", path, err)
			}
			s, err := summarize(path)
			if err != nil {
				return exitf(ExitFailure, "re-read %s: %v", path, err)
			}
			s.SavedFrom = fmt.Sprintf("%s (%s, term %d)", st.NodeId, st.State, st.Term)
			if o.json() {
				return o.printJSON(s)
			}
			o.printf("saved the decision store of %s\n", st.NodeId)
			o.printSummary(s)
			return nil
		}),
	}
	c.Flags().BoolVar(&overwrite, "overwrite", false, "replace FILE if it exists")
	return c
}

func (o *options) snapshotRestoreCommand() *cobra.Command {
	var yes, force bool
	c := &cobra.Command{
		Use:   "restore FILE --yes",
		Short: "Replace the whole cluster's decision state with a saved snapshot (through Raft)",
		Long: `Replaces the decision state of the WHOLE cluster with FILE (a store saved by
txctl snapshot save), through Raft on the leader, so every node installs it. An
entry SNAPSHOT_RESTORE (with who) is appended to the audit trail.

DANGER: decisions logged after the snapshot was saved are gone. A transaction
that committed after it and still has a prepared branch somewhere would then be
rolled back by presumed abort. Restore only for disaster recovery, after
checking txctl in-doubt, ideally with no transaction prepared.

FILE is checked locally first (opened read-only: a valid store, its audit chain
verifies; --force accepts a broken chain). Without --yes only that check runs
and nothing is sent (exit 2).`,
		Example: `  txctl snapshot restore decisions-2026-11-26.snap          # check only
  txctl snapshot restore decisions-2026-11-26.snap --yes`,
		Args: cobra.ExactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			path := args[0]
			s, err := summarize(path)
			if err != nil {
				return exitf(ExitFailure, "%s is not a valid decision store: %v", path, err)
			}
			if !s.Audit.Verified && !force {
				if !o.json() {
					o.printSummary(s)
				}
				return exitf(ExitInDoubt, "%s: its audit chain does not verify (seq %d: %s); add --force to restore it anyway", path, s.Audit.BrokenAtSeq, s.Audit.Problem)
			}
			if !yes {
				s.NothingSent = true
				if o.json() {
					if err := o.printJSON(s); err != nil {
						return err
					}
				} else {
					o.printSummary(s)
				}
				return exitf(ExitUsage, "nothing was sent: restoring replaces the decision state of the whole cluster; add --yes to do it")
			}
			f, err := os.Open(path)
			if err != nil {
				return exitf(ExitFailure, "%v", err)
			}
			defer f.Close()
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			actor := o.actor()
			n, err := c.RestoreSnapshot(ctx, f, actor)
			if err != nil {
				return err
			}
			s.Restored, s.RestoredBy = n, actor
			if o.json() {
				return o.printJSON(s)
			}
			o.printf("restored %d decisions into the cluster (audit: SNAPSHOT_RESTORE by %s)\n", n, actor)
			o.printSummary(s)
			o.printf("next: txctl in-doubt\n")
			return nil
		}),
	}
	c.Flags().BoolVar(&yes, "yes", false, "really replace the cluster's decision state")
	c.Flags().BoolVar(&force, "force", false, "restore even if the file's audit chain does not verify")
	return c
}
