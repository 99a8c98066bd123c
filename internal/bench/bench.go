// Package bench is txbench: throughput and latency of transactions through
// txcoord, measured against a baseline that does the same writes directly
// on the databases without atomicity (independent autocommit writes, pooled
// connections, the same concurrency). The ratio is the price of atomicity.
//
// A run launches a coordinator cluster (3 nodes by default, all on this
// machine) or uses a running one, and measures every workload at every
// concurrency, txcoord and baseline one after the other, in several rounds
// whose A/B order alternates (the machine is noisy: the median of the rounds
// is reported, and the spread of the ratio says how noisy). It also reads
// /proc for the CPU and memory the coordinator processes (and the database
// servers) used, per 1,000 transactions.
//
// The package has few types: Config (and Run), Report, Result and Stats.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// Workloads lists the workload names.
var Workloads = []string{"pg-pg", "pg-surreal", "single"}

// Ack modes: when Commit returns (client.TxOptions.AckDecision).
const (
	AckApplied  = "applied"  // after every participant committed (default)
	AckDecision = "decision" // once the decision is durable
)

// Config configures a benchmark run. Start from DefaultConfig.
type Config struct {
	// Addr of a running txcoord cluster (comma-separated addresses);
	// ignored with Start.
	Addr string
	// Start launches Nodes coordinator processes forming one Raft cluster
	// (fresh data each run) with participants PGA, PGB (when
	// TXCOORD_PG_DSN_B is set) and Surreal.
	Start bool
	Nodes int
	// Txcoord is the binary, WorkDir holds the nodes' configs, logs and
	// data; node i listens on BasePort+i (gRPC) and BasePort+100+i (Raft).
	Txcoord, WorkDir string
	BasePort         int
	// Pprof serves profiles from the launched nodes (debug_pprof, node i
	// on 127.0.0.1:BasePort+200+i), to profile a run with go tool pprof.
	Pprof bool
	// MaxActive is the launched nodes' coordinator.max_active (0: the
	// server default, or Hold when Hold is set).
	MaxActive int
	// MaxConns is each participant's pool size on the launched nodes (0:
	// the adapter default).
	MaxConns int

	Workloads   []string
	Concurrency []int
	// Acks lists the acknowledgement modes to measure (AckApplied, AckDecision).
	Acks []string
	// DecisionAt lists concurrencies at which two-phase workloads are also
	// measured with AckDecision (when Acks lacks it): the latency of
	// Commit returning once the decision is durable.
	DecisionAt []int
	Rounds     int           // A/B rounds; medians are reported
	Duration   time.Duration // measured, per workload, concurrency, side and round
	Warmup     time.Duration // run before each measurement, not counted
	Accounts   int           // rows/records per store the workloads spread over
	Baseline   bool          // measure the baseline too
	// Floor also measures the floor: the txcoord side's transactions
	// committed by txbench itself through the participant adapters, with
	// no coordinator (floor.go); reported as floor TPS, the ceiling (floor
	// / baseline) and txcoord / floor.
	Floor bool
	Seed  uint64
	// Retries: an aborted transfer (a conflict, a NO vote) is run again up
	// to this many times, as an application would; the latency of a
	// transfer includes its retries.
	Retries int

	// Phases > 0 samples the last Phases committed transactions of every
	// two-phase txcoord side and reports where their time went on the
	// leader, from their timelines (phases.go).
	Phases int

	// Hold > 0 also measures memory with Hold transactions held open
	// (begun, one staged write each where SurrealDB is configured, not
	// committed) and checks that one more Begin is refused by max_active.
	Hold int

	// Participant names on the coordinator.
	PGA, PGB, Surreal string
	Stores            demo.Stores

	// OpTimeout bounds one transaction attempt.
	OpTimeout time.Duration
	// Log receives progress.
	Log io.Writer
}

// Tables the workloads write (recreated by every run).
const (
	pgTable      = "bench_accounts"
	surrealTable = "bench_account"
)

// DefaultConfig measures every workload at concurrency 1, 8, 16 and 32
// against a 3-node cluster it launches, in 3 rounds.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:7400", Nodes: 3, Txcoord: "bin/txcoord", WorkDir: ".data/bench", BasePort: 7481,
		Workloads: slices.Clone(Workloads), Concurrency: []int{1, 8, 16, 32}, Acks: []string{AckApplied},
		Rounds: 3, Duration: 10 * time.Second, Warmup: 2 * time.Second, Accounts: 1000, Baseline: true, Seed: 1,
		Retries: 3, PGA: "pg-a", PGB: "pg-b", Surreal: "surreal",
		OpTimeout: 30 * time.Second, Log: os.Stderr,
	}
}

