package txctl

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/opsreport"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

func (o *options) inDoubtCommand() *cobra.Command {
	var oursOnly bool
	c := &cobra.Command{
		Use:   "in-doubt",
		Short: "Diff the decision log against every participant: what is prepared, what the log says, what recovery will do",
		Long: `Asks the leader to compare its decision log with every participant:

  PREPARED BRANCHES  every prepared branch (with this cluster's GID prefix or not),
                     the decision the log holds for it and the action recovery
                     will take: WILL_COMMIT (the log says COMMIT, or an operator's
                     heuristic commit), WILL_ROLL_BACK (no commit decision:
                     presumed abort, or an abort/heuristic rollback), LEFT_ALONE
                     (not this cluster's GID: never touched), IN_PROGRESS (in
                     flight on the leader right now). With the branch's age and
                     the locks it holds, where the participant can tell.
  UNDONE DECISIONS   decisions in the log whose phase two is not acknowledged.
  UNREACHABLE        participants that could not be listed: their branches are
                     unknown, and recovery cannot finish there.

Nothing is changed. Exit 0 when nothing of ours is in doubt, 3 otherwise.`,
		Example: `  txctl in-doubt
  txctl in-doubt --ours
  txctl in-doubt -o json | jq '.branches[] | select(.action == "WILL_COMMIT")'`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.InDoubt(ctx)
			if err != nil {
				return err
			}
			if oursOnly {
				var keep []*pb.InDoubtBranch
				for _, b := range resp.Branches {
					if b.Ours {
						keep = append(keep, b)
					}
				}
				resp.Branches = keep
			}
			undone := o.undoneDetails(ctx, c, resp.Undone)
			doubt := inDoubtCount(resp)
			if o.json() {
				if err := o.printJSON(inDoubtJSON{resp: resp, undone: undone, inDoubt: doubt > 0}); err != nil {
					return err
				}
			} else {
				o.printInDoubt(resp, undone)
			}
			if doubt > 0 {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&oursOnly, "ours", false, "hide prepared branches that are not this cluster's (LEFT_ALONE)")
	return c
}

// inDoubtCount counts what keeps the cluster from "nothing in doubt"
// (shared with the web console).
func inDoubtCount(r *pb.InDoubtResponse) int { return opsreport.InDoubtCount(r) }

// maxUndoneDetails bounds the extra GetTransaction calls in-doubt makes.
const maxUndoneDetails = 100

// undoneDetails fetches each undone decision's transaction (creation time,
// participants): the InDoubt answer carries only txid and outcome. Missing
// details are left out, not fatal.
func (o *options) undoneDetails(ctx context.Context, c *client.Client, undone []*pb.Transaction) map[string]*pb.Transaction {
	out := map[string]*pb.Transaction{}
	for i, u := range undone {
		if i >= maxUndoneDetails {
			break
		}
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		t, err := c.GetTransaction(dctx, u.Txid)
		cancel()
		if err == nil {
			out[u.Txid] = t
		}
	}
	return out
}

type inDoubtJSON struct {
	resp    *pb.InDoubtResponse
	undone  map[string]*pb.Transaction
	inDoubt bool
}

func (j inDoubtJSON) MarshalJSON() ([]byte, error) {
	type undone struct {
		Decision    json.RawMessage `json:"decision"`
		Transaction json.RawMessage `json:"transaction"`
	}
	var r map[string]json.RawMessage
	if err := json.Unmarshal(raw(j.resp), &r); err != nil {
		return nil, err
	}
	us := []undone{}
	for _, u := range j.resp.Undone {
		x := undone{Decision: raw(u), Transaction: json.RawMessage("null")}
		if t := j.undone[u.Txid]; t != nil {
			x.Transaction = raw(t)
		}
		us = append(us, x)
	}
	b, err := json.Marshal(us)
	if err != nil {
		return nil, err
	}
	r["undone"] = b
	r["in_doubt"], _ = json.Marshal(j.inDoubt)
	return json.Marshal(r)
}

func decisionText(d string, heuristic bool) string {
	if heuristic {
		return d + " (HEURISTIC)"
	}
	return d
}

func locksText(locks []string) string {
	const shown = 3
	if len(locks) <= shown {
		return strings.Join(locks, ",")
	}
	return strings.Join(locks[:shown], ",") + fmt.Sprintf(",…(+%d)", len(locks)-shown)
}

func (o *options) printInDoubt(r *pb.InDoubtResponse, details map[string]*pb.Transaction) {
	o.printf("PREPARED BRANCHES\n")
	fromLog := 0
	if len(r.Branches) == 0 {
		o.printf("(none listed)\n")
	} else {
		t := o.table("PARTICIPANT", "TXID", "OURS", "DECISION", "ACTION", "AGE", "LOCKS", "GID", "REASON")
		for _, b := range r.Branches {
			ageText := "-"
			if b.Age != nil {
				ageText = age(b.Age.AsDuration())
			}
			if b.PreparedAt == nil {
				fromLog++
				ageText = "*"
			}
			t.row(b.Participant, b.Txid, yesNo(b.Ours), decisionText(b.Decision, b.Heuristic), b.Action, ageText,
				locksText(b.Locks), b.Gid, b.Reason)
		}
		t.flush()
		if fromLog > 0 {
			o.printf("* from the decision log (an undone decision names the branch); the participant does not report its age\n" +
				"  or locks here, and the branch may already be finished there (recover's result tells)\n")
		}
	}
	o.section("UNDONE DECISIONS (logged; phase two not acknowledged by every participant)")
	if len(r.Undone) == 0 {
		o.printf("(none)\n")
	} else {
		t := o.table("TXID", "DECISION", "AGE", "PARTICIPANTS", "LABELS", "REASON")
		for _, u := range r.Undone {
			d := details[u.Txid]
			ageText, parts, lbl := "-", "-", "-"
			if d != nil {
				ageText = since(d.CreatedAt)
				var ps []string
				for _, b := range d.Branches {
					ps = append(ps, b.Participant)
				}
				parts, lbl = strings.Join(ps, ","), labels(d.Labels)
			}
			t.row(u.Txid, decisionText(outcomeDecision(u.Outcome), u.Heuristic), ageText, parts, lbl, u.Error)
		}
		t.flush()
	}
	o.section("UNREACHABLE PARTICIPANTS (their branches cannot be listed; recovery cannot finish there)")
	if len(r.Unreachable) == 0 {
		o.printf("(none)\n")
	} else {
		names := make([]string, 0, len(r.Unreachable))
		for n := range r.Unreachable {
			names = append(names, n)
		}
		sort.Strings(names)
		t := o.table("PARTICIPANT", "ERROR")
		for _, n := range names {
			t.row(n, r.Unreachable[n])
		}
		t.flush()
	}
	ours, foreign, inFlight := 0, 0, 0
	for _, b := range r.Branches {
		switch {
		case !b.Ours:
			foreign++
		case b.Action == pb.PlannedAction_IN_PROGRESS:
			inFlight++
		default:
			ours++
		}
	}
	o.printf("\nsummary: %s of ours in doubt, %s, %s unreachable",
		plural(ours, "branch", "branches"), plural(len(r.Undone), "undone decision", "undone decisions"),
		plural(len(r.Unreachable), "participant", "participants"))
	if inFlight > 0 {
		o.printf(", %d in flight", inFlight)
	}
	if foreign > 0 {
		o.printf(", %d not ours (left alone)", foreign)
	}
	o.printf("\n")
	if inDoubtCount(r) > 0 {
		o.printf("next: txctl recover --dry-run (the plan), then txctl recover\n")
	}
}

// outcomeDecision names a decision as the log does.
func outcomeDecision(o pb.Outcome) string {
	switch o {
	case pb.Outcome_COMMITTED:
		return "COMMIT"
	case pb.Outcome_ABORTED:
		return "ABORT"
	}
	return o.String()
}

func (o *options) recoverCommand() *cobra.Command {
	var dryRun bool
	c := &cobra.Command{
		Use:   "recover",
		Short: "Run one recovery pass now (or, with --dry-run, print its plan): each action, why, and its result",
		Long: `Runs one recovery pass on the leader — what it also does on its own every
recovery interval and after each election — and reports every action with its
reason and result: decided transactions are driven to their decision (COMMIT or
ROLLBACK of each prepared branch), prepared branches of this cluster without a
commit decision are rolled back (presumed abort, after the leader confirms it
still leads), and decisions whose every branch is acknowledged are marked done.
Branches that are not this cluster's are never touched.

With --dry-run nothing is changed: the plan is printed.

Exit 0 when nothing is (or, with --dry-run, would be) left in doubt; 3 when an
action failed or is planned, or a participant is unreachable.`,
		Example: `  txctl recover --dry-run
  txctl recover
  txctl recover -o json | jq '.actions[] | select(.error != "")'`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Recover(ctx, dryRun)
			if err != nil {
				return err
			}
			left := len(resp.Unreachable)
			for _, a := range resp.Actions {
				if (dryRun && a.Action != pb.PlannedAction_IN_PROGRESS) || a.Error != "" {
					left++
				}
			}
			if o.json() {
				if err := o.printJSON(resp); err != nil {
					return err
				}
			} else {
				o.printRecover(resp)
			}
			if left > 0 {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan only; change nothing")
	return c
}

func (o *options) printRecover(r *pb.RecoverResponse) {
	if r.DryRun {
		o.printf("RECOVERY PLAN (dry run: nothing was changed)\n")
	} else {
		o.printf("RECOVERY PASS\n")
	}
	ok, failed, skipped := 0, 0, 0
	if len(r.Actions) == 0 {
		o.printf("(nothing to do)\n")
	} else {
		t := o.table("PARTICIPANT", "TXID", "ACTION", "RESULT", "GID", "REASON")
		for _, a := range r.Actions {
			result := "ok"
			switch {
			case a.Action == pb.PlannedAction_IN_PROGRESS:
				result = "skipped (in flight)"
				skipped++
			case r.DryRun:
				result = "planned"
			case a.Error != "":
				result = "FAILED: " + a.Error
				failed++
			default:
				ok++
			}
			t.row(a.Participant, a.Txid, a.Action, result, a.Gid, a.Reason)
		}
		t.flush()
	}
	if len(r.Unreachable) > 0 {
		o.section("UNREACHABLE PARTICIPANTS (not listed; their branches are unknown)")
		names := make([]string, 0, len(r.Unreachable))
		for n := range r.Unreachable {
			names = append(names, n)
		}
		sort.Strings(names)
		t := o.table("PARTICIPANT", "ERROR")
		for _, n := range names {
			t.row(n, r.Unreachable[n])
		}
		t.flush()
	}
	if r.DryRun {
		o.printf("\nsummary: %s planned, %s unreachable\n", plural(len(r.Actions)-skipped, "action", "actions"),
			plural(len(r.Unreachable), "participant", "participants"))
		return
	}
	o.printf("\nsummary: %d done, %d failed, %d skipped, %s unreachable\n", ok, failed, skipped,
		plural(len(r.Unreachable), "participant", "participants"))
	if failed > 0 || len(r.Unreachable) > 0 {
		o.printf("still in doubt: fix what the errors name, then run txctl recover again (the leader also retries on its own)\n")
	}
}

func (o *options) resolveCommand() *cobra.Command {
	var commit, rollback, force bool
	var reason string
	c := &cobra.Command{
		Use:   "resolve TXID (--commit | --rollback) --reason TEXT [--force]",
		Short: "Record an operator's heuristic decision for a transaction the coordinator cannot resolve itself",
		Long: `Records a HEURISTIC decision for TXID through the Raft log and drives every
prepared branch to it — for the cases the coordinator cannot resolve itself,
such as a participant restored from a backup that brought a branch back.

It refuses (exit 4) to contradict a decision already in the log: a transaction
logged COMMIT may have committed on some participants already, and rolling the
others back would break atomicity. --force overrides that refusal; use it only
when you know every branch's real state (check with txctl in-doubt and on the
databases themselves).

Every use is written to the hash-chained audit trail with who (your OS user and
host), when and why (--reason). Exit 0 when the decision is logged and every
branch reached it; 3 when branches are still being driven to it (txctl
in-doubt shows them); 4 when refused.`,
		Example: `  txctl resolve 0190a1b2c3d4e5f60718 --rollback --reason "orders db restored from backup, INC-4711"
  txctl resolve 0190a1b2c3d4e5f60718 --commit --reason "confirmed with payments team" --force`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeTxIDs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return exitf(ExitUsage, "--reason is required: say why the coordinator's own recovery is overridden (it goes to the audit trail)")
			}
			outcome := pb.Outcome_ABORTED
			if commit {
				outcome = pb.Outcome_COMMITTED
			}
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			actor := o.actor()
			resp, err := c.Resolve(ctx, &pb.ResolveRequest{Txid: args[0], Outcome: outcome, Reason: reason, Force: force, Actor: actor})
			if err != nil {
				if code := o.exitCode(err); code == ExitRefused {
					return &exitError{code: ExitRefused, err: fmt.Errorf("refused: %s\n  nothing was changed. Check every branch's real state first (txctl in-doubt, txctl tx show %s);\n  add --force only if you are sure that overriding the logged decision is right", errText(err), args[0])}
				}
				return err
			}
			t := resp.Transaction
			done := t.State == pb.TransactionState_COMMITTED_STATE || t.State == pb.TransactionState_ABORTED_STATE
			if o.json() {
				if err := o.printJSON(resp); err != nil {
					return err
				}
			} else {
				what := "ROLLBACK"
				if commit {
					what = "COMMIT"
				}
				o.printf("logged a HEURISTIC %s for %s\n", what, args[0])
				if a := resp.Audit; a != nil {
					o.printAuditEntry(a)
				}
				o.printf("\n")
				if err := o.showTx(t); err != nil {
					return err
				}
				if !done {
					o.printf("\nphase two is not finished on every branch yet: see txctl in-doubt; the leader keeps retrying\n")
				}
			}
			if !done {
				return quiet(ExitInDoubt)
			}
			return nil
		}),
	}
	f := c.Flags()
	f.BoolVar(&commit, "commit", false, "decide COMMIT")
	f.BoolVar(&rollback, "rollback", false, "decide ROLLBACK")
	f.StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	f.BoolVar(&force, "force", false, "override a contradicting decision already in the log (dangerous: read --help)")
	c.MarkFlagsOneRequired("commit", "rollback")
	c.MarkFlagsMutuallyExclusive("commit", "rollback")
	_ = c.MarkFlagRequired("reason")
	return c
}

