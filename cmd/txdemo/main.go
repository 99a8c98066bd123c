// Command txdemo runs the txcoord demo (make demo): transfers between
// PostgreSQL and SurrealDB accounts through a 3-node txcoord cluster whose
// leader is SIGKILLed mid-run, then checks that every transfer was
// all-or-nothing, nothing is left in doubt, and every node's decision store
// is identical.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/txcoord/txcoord/internal/demo"
)

const usage = `txdemo — atomic transfers between PostgreSQL and SurrealDB through a txcoord
cluster whose leader is SIGKILLed mid-run.

It writes one config per node (<work-dir>/cluster3/n1.yaml ... n3.yaml; with
--nodes 1, <work-dir>/n1.yaml), starts <txcoord> serve for each (logs next to
the configs: n1.log ...), waits for a leader, recreates the accounts
(PostgreSQL table demo_accounts, SurrealDB records demo_account:<id>) and runs
the transfers. Once --kill-at of them are done it finds the leader with
ClusterStatus and SIGKILLs it; the survivors elect a new leader, which
resolves what the dead one left in doubt, and the killed node is restarted
and rejoins as a follower (with --nodes 1 the only node is killed and
restarted). Unknown commit outcomes are resolved with WaitOutcome. At the end
it waits for recovery to clear every prepared branch and intent, checks the
balances directly in both databases, and compares every node's StoreDigest
at one applied index. It ends with one line:

  demo: transfers=N committed=A aborted=B unknown_resolved=C total_before=X total_after=Y pg_prepared_left=P surreal_intents_left=S nodes=3 elections=E failover_ms=F in_doubt_clear_ms=G

committed, aborted and unknown_resolved partition the transfers (a Commit
answered "outcome unknown" counts only in unknown_resolved once resolved).
elections: terms after the killed leader's in which a leader was seen;
failover_ms: the kill → the first commit of a transfer begun after it;
in_doubt_clear_ms: the kill → no prepared branch or intent of a transfer
begun before the kill left, and every such transfer's outcome known to the
client. The last three are 0 with --kill-at 0.
Exit status: 0 pass; 1 a violation (totals differ, an account is off, anything
left in doubt or unresolved, store digests differ, no commit after the kill)
or the demo could not run (the error names the node log to read); 2 bad flags.

Needs the databases (make db-up) and their environment:
  eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
(TXCOORD_PG_DSN_A, TXCOORD_SURREAL_URL, _USER, _PASS, _NS, _DB).

Examples:
  make demo                                    # build, start the databases, run scripts/demo.sh
  scripts/demo.sh --transfers 1000 --workers 16
  scripts/demo.sh --nodes 1                    # one node, killed and restarted
  bin/txdemo --kill-at 0                       # no kill
  bin/txdemo --seed 7 --overdraft-rate 0.3

Flags:
`

func main() {
	cfg := demo.DefaultConfig()
	fs := flag.NewFlagSet("txdemo", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&cfg.Txcoord, "txcoord", cfg.Txcoord, "txcoord binary")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for the configs, the node logs and their data (kept across runs)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "cluster size: 1, 3 or 5")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "first node's gRPC address (node i uses port+i)")
	fs.StringVar(&cfg.RaftBind, "raft-bind", cfg.RaftBind, "first node's Raft address (node i uses port+i)")
	fs.DurationVar(&cfg.RaftHeartbeatTimeout, "raft-heartbeat-timeout", cfg.RaftHeartbeatTimeout, "the nodes' raft.heartbeat_timeout (0: txcoord's default)")
	fs.DurationVar(&cfg.RaftElectionTimeout, "raft-election-timeout", cfg.RaftElectionTimeout, "the nodes' raft.election_timeout (0: txcoord's default)")
	fs.StringVar(&cfg.ClusterID, "cluster-id", cfg.ClusterID, "coordinator cluster id (part of every GID)")
	fs.IntVar(&cfg.Accounts, "accounts", cfg.Accounts, "accounts per store")
	fs.Int64Var(&cfg.InitialBalance, "initial-balance", cfg.InitialBalance, "starting balance of every account")
	fs.IntVar(&cfg.Transfers, "transfers", cfg.Transfers, "transfers in total")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent workers")
	fs.Int64Var(&cfg.MaxAmount, "max-amount", cfg.MaxAmount, "largest ordinary transfer amount")
	fs.Float64Var(&cfg.OverdraftRate, "overdraft-rate", cfg.OverdraftRate, "share of transfers larger than any starting balance (they usually roll back)")
	fs.Float64Var(&cfg.KillAt, "kill-at", cfg.KillAt, "share of transfers done when the leader is SIGKILLed (0: no kill)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the transfer plan")
	fs.DurationVar(&cfg.StartTimeout, "start-timeout", cfg.StartTimeout, "bound on the cluster start until a leader serves (and, with --nodes 1, on the restart)")
	fs.DurationVar(&cfg.ElectionWait, "election-wait", cfg.ElectionWait, "bound on the survivors electing a leader that serves after the kill")
	fs.DurationVar(&cfg.CatchUpTimeout, "catch-up-timeout", cfg.CatchUpTimeout, "bound on the killed node rejoining and catching up, and on the nodes reaching one applied index at the end")
	fs.DurationVar(&cfg.ResolveTimeout, "resolve-timeout", cfg.ResolveTimeout, "bound on resolving unknown outcomes")
	fs.DurationVar(&cfg.SettleTimeout, "settle-timeout", cfg.SettleTimeout, "bound on waiting for recovery to clear prepared branches and intents")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound on the whole demo")
	fs.DurationVar(&cfg.Progress, "progress", cfg.Progress, "period of progress lines")
	fs.StringVar(&cfg.IntentTable, "intent-table", cfg.IntentTable, "the SurrealDB adapter's intent table")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	cfg.Stores = demo.StoresFromEnv(os.Getenv)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "txdemo: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "txdemo: FAILED: %v\n", err)
		os.Exit(1)
	}
	sum.Report(os.Stdout)
	if !sum.OK() {
		os.Exit(1)
	}
}
