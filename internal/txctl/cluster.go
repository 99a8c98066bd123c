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
)

func (o *options) clusterCommand() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "cluster",
		Short: "Cluster membership: status, add-voter, remove, transfer-leader",
		Example: `  txctl cluster status
  txctl cluster add-voter n4 --raft 10.0.0.4:7500 --grpc 10.0.0.4:7400
  txctl cluster transfer-leader n2`,
	})
	c.AddCommand(o.clusterStatusCommand(), o.addVoterCommand(), o.removeCommand(), o.transferCommand())
	return c
}

// clusterReport is cluster status's result (opsreport.Gather's judgement,
// shared with the web console).
type clusterReport struct{ opsreport.Report }

func (r clusterReport) MarshalJSON() ([]byte, error) {
	type member struct {
		Member json.RawMessage `json:"member"`
		Status json.RawMessage `json:"status"`
		Error  string          `json:"error"`
	}
	out := struct {
		AnsweredBy json.RawMessage `json:"answered_by"`
		Members    []member        `json:"members"`
		Healthy    bool            `json:"healthy"`
		Problems   []string        `json:"problems"`
	}{AnsweredBy: raw(r.AnsweredBy), Healthy: len(r.Problems) == 0, Problems: r.Problems, Members: []member{}}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	for _, m := range r.Members {
		mm := member{Member: raw(m.Member), Status: json.RawMessage("null")}
		if m.Status != nil {
			mm.Status = raw(m.Status)
		}
		if m.Err != nil {
			mm.Error = m.Err.Error()
		}
		out.Members = append(out.Members, mm)
	}
	return json.Marshal(out)
}

// gatherCluster asks the node txctl talks to for the membership, then every
// member for its own view, and lists what is unhealthy.
func gatherCluster(ctx context.Context, c *client.Client) (clusterReport, error) {
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		return clusterReport{}, err
	}
	return clusterReport{opsreport.Gather(ctx, st, c.NodeStatus)}, nil
}

// errText is an error's message without the client's "txcoord: CODE:" prefix.
func errText(err error) string { return opsreport.ErrText(err) }

func (o *options) printCluster(r clusterReport) {
	st := r.AnsweredBy
	leader := st.LeaderId
	if leader == "" {
		leader = "NONE"
	} else if st.LeaderGrpcAddress != "" {
		leader += " (" + st.LeaderGrpcAddress + ")"
	}
	o.printf("leader %s, term %d (answered by %s)\n", leader, st.Term, st.NodeId)
	t := o.table("ID", "SUFFRAGE", "ROLE", "STATE", "READY", "TERM", "COMMIT", "APPLIED", "LAST_LOG", "SNAPSHOT", "DECISIONS", "LAST_CONTACT", "RAFT", "GRPC")
	for _, v := range r.Members {
		m := v.Member
		if v.Status == nil {
			t.row(m.Id, m.Suffrage, m.Role, "UNREACHABLE", "-", "-", "-", "-", "-", "-", "-", "-", m.RaftAddress, m.GrpcAddress)
			continue
		}
		s := v.Status
		contact := "-"
		if s.State != "Leader" {
			contact = since(s.LastContact) + " ago"
		}
		ready := "-" // only a leader serves
		if s.State == "Leader" {
			ready = yesNo(s.Ready)
		}
		t.row(m.Id, m.Suffrage, m.Role, s.State, ready, s.Term, s.CommitIndex, s.AppliedIndex, s.LastLogIndex,
			s.LastSnapshotIndex, s.Decisions, contact, m.RaftAddress, m.GrpcAddress)
	}
	t.flush()
	if len(r.Problems) == 0 {
		o.printf("health: ok (%s, all reachable, one leader)\n", plural(len(r.Members), "member", "members"))
		return
	}
	o.printf("health: DEGRADED\n")
	for _, p := range r.Problems {
		o.printf("  - %s\n", p)
	}
}

