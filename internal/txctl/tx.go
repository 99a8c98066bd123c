package txctl

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// txStates are the states tx list filters on (the server's names).
var txStates = []string{"ACTIVE", "PREPARING", "COMMITTING", "ABORTING", "COMMITTED", "ABORTED", "IN_DOUBT"}

func (o *options) txCommand() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "tx",
		Short: "Transactions: list, show, wait",
		Example: `  txctl tx list --state COMMITTING --min-age 1m
  txctl tx show 0190a1b2c3d4e5f60718
  txctl tx wait 0190a1b2c3d4e5f60718 --timeout 2m`,
	})
	c.AddCommand(o.txListCommand(), o.txShowCommand(), o.txWaitCommand())
	return c
}

func (o *options) txListCommand() *cobra.Command {
	var req pb.ListTransactionsRequest
	var minAge time.Duration
	var limit int
	c := &cobra.Command{
		Use:   "list",
		Short: "List transactions known to the leader (active, recently finished, logged decisions)",
		Long: `Lists the transactions the leader knows: active ones, recently finished ones
(in memory, with branch details) and every decision still in its log, oldest
first. Filters combine (AND). The leader keeps finished transactions for the
retention period; older ones are forgotten.

States: ` + strings.Join(txStates, ", ") + `.`,
		Example: `  txctl tx list
  txctl tx list --state COMMITTING --min-age 5m
  txctl tx list --participant orders --label service=checkout --sort txid --limit 20
  txctl tx list --state ABORTED -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 10000 {
				return exitf(ExitUsage, "--limit %d: use 1 to 10000", limit)
			}
			req.State = strings.ToUpper(req.State)
			if req.State != "" && !contains(txStates, req.State) {
				return exitf(ExitUsage, "--state %q: use one of %s", req.State, strings.Join(txStates, ", "))
			}
			if req.Label != "" && !strings.Contains(req.Label, "=") {
				return exitf(ExitUsage, "--label %q: want key=value", req.Label)
			}
			if req.Sort != "age" && req.Sort != "txid" {
				return exitf(ExitUsage, "--sort %q: use age or txid", req.Sort)
			}
			if minAge > 0 {
				req.MinAge = durationpb.New(minAge)
			}
			req.Limit = uint32(limit)
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.ListTransactions(ctx, &req)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(resp)
			}
			t := o.table("TXID", "AGE", "STATE", "OUTCOME", "FLAGS", "BRANCHES", "LABELS", "ERROR")
			for _, x := range resp.Transactions {
				t.row(x.Txid, since(x.CreatedAt), stateName(x.State), x.Outcome, txFlags(x), branchSummary(x), labels(x.Labels), short(x.Error, 60))
			}
			t.flush()
			o.printf("%s", plural(len(resp.Transactions), "transaction", "transactions"))
			if resp.Truncated {
				o.printf(" (more matched: raise --limit or narrow the filters)")
			}
			o.printf("\n")
			return nil
		}),
	}
	f := c.Flags()
	f.StringVar(&req.State, "state", "", "only this state: "+strings.Join(txStates, ", "))
	f.DurationVar(&minAge, "min-age", 0, "only transactions at least this old (e.g. 30s, 5m)")
	f.StringVar(&req.Participant, "participant", "", "only transactions with a branch on this participant")
	f.StringVar(&req.Label, "label", "", "only transactions with this label, key=value")
	f.StringVar(&req.Sort, "sort", "age", "order: age (oldest first) or txid")
	f.IntVar(&limit, "limit", 100, "at most this many (1-10000)")
	_ = c.RegisterFlagCompletionFunc("state", fixedCompletions(txStates...))
	_ = c.RegisterFlagCompletionFunc("sort", fixedCompletions("age", "txid"))
	return c
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func branchSummary(t *pb.Transaction) string {
	var parts []string
	for _, b := range t.Branches {
		parts = append(parts, b.Participant+":"+branchStateName(b.State))
	}
	return strings.Join(parts, ",")
}

func labels(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (o *options) txShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show TXID",
		Short: "One transaction: outcome, flags, each branch's vote/state/retries/error, timeline",
		Long: `Shows what the cluster knows about one transaction: state and outcome, whether
the outcome is HEURISTIC (set by an operator with txctl resolve) or PRESUMED
(no commit decision was logged: presumed abort), each branch's vote, state,
phase-two retries and last error, and the timeline of its phases with
timestamps. The timeline lives in the memory of the node that ran the
transaction: after a restart or a leader change only the logged decision is
left. Exit 3 when the outcome is UNKNOWN (still in doubt).`,
		Example: `  txctl tx show 0190a1b2c3d4e5f60718
  txctl tx show 0190a1b2c3d4e5f60718 -o json | jq .timeline`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeTxIDs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.GetTransaction(ctx, args[0])
			if err != nil {
				return err
			}
			return o.showTx(t)
		}),
	}
}

func (o *options) txWaitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait TXID",
		Short: "Wait until a transaction's outcome is known (COMMITTED or ABORTED), then show it",
		Long: `Polls the cluster until the outcome of TXID is COMMITTED or ABORTED — how a
client resolves an UNKNOWN outcome — for at most --timeout. Exit 3 when the
outcome is still unknown when the timeout ends.`,
		Example: `  txctl tx wait 0190a1b2c3d4e5f60718
  txctl tx wait 0190a1b2c3d4e5f60718 --timeout 5m -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeTxIDs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			// Leave a moment at the end of --timeout to fetch the details.
			wctx, cancel := context.WithTimeout(ctx, max(o.timeout-2*time.Second, o.timeout*9/10))
			_, werr := c.WaitOutcome(wctx, args[0])
			cancel()
			if werr != nil {
				var ce *client.Error
				if errors.As(werr, &ce) {
					return werr
				}
				return exitf(ExitInDoubt, "outcome of %s still unknown after %s (raise --timeout; see txctl in-doubt)", args[0], o.timeout)
			}
			t, err := c.GetTransaction(ctx, args[0])
			if err != nil {
				return err
			}
			return o.showTx(t)
		}),
	}
}

