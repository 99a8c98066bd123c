// Command txbench measures transactions through txcoord against a
// non-atomic baseline (the same writes, autocommit, directly on the databases).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/txcoord/txcoord/internal/bench"
	"github.com/txcoord/txcoord/internal/demo"
)

const usage = `txbench — throughput and latency of txcoord transactions, and the price of
atomicity: the same writes done directly on the databases (independent
autocommit writes, pooled connections, same concurrency) are the baseline.

Workloads (each recreates its tables: bench_accounts in PostgreSQL, records
bench_account:<n> in SurrealDB):
  pg-surreal  move 1 from a PostgreSQL row to a SurrealDB record: Begin, Exec
              UPDATE on participant pg-a, Read + Merge on participant surreal, Commit
  pg-pg       move 1 between rows of txcoord_a and txcoord_b (participants pg-a,
              pg-b) in one Run call
  single      one UPDATE on pg-a in one Run call (one-phase commit)

For each workload and concurrency it prints
  bench: workload=W c=C txcoord_tps=T baseline_tps=B ratio=R p50_ms=P p99_ms=Q
(ratio = txcoord_tps / baseline_tps; latencies are txcoord's, committed
transactions only). With --json these lines go to stderr and stdout gets a
JSON array of results.

Needs the databases (make db-up) and their environment:
  eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
With --addr, the coordinator there must have participants named as
--pg-a/--pg-b/--surreal on those same databases.

Examples:
  bin/txbench --start --workload pg-surreal --concurrency 1,8 --duration 10s
  bin/txbench --start --workload pg-surreal,pg-pg,single --concurrency 1,4,16,32 --json > bench.json
  bin/txbench --addr 127.0.0.1:7400 --workload single --concurrency 8 --baseline=false

Flags:
`

func main() {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("txbench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "address of a running txcoord (ignored with --start)")
	fs.BoolVar(&cfg.Start, "start", false, "launch a coordinator child process for the run (config and log in --work-dir)")
	fs.StringVar(&cfg.Txcoord, "txcoord", cfg.Txcoord, "txcoord binary for --start")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for --start's config, log and data")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC address of the --start coordinator")
	fs.StringVar(&cfg.RaftBind, "raft-bind", cfg.RaftBind, "Raft address of the --start coordinator")
	workloads := fs.String("workload", strings.Join(cfg.Workloads, ","), "comma list of workloads: "+strings.Join(bench.Workloads, ", "))
	conc := fs.String("concurrency", joinInts(cfg.Concurrency), "comma list of concurrency levels to sweep")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time per workload, concurrency and side")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	fs.IntVar(&cfg.Accounts, "accounts", cfg.Accounts, "rows/records per store (fewer means more conflicts)")
	fs.BoolVar(&cfg.Baseline, "baseline", cfg.Baseline, "also measure the non-atomic baseline")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the account choices")
	fs.StringVar(&cfg.PGA, "pg-a", cfg.PGA, "participant name of database txcoord_a (TXCOORD_PG_DSN_A)")
	fs.StringVar(&cfg.PGB, "pg-b", cfg.PGB, "participant name of database txcoord_b (TXCOORD_PG_DSN_B)")
	fs.StringVar(&cfg.Surreal, "surreal", cfg.Surreal, "participant name of the SurrealDB database")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", cfg.OpTimeout, "bound on one transaction")
	jsonOut := fs.Bool("json", false, "write the results as JSON to stdout (the bench: lines go to stderr)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	cfg.Workloads = splitList(*workloads)
	cfg.Concurrency = nil
	for _, s := range splitList(*conc) {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "txbench: --concurrency %q: %q is not a number\n", *conc, s)
			os.Exit(2)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	cfg.Stores = demo.StoresFromEnv(os.Getenv)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "txbench: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := bench.Run(ctx, cfg)
	lines := os.Stdout
	if *jsonOut {
		lines = os.Stderr
	}
	for _, r := range results {
		fmt.Fprintln(lines, r.Line())
	}
	if *jsonOut {
		if results == nil {
			results = []bench.Result{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results) //nolint:errcheck // stdout
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "txbench: %v\n", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