func (o *options) markDoneCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "mark-done TXID --reason TEXT",
		Short: "Close a logged decision that recovery cannot carry out, after repairing it by hand",
		Long: `Marks TXID's logged decision done, so the leader stops driving it and the
retention forgets it — for a decision recovery cannot carry out: a COMMIT whose
branch a database no longer holds prepared (restored from a backup, or rolled
back by hand), which txctl in-doubt shows as "no longer prepared at the
participant" and the leader's log as "committed branch is not prepared".
Repair the data first; this changes nothing in the databases.

It refuses (exit 4) while any branch of the decision is still prepared: txctl
recover carries those out. Every use is written to the hash-chained audit
trail (MARK_DONE) with who, when and why (--reason). A decision that is
already done is shown as it is.`,
		Example:           `  txctl mark-done 0190a1b2c3d4e5f60718 --reason "orders row re-applied by hand after the restore, INC-4711"`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeTxIDs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return exitf(ExitUsage, "--reason is required: say how the decision was carried out or repaired (it goes to the audit trail)")
			}
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.MarkDone(ctx, &pb.MarkDoneRequest{Txid: args[0], Reason: reason, Actor: o.actor()})
			if err != nil {
				if code := o.exitCode(err); code == ExitRefused {
					return &exitError{code: ExitRefused, err: fmt.Errorf("refused: %s\n  nothing was changed", errText(err))}
				}
				return err
			}
			if o.json() {
				return o.printJSON(resp)
			}
			if a := resp.Audit; a != nil {
				o.printf("marked %s done\n", args[0])
				o.printAuditEntry(a)
			} else {
				o.printf("%s was already done; nothing was changed\n", args[0])
			}
			o.printf("\n")
			return o.showTx(resp.Transaction)
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "how the decision was carried out or repaired (required; recorded in the audit trail)")
	_ = c.MarkFlagRequired("reason")
	return c
}

// printAuditEntry prints the audit entry an operator command wrote.
func (o *options) printAuditEntry(a *pb.AuditEntry) {
	kv := o.table()
	kv.row("audit", fmt.Sprintf("seq %d at %s by %s", a.Seq, ts(a.At), a.Actor))
	kv.row("detail", a.Detail)
	kv.row("reason", a.Reason)
	kv.row("hash", a.Hash)
	kv.flush()
}
