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
  pg-pg       move 1 between rows of txcoord_a and txcoord_b (participants pg-a,
              pg-b) in one Run call (two-phase commit)
  pg-surreal  move 1 from a PostgreSQL row to a SurrealDB record: Begin, Exec
              UPDATE on participant pg-a, Read + Merge on participant surreal, Commit
  single      one UPDATE on pg-a in one Run call (one-phase commit)

With --start it launches a --nodes coordinator cluster (all on this machine,
fresh data in --work-dir) and reads /proc for the coordinators' CPU and
memory. Every workload, acknowledgement mode and concurrency is measured in
--rounds rounds, txcoord and baseline back to back (A B, then B A in the next
round); the report gives the medians of the rounds and the spread of the ratio.

Output: a table on stdout (with --json -, on stderr), the JSON report and a PNG
chart where asked, and last, one line per workload at concurrency 32:
  bench: workload=W c=C txcoord_tps=T baseline_tps=B ratio=R p50_ms=P p99_ms=Q
(ratio = txcoord_tps / baseline_tps, the median of the rounds' ratios;
latencies are txcoord's, committed transactions only, retries included).

--floor adds a third side to each round: the txcoord side's transactions
committed by txbench itself through the participant adapters txcoord uses
(same pipelining, receipts, parallel prepare and commit, one-phase commit),
with no coordinator, no Raft and no gRPC. Its throughput over the baseline's
is the ceiling: the best ratio any coordinator using these adapters could
reach on this machine. Its lines come before the bench lines:
  floor: workload=W c=C floor_tps=F ceiling=F/B txcoord_of_floor=T/F

--phases N keeps the txids of the last N transactions each two-phase txcoord
side committed and, after the side, reads their timelines from the leader:
a table gives the medians of statements (begin to commit request), prepare
(to the last vote), decision (to the decision applied), commit (to the last
branch committed), and what the client saw outside them.

--hold N also holds N transactions open (max_active is set to N) and reports
the leader's memory and what the next Begin gets.

Needs the databases (make db-up) and their environment:
  eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"
With --addr, the coordinator there must have participants named as
--pg-a/--pg-b/--surreal on those same databases (no CPU figures then).

Examples:
  bin/txbench --start --workload pg-pg --concurrency 1,32 --rounds 3 --duration 10s
  bin/txbench --start --json .data/bench.json --chart .data/bench.png
  bin/txbench --start --workload pg-pg --concurrency 1 --ack applied,decision
  bin/txbench --start --workload single --concurrency 1 --rounds 1 --hold 10000
  bin/txbench --start --workload pg-pg --concurrency 32 --floor
  bin/txbench --start --workload pg-pg,pg-surreal --concurrency 1,32 --phases 200

Flags:
`

func main() {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("txbench", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "address(es) of a running txcoord cluster, comma-separated (ignored with --start)")
	fs.BoolVar(&cfg.Start, "start", false, "launch a coordinator cluster for the run (configs, logs and data in --work-dir)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "nodes of the --start cluster (1, 3 or 5)")
	fs.StringVar(&cfg.Txcoord, "txcoord", cfg.Txcoord, "txcoord binary for --start")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for --start's configs, logs and data (the nodes' data directories n1..nN are removed first)")
	fs.IntVar(&cfg.BasePort, "base-port", cfg.BasePort, "node i of --start listens on base-port+i (gRPC) and base-port+100+i (Raft)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "with --start: serve Go profiles from node i on 127.0.0.1:base-port+200+i/debug/pprof/")
	fs.IntVar(&cfg.MaxActive, "max-active", 0, "coordinator.max_active of the --start nodes (0: server default)")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "pool size of each participant on the --start nodes (0: adapter default)")
	workloads := fs.String("workload", strings.Join(cfg.Workloads, ","), "comma list of workloads: "+strings.Join(bench.Workloads, ", "))
	conc := fs.String("concurrency", joinInts(cfg.Concurrency), "comma list of concurrency levels to sweep")
	acks := fs.String("ack", strings.Join(cfg.Acks, ","), "comma list of acknowledgement modes: applied (Commit waits for phase two), decision")
	decisionAt := fs.String("decision-concurrency", "", "comma list of concurrencies at which two-phase workloads are also measured with ack=decision")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "A/B rounds per measurement; medians are reported")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time per workload, concurrency, side and round")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured time before each measurement")
	fs.IntVar(&cfg.Accounts, "accounts", cfg.Accounts, "rows/records per store (fewer means more conflicts)")
	fs.BoolVar(&cfg.Baseline, "baseline", cfg.Baseline, "also measure the non-atomic baseline")
	fs.BoolVar(&cfg.Floor, "floor", cfg.Floor, "also measure the floor: the same transactions committed by txbench through txcoord's participant adapters, no coordinator (ack=applied only)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the account choices")
	fs.IntVar(&cfg.Retries, "retries", cfg.Retries, "re-runs of an aborted transfer (conflict, NO vote)")
	fs.IntVar(&cfg.Phases, "phases", 0, "sample the last N committed transactions of each two-phase txcoord side and report where their time went on the leader (statements, prepare, decision, commit; from their timelines)")
	fs.IntVar(&cfg.Hold, "hold", 0, "also hold this many transactions open and measure memory and the max_active refusal")
	fs.StringVar(&cfg.PGA, "pg-a", cfg.PGA, "participant name of database txcoord_a (TXCOORD_PG_DSN_A)")
	fs.StringVar(&cfg.PGB, "pg-b", cfg.PGB, "participant name of database txcoord_b (TXCOORD_PG_DSN_B)")
	fs.StringVar(&cfg.Surreal, "surreal", cfg.Surreal, "participant name of the SurrealDB database")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", cfg.OpTimeout, "bound on one transaction attempt")
	jsonOut := fs.String("json", "", "write the JSON report to this file (- for stdout; the table then goes to stderr)")
	chartOut := fs.String("chart", "", "write a PNG chart (throughput and p99 against concurrency) to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	cfg.Workloads = splitList(*workloads)
	cfg.Acks = splitList(*acks)
	cfg.Concurrency = nil
	for _, s := range splitList(*conc) {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "txbench: --concurrency %q: %q is not a number\n", *conc, s)
			os.Exit(2)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	for _, s := range splitList(*decisionAt) {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "txbench: --decision-concurrency %q: %q is not a number\n", *decisionAt, s)
			os.Exit(2)
		}
		cfg.DecisionAt = append(cfg.DecisionAt, n)
	}
	cfg.Stores = demo.StoresFromEnv(os.Getenv)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "txbench: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	out := os.Stdout
	if *jsonOut == "-" {
		out = os.Stderr
	}
	failed := err != nil
	if rep != nil {
		rep.WriteTable(out)
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, rep); werr != nil {
				fmt.Fprintf(os.Stderr, "txbench: %v\n", werr)
				failed = true
			}
		}
		if *chartOut != "" && len(rep.Results) > 0 {
			if werr := writeChart(*chartOut, rep); werr != nil {
				fmt.Fprintf(os.Stderr, "txbench: %v\n", werr)
				failed = true
			}
		}
		for _, line := range append(rep.FloorLines(), rep.FinalLines()...) {
			fmt.Fprintln(out, line)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "txbench: %v\n", err)
	}
	if failed {
		os.Exit(1)
	}
}

func writeJSON(path string, rep *bench.Report) error {
	w := os.Stdout
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("json: %w", err)
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}

func writeChart(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := rep.WriteChart(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