// Validate checks the configuration and names the flag at fault.
func (c Config) Validate() error {
	var errs []error
	if len(c.Workloads) == 0 {
		errs = append(errs, errors.New("workload: give at least one of "+strings.Join(Workloads, ", ")))
	}
	needA, needB, needS := false, false, false
	for _, w := range c.Workloads {
		switch w {
		case "pg-surreal":
			needA, needS = true, true
		case "pg-pg":
			needA, needB = true, true
		case "single":
			needA = true
		default:
			errs = append(errs, fmt.Errorf("workload %q: use %s", w, strings.Join(Workloads, ", ")))
		}
	}
	hint := `start the databases (make db-up) and eval "$(scripts/pg.sh env)"; eval "$(scripts/surreal.sh env)"`
	if (needA || c.Hold > 0) && c.Stores.PGDSNA == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_PG_DSN_A is not set: %s", hint))
	}
	if needB && c.Stores.PGDSNB == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_PG_DSN_B is not set (workload pg-pg): %s", hint))
	}
	if needS && c.Stores.SurrealURL == "" {
		errs = append(errs, fmt.Errorf("TXCOORD_SURREAL_URL is not set (workload pg-surreal): %s", hint))
	}
	if len(c.Concurrency) == 0 {
		errs = append(errs, errors.New("concurrency: give at least one value"))
	}
	for _, n := range append(slices.Clone(c.Concurrency), c.DecisionAt...) {
		if n < 1 || n > 1024 {
			errs = append(errs, fmt.Errorf("concurrency %d: want 1..1024", n))
		}
	}
	if len(c.Acks) == 0 {
		errs = append(errs, errors.New("ack: give applied, decision or both"))
	}
	for _, a := range c.Acks {
		if a != AckApplied && a != AckDecision {
			errs = append(errs, fmt.Errorf("ack %q: use %s or %s", a, AckApplied, AckDecision))
		}
	}
	if c.Rounds < 1 || c.Rounds > 100 {
		errs = append(errs, fmt.Errorf("rounds %d: want 1..100 (3 or more to see the noise)", c.Rounds))
	}
	if c.Phases < 0 || c.Phases > maxPhaseSample {
		errs = append(errs, fmt.Errorf("phases %d: want 0 (off) to %d transactions sampled per side", c.Phases, maxPhaseSample))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %s: want > 0", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup %s: want >= 0", c.Warmup))
	}
	if c.Accounts < 1 || c.Accounts > 1_000_000 {
		errs = append(errs, fmt.Errorf("accounts %d: want 1..1000000", c.Accounts))
	}
	if c.Retries < 0 || c.Retries > 100 {
		errs = append(errs, fmt.Errorf("retries %d: want 0..100", c.Retries))
	}
	if c.Hold < 0 || c.Hold > 1_000_000 {
		errs = append(errs, fmt.Errorf("hold %d: want 0..1000000", c.Hold))
	}
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("op-timeout %s: want > 0", c.OpTimeout))
	}
	if c.Start {
		if c.Nodes != 1 && c.Nodes != 3 && c.Nodes != 5 {
			errs = append(errs, fmt.Errorf("nodes %d: use 1, 3 or 5", c.Nodes))
		}
		if c.BasePort < 1024 || c.BasePort+100+c.Nodes > 65535 {
			errs = append(errs, fmt.Errorf("base-port %d: want 1024..65000", c.BasePort))
		}
		if c.MaxActive < 0 || c.MaxConns < 0 {
			errs = append(errs, errors.New("max-active and max-conns must not be negative"))
		}
		if c.Hold > 0 && c.MaxActive > 0 && c.MaxActive != c.Hold {
			errs = append(errs, fmt.Errorf("hold %d with max-active %d: the hold measurement fills max_active exactly; leave max-active unset", c.Hold, c.MaxActive))
		}
	} else if c.Addr == "" {
		errs = append(errs, errors.New("addr is empty: give a running txcoord's address, or --start"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("Log is nil"))
	}
	return errors.Join(errs...)
}

// needs reports whether a workload uses a store: "a", "b" or "surreal".
func (c Config) needs(store string) bool {
	if c.Hold > 0 && store == "surreal" && c.Stores.SurrealURL != "" {
		return true
	}
	for _, w := range c.Workloads {
		if store == "a" || (store == "b" && w == "pg-pg") || (store == "surreal" && w == "pg-surreal") {
			return true
		}
	}
	return false
}

