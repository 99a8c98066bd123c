// Package bench is txbench: throughput and latency of transactions through
// txcoord, measured against a baseline that does the same writes directly
// on the databases without atomicity (independent autocommit writes, pooled
// connections, the same concurrency). The ratio is the price of atomicity.
//
// The package has few types: Config (and Run), Result and Stats.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// Workloads lists the workload names.
var Workloads = []string{"pg-surreal", "pg-pg", "single"}

// Config configures a benchmark run. Start from DefaultConfig.
type Config struct {
	// Addr of a running txcoord; ignored with Start.
	Addr string
	// Start launches a coordinator child process (like the demo) with
	// participants PGA, PGB (when TXCOORD_PG_DSN_B is set) and Surreal.
	Start bool
	// Txcoord, WorkDir, Listen, RaftBind configure the launched coordinator.
	Txcoord, WorkDir, Listen, RaftBind string

	Workloads   []string
	Concurrency []int
	Duration    time.Duration // measured, per workload, concurrency and side
	Warmup      time.Duration // run before each measurement, not counted
	Accounts    int           // rows/records per store the workloads spread over
	Baseline    bool          // measure the baseline too
	Seed        uint64

	// Participant names on the coordinator.
	PGA, PGB, Surreal string
	Stores            demo.Stores

	// OpTimeout bounds one operation (a whole transaction).
	OpTimeout time.Duration
	// Log receives progress and the human report.
	Log io.Writer
}

// Tables the workloads write (recreated by every run).
const (
	pgTable      = "bench_accounts"
	surrealTable = "bench_account"
)

// DefaultConfig measures pg-surreal at concurrency 1 and 8.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:7400", Txcoord: "bin/txcoord", WorkDir: ".data/bench",
		Listen: "127.0.0.1:7462", RaftBind: "127.0.0.1:7562",
		Workloads: []string{"pg-surreal"}, Concurrency: []int{1, 8},
		Duration: 10 * time.Second, Warmup: 2 * time.Second, Accounts: 1000, Baseline: true, Seed: 1,
		PGA: "pg-a", PGB: "pg-b", Surreal: "surreal",
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
	if needA && c.Stores.PGDSNA == "" {
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
	for _, n := range c.Concurrency {
		if n < 1 || n > 1024 {
			errs = append(errs, fmt.Errorf("concurrency %d: want 1..1024", n))
		}
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
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("op-timeout %s: want > 0", c.OpTimeout))
	}
	if !c.Start && c.Addr == "" {
		errs = append(errs, errors.New("addr is empty: give a running txcoord's address, or --start"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("Log is nil"))
	}
	return errors.Join(errs...)
}

// needs reports whether a workload uses a store: "a", "b" or "surreal".
func (c Config) needs(store string) bool {
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

// Run runs every workload at every concurrency and returns the results in
// that order. An error means the benchmark could not run.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Log, "bench: "+format+"\n", args...) }
	maxC := 0
	for _, n := range cfg.Concurrency {
		maxC = max(maxC, n)
	}

	addr := cfg.Addr
	if cfg.Start {
		coord, err := startCoordinator(ctx, cfg, say)
		if err != nil {
			return nil, err
		}
		defer coord.Stop(10 * time.Second) //nolint:errcheck // best effort at exit
		addr = cfg.Listen
	}
	c, err := demo.DialClient(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	e := &env{cfg: cfg, c: c}
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
		for range maxC {
			sc, err := demo.DialSurreal(ctx, cfg.Stores.Surreal())
			if err != nil {
				return nil, err
			}
			e.surreal = append(e.surreal, sc)
		}
	}

	var results []Result
	for _, name := range cfg.Workloads {
		w := workloads[name]
		say("%s: setting up %d accounts per store", name, cfg.Accounts)
		if err := w.setup(ctx, e); err != nil {
			return results, fmt.Errorf("%s: setup: %w", name, err)
		}
		for _, n := range cfg.Concurrency {
			r := Result{Workload: name, Concurrency: n}
			say("%s c=%d: txcoord, %s warmup + %s", name, n, cfg.Warmup, cfg.Duration)
			r.Txcoord = drive(ctx, n, cfg.Warmup, cfg.Duration, cfg.OpTimeout, cfg.Seed, func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
				return w.txcoord(ctx, e, rnd)
			})
			say("%s", r.Txcoord.detail("txcoord"))
			if cfg.Baseline {
				say("%s c=%d: baseline, %s warmup + %s", name, n, cfg.Warmup, cfg.Duration)
				b := drive(ctx, n, cfg.Warmup, cfg.Duration, cfg.OpTimeout, cfg.Seed, func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
					return w.baseline(ctx, e, worker, rnd)
				})
				say("%s", b.detail("baseline"))
				r.Baseline = &b
				r.Ratio = ratio(r.Txcoord.TPS, b.TPS)
			}
			results = append(results, r)
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
		}
	}
	return results, nil
}

