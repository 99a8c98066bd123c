// Command txdemo runs the txcoord demo (make demo): transfers between
// PostgreSQL and SurrealDB accounts through a txcoord coordinator that is
// SIGKILLed and restarted mid-run, then checks that every transfer was
// all-or-nothing and nothing is left in doubt.
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

const usage = `txdemo — atomic transfers between PostgreSQL and SurrealDB through txcoord,
with the coordinator SIGKILLed and restarted mid-run.

It writes a coordinator config to <work-dir>/txcoord.yaml, starts
<txcoord> serve as a child process (log: <work-dir>/txcoord.log), recreates
the accounts (PostgreSQL table demo_accounts, SurrealDB records
demo_account:<id>), runs the transfers, resolves unknown outcomes, waits for
recovery to clear every prepared branch and intent, and checks the balances
directly in both databases. It ends with one line:

  demo: transfers=N committed=A aborted=B unknown_resolved=C total_before=X total_after=Y pg_prepared_left=P surreal_intents_left=S

committed, aborted and unknown_resolved partition the transfers (a Commit
answered "outcome unknown" counts only in unknown_resolved once resolved).
Exit status: 0 pass; 1 a violation (totals differ, an account is off, anything
left in doubt or unresolved) or the demo could not run; 2 bad flags.

Needs the databases (make db-up) and their environment:
  eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
(TXCOORD_PG_DSN_A, TXCOORD_SURREAL_URL, _USER, _PASS, _NS, _DB).

Examples:
  make demo                                    # build, start the databases, run scripts/demo.sh
  scripts/demo.sh --transfers 1000 --workers 16
  bin/txdemo --kill-at 0                       # no kill
  bin/txdemo --seed 7 --overdraft-rate 0.3

Flags:
`

func main() {
	cfg := demo.DefaultConfig()
	fs := flag.NewFlagSet("txdemo", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&cfg.Txcoord, "txcoord", cfg.Txcoord, "txcoord binary")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for the config, the coordinator log and its data (kept across runs)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "coordinator gRPC address")
	fs.StringVar(&cfg.RaftBind, "raft-bind", cfg.RaftBind, "coordinator Raft address")
	fs.StringVar(&cfg.ClusterID, "cluster-id", cfg.ClusterID, "coordinator cluster id (part of every GID)")
	fs.IntVar(&cfg.Accounts, "accounts", cfg.Accounts, "accounts per store")
	fs.Int64Var(&cfg.InitialBalance, "initial-balance", cfg.InitialBalance, "starting balance of every account")
	fs.IntVar(&cfg.Transfers, "transfers", cfg.Transfers, "transfers in total")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent workers")
	fs.Int64Var(&cfg.MaxAmount, "max-amount", cfg.MaxAmount, "largest ordinary transfer amount")
	fs.Float64Var(&cfg.OverdraftRate, "overdraft-rate", cfg.OverdraftRate, "share of transfers larger than any starting balance (they usually roll back)")
	fs.Float64Var(&cfg.KillAt, "kill-at", cfg.KillAt, "share of transfers done when the coordinator is SIGKILLed and restarted (0: no kill)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the transfer plan")
	fs.DurationVar(&cfg.StartTimeout, "start-timeout", cfg.StartTimeout, "bound on a coordinator (re)start until healthy")
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