// env is what the workloads run against.
type env struct {
	cfg      Config
	c        *client.Client
	pgA, pgB *pgxpool.Pool
	surreal  []*demo.SurrealConn // one per baseline worker
	floor    *floorEnv           // with Config.Floor
	// committed samples the txids the txcoord side commits (--phases); set
	// before a side starts and cleared after it ends, nil otherwise.
	committed *txidSample
}

// surrealConn returns the worker's SurrealDB connection, redialled if a
// transport error made it unusable. Each worker index is used by one
// goroutine at a time.
func (e *env) surrealConn(ctx context.Context, worker int) (*demo.SurrealConn, error) {
	if sc := e.surreal[worker]; sc.Err() == nil {
		return sc, nil
	}
	sc, err := demo.DialSurreal(ctx, e.cfg.Stores.Surreal())
	if err != nil {
		return nil, err
	}
	e.surreal[worker] = sc
	return sc, nil
}

// Run runs every round of every workload at every concurrency and returns
// the report. An error means the benchmark could not run (a partial report
// may come with it).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if cfg.Hold > 0 && cfg.MaxActive == 0 {
		cfg.MaxActive = cfg.Hold
	}
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Log, "bench: "+format+"\n", args...) }
	maxC := 0
	for _, n := range append(slices.Clone(cfg.Concurrency), cfg.DecisionAt...) {
		maxC = max(maxC, n)
	}
	rep := &Report{Machine: describeMachine(), Started: time.Now().UTC().Format(time.RFC3339)}
	rep.Settings = settingsOf(cfg)

	addr := cfg.Addr
	var cl *cluster
	if cfg.Start {
		var err error
		if cl, err = startCluster(ctx, cfg, say); err != nil {
			return nil, err
		}
		defer cl.stop()
		addr = cl.addrList()
	}
	c, err := demo.DialClient(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	e := &env{cfg: cfg, c: c}
	if cfg.Floor {
		if e.floor, err = openFloor(ctx, cfg); err != nil {
			return nil, err
		}
		defer e.floor.close()
	}
	if e.pgA, err = demo.OpenPG(ctx, cfg.Stores.PGDSNA, int32(maxC+2)); err != nil {
		return nil, err
	}
	defer e.pgA.Close()
	if cfg.needs("b") {
		if e.pgB, err = demo.OpenPG(ctx, cfg.Stores.PGDSNB, int32(maxC+2)); err != nil {
			return nil, err
		}
		defer e.pgB.Close()
	}
	if cfg.needs("surreal") {
		defer func() {
			for _, sc := range e.surreal {
				sc.Close()
			}
		}()
		for range max(maxC, 1) {
			sc, err := demo.DialSurreal(ctx, cfg.Stores.Surreal())
			if err != nil {
				return nil, err
			}
			e.surreal = append(e.surreal, sc)
		}
	}
	pgPID, surrPID := findPostmaster(dsnPort(cfg.Stores.PGDSNA)), 0
	if cfg.needs("surreal") {
		surrPID = findSurrealServer(urlPort(cfg.Stores.SurrealURL))
	}
	if pgPID == 0 {
		say("PostgreSQL server process not found on this machine: its CPU is not reported")
	}
	newMon := func() *monitor {
		if cl == nil {
			return newMonitor(nil, -1, pgPID, surrPID)
		}
		leader, err := cl.leader(ctx, c)
		if err != nil {
			say("cannot tell the leader (%v): leader CPU and RSS not reported", err)
		}
		return newMonitor(cl.pids(), leader, pgPID, surrPID)
	}

	for _, name := range cfg.Workloads {
		say("%s: setting up %d accounts per store", name, cfg.Accounts)
		if err := workloads[name].setup(ctx, e); err != nil {
			return rep, fmt.Errorf("%s: setup: %w", name, err)
		}
	}
	// One entry per workload, ack and concurrency, filled round by round.
	var results []*Result
	for _, name := range cfg.Workloads {
		for _, ack := range cfg.Acks {
			for _, n := range cfg.Concurrency {
				results = append(results, &Result{Workload: name, Ack: ack, Concurrency: n})
			}
		}
		if workloads[name].onePhase || slices.Contains(cfg.Acks, AckDecision) {
			continue // one-phase commits have no decision to acknowledge
		}
		for _, n := range cfg.DecisionAt {
			results = append(results, &Result{Workload: name, Ack: AckDecision, Concurrency: n})
		}
	}
	for round := 1; round <= cfg.Rounds; round++ {
		for _, r := range results {
			w := workloads[r.Workload]
			opts := client.TxOptions{Timeout: cfg.OpTimeout, AckDecision: r.Ack == AckDecision}
			seed := cfg.Seed + uint64(round)*1_000_003
			var rr Round
			// measure runs one side and reports its line.
			measure := func(label, side string, retries int, op func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error)) Stats {
				say("round %d/%d %s %sc=%d: %s, %s warmup + %s", round, cfg.Rounds, r.Workload, label, r.Concurrency, side, cfg.Warmup, cfg.Duration)
				st := drive(ctx, r.Concurrency, cfg.Warmup, cfg.Duration, cfg.OpTimeout, seed, retries, newMon(), op)
				say("%s", st.detail(side))
				return st
			}
			runTx := func() {
				if !w.onePhase {
					e.committed = newTxidSample(cfg.Phases)
				}
				rr.Txcoord = measure("ack="+r.Ack+" ", "txcoord", cfg.Retries, func(ctx context.Context, _ int, rnd *rand.Rand) (outcome, error) {
					return w.txcoord(ctx, e, opts, rnd)
				})
				if ids := e.committed.txids(); len(ids) > 0 {
					say("round %d/%d %s ack=%s c=%d: reading %d timelines", round, cfg.Rounds, r.Workload, r.Ack, r.Concurrency, len(ids))
					rr.Txcoord.Phases = samplePhases(ctx, e.c, ids, 5*time.Second)
				}
				e.committed = nil
			}
			runBase := func() {
				b := measure("", "baseline", 0, func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
					return w.baseline(ctx, e, worker, rnd)
				})
				rr.Baseline = &b
			}
			runFloor := func() {
				if e.floor == nil || r.Ack != AckApplied {
					return // the floor has no decision to acknowledge early
				}
				f := measure("", "floor", cfg.Retries, func(ctx context.Context, _ int, rnd *rand.Rand) (outcome, error) {
					return w.floor(ctx, e.floor, rnd)
				})
				rr.Floor = &f
			}
			// A B (F) in odd rounds, (F) B A in even ones: drift of the
			// machine (other load, table bloat) then falls on every side alike.
			switch {
			case !cfg.Baseline:
				runTx()
				runFloor()
			case round%2 == 1:
				runTx()
				runBase()
				runFloor()
			default:
				runFloor()
				runBase()
				runTx()
			}
			if rr.Baseline != nil {
				rr.Ratio = ratio(rr.Txcoord.TPS, rr.Baseline.TPS)
			}
			r.Rounds = append(r.Rounds, rr)
			r.summarize()
			if ctx.Err() != nil {
				rep.Results = deref(results)
				return rep, ctx.Err()
			}
		}
	}
	rep.Results = deref(results)
	if cfg.Hold > 0 {
		var pids []int
		leader := -1
		if cl != nil {
			pids = cl.pids()
			leader, _ = cl.leader(ctx, c)
		}
		h, err := hold(ctx, e, cfg.Hold, pids, leader, say)
		rep.Hold = h
		if err != nil {
			return rep, fmt.Errorf("hold: %w", err)
		}
	}
	return rep, nil
}