func (o *options) clusterStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Members, roles, terms, indexes and health, each member asked for its own view",
		Long: `Asks the node at --addr for the membership, then every member for its own view
(state, term, commit/applied/last-log indexes, last contact with the leader,
whether it is ready to serve). Exit 0 when healthy, 5 when degraded (no leader,
a member unreachable or not ready, members disagreeing on the leader).`,
		Example: `  txctl cluster status
  txctl cluster status --addr 10.0.0.1:7400,10.0.0.2:7400 -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := gatherCluster(ctx, c)
			if err != nil {
				return err
			}
			if o.json() {
				if err := o.printJSON(r); err != nil {
					return err
				}
			} else {
				o.printCluster(r)
			}
			if len(r.Problems) > 0 {
				return quiet(ExitDegraded)
			}
			return nil
		}),
	}
}

func (o *options) addVoterCommand() *cobra.Command {
	var raftAddr, grpcAddr string
	c := &cobra.Command{
		Use:   "add-voter ID --raft HOST:PORT --grpc HOST:PORT",
		Short: "Add (or re-add) a node as a voter; idempotent",
		Long: `Adds a node to the Raft configuration as a voter, on the leader. The node must
be running with raft.bootstrap false (it then waits to be added). Its gRPC
address is logged so that followers can send clients to it when it leads.
Add one node at a time and check 'txctl cluster status' in between.`,
		Example: `  txctl cluster add-voter n4 --raft 10.0.0.4:7500 --grpc 10.0.0.4:7400`,
		Args:    cobra.ExactArgs(1),
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.AddVoter(ctx, args[0], raftAddr, grpcAddr); err != nil {
				return err
			}
			return o.afterMembership(ctx, c, fmt.Sprintf("added %s as a voter (raft %s, grpc %s)", args[0], raftAddr, grpcAddr))
		}),
	}
	c.Flags().StringVar(&raftAddr, "raft", "", "the node's Raft address, host:port (required)")
	c.Flags().StringVar(&grpcAddr, "grpc", "", "the node's gRPC address, host:port (required)")
	_ = c.MarkFlagRequired("raft")
	_ = c.MarkFlagRequired("grpc")
	return c
}

func (o *options) removeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node from the cluster; idempotent",
		Long: `Removes a node from the Raft configuration, on the leader. Removing the leader
makes it step down. Never remove so many nodes that the rest has no quorum.`,
		Example:           `  txctl cluster remove n3`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeMembers,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.RemoveServer(ctx, args[0]); err != nil {
				return err
			}
			return o.afterMembership(ctx, c, "removed "+args[0])
		}),
	}
}

func (o *options) transferCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Hand leadership to a voter (the named one, or the most up-to-date)",
		Long: `Asks the leader to hand over leadership, to the named voter or (without ID) to
the most up-to-date one. The new leader recovers before it serves; clients
see a short unavailability and retry.`,
		Example: `  txctl cluster transfer-leader n2
  txctl cluster transfer-leader`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeMembers,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			id, err := c.TransferLeadership(ctx, target)
			if err != nil {
				return err
			}
			return o.afterMembership(ctx, c, "leadership transferred to "+id)
		}),
	}
}

// afterMembership reports a membership change and the cluster as it is now.
func (o *options) afterMembership(ctx context.Context, c *client.Client, what string) error {
	r, err := gatherCluster(ctx, c)
	if o.json() {
		out := map[string]any{"done": what, "status": nil}
		if err == nil {
			out["status"] = r
		} else {
			out["status_error"] = err.Error()
		}
		return o.printJSON(out)
	}
	o.printf("%s\n\n", what)
	if err != nil {
		o.printf("(status unavailable right after the change: %v)\n", errText(err))
		return nil
	}
	o.printCluster(r)
	return nil
}

func (o *options) completeMembers(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	c, err := o.dial(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer c.Close()
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.Id+"\t"+strings.ToLower(m.Role))
	}
	sort.Strings(ids)
	return ids, cobra.ShellCompDirectiveNoFileComp
}