func startCoordinator(ctx context.Context, cfg Config, say func(string, ...any)) (*demo.Coordinator, error) {
	dir, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	f := benchNodeFile(cfg, dir)
	confPath, logPath := filepath.Join(dir, "txcoord.yaml"), filepath.Join(dir, "txcoord.log")
	if err := f.Write(confPath); err != nil {
		return nil, err
	}
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return nil, fmt.Errorf("coordinator log: %w", err)
	}
	coord := &demo.Coordinator{
		Binary: cfg.Txcoord, ConfigPath: confPath, Addr: cfg.Listen, LogPath: logPath,
		Env: demo.ChildEnv(os.Environ(), demo.SurrealPasswordEnv+"="+cfg.Stores.SurrealPass),
	}
	say("starting coordinator: %s serve --config %s (log %s)", cfg.Txcoord, confPath, logPath)
	if err := coord.Start(); err != nil {
		return nil, err
	}
	if _, err := coord.WaitHealthy(ctx, 30*time.Second); err != nil {
		coord.Stop(5 * time.Second) //nolint:errcheck // already failing
		return nil, err
	}
	return coord, nil
}

// benchNodeFile is the configuration of a coordinator launched by --start.
func benchNodeFile(cfg Config, dir string) demo.NodeFile {
	parts := []demo.NodeParticipant{demo.PostgresParticipant(cfg.PGA, cfg.Stores.PGDSNA)}
	if cfg.Stores.PGDSNB != "" {
		parts = append(parts, demo.PostgresParticipant(cfg.PGB, cfg.Stores.PGDSNB))
	}
	if cfg.Stores.SurrealURL != "" {
		parts = append(parts, demo.SurrealDBParticipant(cfg.Surreal, cfg.Stores))
	}
	f := demo.SingleNode("bench", cfg.Listen, cfg.RaftBind, filepath.Join(dir, "n1"), parts...)
	f.LogLevel = "warn" // the bench measures; per-transaction logging would cost
	return f
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
// the measured time runs until the last measured operation finished.
func drive(ctx context.Context, n int, warmup, duration, opTimeout time.Duration, seed uint64,
	op func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error)) Stats {
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	type acc struct {
		lat          []time.Duration
		aborts, errs int
		last         time.Time
		firstErr     error
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
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				out, err := op(octx, i, rnd)
				cancel()
				t1 := time.Now()
				if t0.Before(measureFrom) {
					continue
				}
				a.last = t1
				switch out {
				case outOK:
					a.lat = append(a.lat, t1.Sub(t0))
				case outAborted:
					a.aborts++
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
	wg.Wait()
	var lat []time.Duration
	aborts, errs := 0, 0
	last := end
	var first error
	for _, a := range accs {
		lat = append(lat, a.lat...)
		aborts += a.aborts
		errs += a.errs
		if a.last.After(last) {
			last = a.last
		}
		if first == nil {
			first = a.firstErr
		}
	}
	s := summarize(lat, aborts, errs, last.Sub(measureFrom))
	if first != nil {
		s.FirstError = first.Error()
	}
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