// showTx prints one transaction; exit 3 when its outcome is unknown.
func (o *options) showTx(t *pb.Transaction) error {
	unknown := t.Outcome == pb.Outcome_UNKNOWN || t.State == pb.TransactionState_IN_DOUBT
	if o.json() {
		if err := o.printJSON(t); err != nil {
			return err
		}
		if unknown {
			return quiet(ExitInDoubt)
		}
		return nil
	}
	kv := o.table()
	kv.row("txid", t.Txid)
	kv.row("state", stateName(t.State))
	kv.row("outcome", t.Outcome)
	if t.Heuristic {
		kv.row("heuristic", "YES: the outcome was set by an operator (txctl resolve); see txctl audit list --txid "+t.Txid)
	} else {
		kv.row("heuristic", "no")
	}
	if t.Presumed {
		kv.row("presumed", "YES: no commit decision was logged, so the transaction is presumed aborted")
	} else {
		kv.row("presumed", "no")
	}
	kv.row("created", fmt.Sprintf("%s (%s ago)", ts(t.CreatedAt), since(t.CreatedAt)))
	kv.row("deadline", ts(t.Deadline))
	if t.Error != "" {
		kv.row("error", t.Error)
	}
	if len(t.Labels) > 0 {
		kv.row("labels", labels(t.Labels))
	}
	kv.flush()

	o.section("BRANCHES")
	if len(t.Branches) == 0 {
		o.printf("(none known: the node that ran it restarted or lost leadership and no decision was logged, no statement ran, or the record was forgotten)\n")
	} else {
		bt := o.table("PARTICIPANT", "VOTE", "STATE", "RETRIES", "GID", "ERROR")
		for _, b := range t.Branches {
			bt.row(b.Participant, b.Vote, branchStateName(b.State), b.Retries, b.Gid, b.Error)
		}
		bt.flush()
		if len(t.Timeline) == 0 && (t.State == pb.TransactionState_COMMITTING || t.State == pb.TransactionState_ABORTING) {
			o.printf("(branch states come from the decision log, not from the participants: see txctl in-doubt)\n")
		}
	}

	o.section("TIMELINE")
	if len(t.Timeline) == 0 {
		o.printf("(not available: the node that ran this transaction restarted or is no longer the leader;\n" +
			" the decision log keeps only the outcome)\n")
	} else {
		first := t.Timeline[0].At.AsTime()
		tt := o.table("AT", "+ELAPSED", "EVENT", "PARTICIPANT", "DETAIL")
		for _, e := range t.Timeline {
			tt.row(ts(e.At), "+"+age(e.At.AsTime().Sub(first)), e.Event, e.Participant, e.Detail)
		}
		tt.flush()
	}
	if unknown {
		o.printf("\nthe outcome is UNKNOWN to the cluster: see txctl in-doubt\n")
		return quiet(ExitInDoubt)
	}
	return nil
}

// completeTxIDs offers the txids of transactions the leader lists.
func (o *options) completeTxIDs(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	c, err := o.dial(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer c.Close()
	resp, err := c.ListTransactions(ctx, &pb.ListTransactionsRequest{Limit: 200})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, t := range resp.Transactions {
		out = append(out, t.Txid+"\t"+stateName(t.State))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
