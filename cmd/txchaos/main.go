// Command txchaos runs txcoord's chaos suite: its own PostgreSQL and
// SurrealDB, a 3-node coordinator cluster behind fault-injecting proxies,
// concurrent workloads under a seeded fault schedule, then checkers. See
// chaos/README.md.
//
//	go run ./cmd/txchaos --short                 # make chaos-short (< 3 minutes)
//	go run ./cmd/txchaos --duration=10m          # make chaos
//	go run ./cmd/txchaos --short --seed=42       # reproduce a run
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/txcoord/txcoord/chaos"
)

func main() {
	short := flag.Bool("short", false, "the chaos-short preset: 100 s window, short faults (under 3 minutes in all)")
	duration := flag.Duration("duration", 0, "workload and fault window (default 10m, or 100s with --short)")
	seed := flag.Uint64("seed", 0, "seed of the fault schedule and workloads (default: random, printed)")
	report := flag.String("report", "", "JSON report path (default <work-dir>/report.json)")
	workDir := flag.String("work-dir", ".data/chaos", "where the run keeps its databases, nodes, logs and binary")
	repo := flag.String("repo", ".", "repository root (scripts/, cmd/txcoord)")
	pgPort := flag.Int("pg-port", 55441, "port of the run's own PostgreSQL")
	surrealPort := flag.Int("surreal-port", 58041, "port of the run's own SurrealDB")
	nemeses := flag.String("nemeses", "", "comma-separated fault kinds (default all: "+strings.Join(chaos.AllNemeses, ",")+")")
	inject := flag.String("inject", "", `break atomicity on purpose to prove the checkers ("rogue-rollback")`)
	binary := flag.String("binary", "", "use this txcoord binary instead of building one")
	keep := flag.Bool("keep-databases", false, "leave the run's databases running at the end")
	onePhase := flag.Bool("one-phase", true, "let transfers stay inside one participant (one-phase commits); false: every transfer crosses two")
	flag.Parse()

	o := chaos.DefaultOptions()
	if *short {
		o = chaos.ShortOptions()
	}
	if *duration > 0 {
		o.Duration = *duration
	}
	o.Seed = *seed
	if o.Seed == 0 {
		o.Seed = rand.Uint64N(1_000_000) + 1
	}
	o.WorkDir, o.Repo, o.PGPort, o.SurrealPort = *workDir, *repo, *pgPort, *surrealPort
	o.Inject, o.Binary, o.KeepDatabases, o.OnePhase = *inject, *binary, *keep, *onePhase
	if *nemeses != "" {
		o.Nemeses = strings.Split(*nemeses, ",")
		for _, n := range o.Nemeses {
			if !known(n) {
				fmt.Fprintf(os.Stderr, "txchaos: unknown nemesis %q; known: %s\n", n, strings.Join(chaos.AllNemeses, ","))
				os.Exit(2)
			}
		}
	}
	if o.Inject != "" && o.Inject != "rogue-rollback" {
		fmt.Fprintf(os.Stderr, "txchaos: --inject %q: known: rogue-rollback\n", o.Inject)
		os.Exit(2)
	}
	o.ReportPath = *report
	if o.ReportPath == "" {
		o.ReportPath = strings.TrimRight(o.WorkDir, "/") + "/report.json"
	}
	o.Command = reproduce(*short, o, *nemeses)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := chaos.Run(ctx, o)
	if rep != nil {
		rep.WriteSummary(os.Stdout)
		if werr := rep.WriteJSON(o.ReportPath); werr != nil {
			fmt.Fprintf(os.Stderr, "txchaos: writing the report: %v\n", werr)
		} else {
			fmt.Printf("report: %s (%.0fs in all)\n", o.ReportPath, time.Since(start).Seconds())
		}
		fmt.Println(rep.Line())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "txchaos: %v\n", err)
		fmt.Fprintf(os.Stderr, "txchaos: seed %d; reproduce with: %s\n", o.Seed, o.Command)
		os.Exit(2)
	}
	if !rep.Passed {
		os.Exit(1)
	}
}

func known(n string) bool {
	for _, k := range chaos.AllNemeses {
		if k == n {
			return true
		}
	}
	return false
}

func reproduce(short bool, o chaos.Options, nemeses string) string {
	s := "go run ./cmd/txchaos"
	if short {
		s += " --short"
	}
	s += fmt.Sprintf(" --duration=%s --seed=%d", o.Duration, o.Seed)
	if nemeses != "" {
		s += " --nemeses=" + nemeses
	}
	if o.Inject != "" {
		s += " --inject=" + o.Inject
	}
	if !o.OnePhase {
		s += " --one-phase=false"
	}
	return s
}