func deref(rs []*Result) []Result {
	out := make([]Result, 0, len(rs))
	for _, r := range rs {
		if len(r.Rounds) > 0 {
			out = append(out, *r)
		}
	}
	return out
}

func dsnPort(dsn string) int {
	if u, err := url.Parse(dsn); err == nil && u.Port() != "" {
		p, _ := strconv.Atoi(u.Port())
		return p
	}
	for _, kv := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(kv, "port="); ok {
			p, _ := strconv.Atoi(v)
			return p
		}
	}
	return 5432
}

func urlPort(s string) int {
	u, err := url.Parse(s)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	Kernel    string  `json:"kernel"`
	GoVersion string  `json:"go_version"`
	MemoryMiB int64   `json:"memory_mib"`
	Load1     float64 `json:"load1_at_start"`
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				m.MemoryMiB = kb >> 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return m
}

// outcome of one operation.
type outcome int

const (
	outOK outcome = iota
	outAborted
	outError
)

// drive runs op on n workers for warmup+duration and measures the operations
// that started after the warmup. Workers stop starting operations at the end;
// the measured time runs until the last measured operation finished. An
// aborted operation is run again, with the same random choices, up to
// retries times; its latency includes the retries. mon (may be nil) is
// started when the warmup ends and stopped when the last worker is done.
func drive(ctx context.Context, n int, warmup, duration, opTimeout time.Duration, seed uint64, retries int, mon *monitor,
	op func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error)) Stats {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	type acc struct {
		lat                   []time.Duration
		aborts, retries, errs int
		failed                int // operations that aborted on every attempt
		last                  time.Time
		firstErr              error
	}
	accs := make([]acc, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &accs[i]
			rnd := rand.New(rand.NewPCG(seed, uint64(i)))
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				measured := !t0.Before(measureFrom)
				opSeed := rnd.Uint64()
				var out outcome
				var err error
				for attempt := 0; ; attempt++ {
					octx, cancel := context.WithTimeout(ctx, opTimeout)
					out, err = op(octx, i, rand.New(rand.NewPCG(opSeed, 0)))
					cancel()
					if out != outAborted || attempt >= retries || ctx.Err() != nil {
						break
					}
					if measured {
						a.aborts++
						a.retries++
					}
				}
				t1 := time.Now()
				if !measured {
					continue
				}
				a.last = t1
				switch out {
				case outOK:
					a.lat = append(a.lat, t1.Sub(t0))
				case outAborted:
					a.aborts++
					a.failed++
				default:
					a.errs++
					if a.firstErr == nil {
						a.firstErr = err
					}
				}
				if out != outOK && err != nil {
					// Do not spin on a persistent failure.
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	if mon != nil {
		select {
		case <-time.After(time.Until(measureFrom)):
		case <-ctx.Done():
		}
		mon.start()
	}
	wg.Wait()
	var u Usage
	if mon != nil {
		u = mon.stop()
	}
	var lat []time.Duration
	var aborts, retried, failed, errs int
	last := end
	var first error
	for _, a := range accs {
		lat = append(lat, a.lat...)
		aborts += a.aborts
		retried += a.retries
		failed += a.failed
		errs += a.errs
		if a.last.After(last) {
			last = a.last
		}
		if first == nil {
			first = a.firstErr
		}
	}
	s := summarize(lat, aborts, errs, last.Sub(measureFrom))
	s.Retries, s.Failed = retried, failed
	if first != nil {
		s.FirstError = first.Error()
	}
	s.setUsage(u, runtime.NumCPU())
	return s
}

// classify maps a txcoord commit (or Run) error to an outcome.
func classify(err error) (outcome, error) {
	switch {
	case err == nil:
		return outOK, nil
	case errors.Is(err, client.ErrAborted):
		return outAborted, err
	}
	return outError, err
}

// seedSurreal recreates n records through txcoord (so they carry the
// adapter's bookkeeping), in one-participant transactions of at most 500.
func seedSurreal(ctx context.Context, e *env, n int) error {
	sc := e.surreal[0]
	exists, err := sc.TableExists(ctx, surrealTable)
	if err != nil {
		return err
	}
	if exists {
		if _, err := sc.Query(ctx, "DELETE "+surrealTable+" RETURN NONE;", nil); err != nil {
			return err
		}
	}
	for lo := 0; lo < n; lo += 500 {
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		tx, err := e.c.Begin(tctx, client.TxOptions{Timeout: time.Minute})
		if err != nil {
			cancel()
			return err
		}
		for i := lo; i < min(lo+500, n); i++ {
			if _, err := tx.Do(tctx, e.cfg.Surreal, client.Upsert(surrealTable, int64(i), map[string]any{"balance": int64(0)})); err != nil {
				tx.Rollback(tctx) //nolint:errcheck // best effort
				cancel()
				return fmt.Errorf("seed %s:%d: %w", surrealTable, i, err)
			}
		}
		err = tx.Commit(tctx)
		if errors.Is(err, client.ErrOutcomeUnknown) {
			var out pb.Outcome
			if out, err = e.c.WaitOutcome(tctx, tx.ID()); err == nil && out != pb.Outcome_COMMITTED {
				err = fmt.Errorf("seeding transaction %s", out)
			}
		}
		cancel()
		if err != nil {
			return fmt.Errorf("seed %s: %w", surrealTable, err)
		}
	}
	return nil
}

// setupPG recreates the bench table with n rows in a database.
func setupPG(ctx context.Context, pool *pgxpool.Pool, n int) error {
	ddl := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s;
CREATE TABLE %[1]s (id bigint PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO %[1]s (id, balance) SELECT g, 0 FROM generate_series(0, %[2]d) g;`, pgTable, n-1)
	if _, err := pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("recreate %s: %w", pgTable, err)
	}
	return nil
}
