package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// maxReportedErrors bounds the unexpected errors kept for the report.
const maxReportedErrors = 5

// DialClient connects a txcoord client that reconnects quickly after a
// coordinator restart (gRPC's default reconnect backoff grows to minutes).
func DialClient(ctx context.Context, addr string, opts ...client.Option) (*client.Client, error) {
	opts = append([]client.Option{client.WithGRPCOptions(
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	)}, opts...)
	return client.Dial(ctx, addr, opts...)
}

// restartRetryPolicy retries calls that are safe to repeat every 250 ms at
// most, for about StartTimeout: workers resume as soon as the restarted
// coordinator serves (the default policy's backoff grows to 2 s).
func restartRetryPolicy(startTimeout time.Duration) client.RetryPolicy {
	const maxBackoff = 250 * time.Millisecond
	return client.RetryPolicy{Attempts: int(startTimeout/maxBackoff) + 4, MinBackoff: 50 * time.Millisecond, MaxBackoff: maxBackoff}
}

// Run runs the demo and returns what it found. An error means the demo could
// not run (a database down, the coordinator not starting or not coming back);
// a Summary whose OK is false means it ran and found a violation.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	var sum Summary
	if err := cfg.Validate(); err != nil {
		return sum, fmt.Errorf("invalid configuration:\n%w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Out, "demo: "+format+"\n", args...) }

	var err error
	if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
		return sum, err
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return sum, fmt.Errorf("work dir: %w", err)
	}
	sum.LogPath = cfg.logPath()
	if err := os.WriteFile(cfg.logPath(), nil, 0o644); err != nil { // a fresh log per run
		return sum, fmt.Errorf("coordinator log: %w", err)
	}
	if err := cfg.nodeFile().Write(cfg.configPath()); err != nil {
		return sum, err
	}

	pool, err := OpenPG(ctx, cfg.Stores.PGDSNA, 4)
	if err != nil {
		return sum, err
	}
	defer pool.Close()
	chk := &checker{pg: pool, surreal: cfg.Stores.Surreal(), gidPrefix: cfg.gidPrefix(), intentTable: cfg.IntentTable}
	defer chk.close()
	if _, err := chk.conn(ctx); err != nil {
		return sum, fmt.Errorf("%w (is it up? make db-up)", err)
	}

	coord := &Coordinator{
		Binary: cfg.Txcoord, ConfigPath: cfg.configPath(), Addr: cfg.Listen, LogPath: cfg.logPath(),
		Env: ChildEnv(os.Environ(), SurrealPasswordEnv+"="+cfg.Stores.SurrealPass),
	}
	say("starting coordinator: %s serve --config %s (log %s)", cfg.Txcoord, cfg.configPath(), cfg.logPath())
	if err := coord.Start(); err != nil {
		return sum, err
	}
	defer func() {
		if err := coord.Stop(10 * time.Second); err != nil {
			say("stopping the coordinator: %v", err)
		}
	}()
	took, err := coord.WaitHealthy(ctx, cfg.StartTimeout)
	if err != nil {
		return sum, err
	}
	say("coordinator serving on %s (pid %d) after %.1fs", cfg.Listen, coord.Pid(), took.Seconds())

	c, err := DialClient(ctx, cfg.Listen, client.WithRetryPolicy(restartRetryPolicy(cfg.StartTimeout)))
	if err != nil {
		return sum, err
	}
	defer c.Close()

	// Leftovers of an earlier, interrupted run are resolved by the recovery
	// of the coordinator that just started; wait for it before resetting.
	if pgLeft, sLeft, waited, err := chk.settle(ctx, cfg.SettleTimeout); err != nil || pgLeft+sLeft > 0 {
		return sum, fmt.Errorf("at start, %d prepared PostgreSQL transactions and %d SurrealDB intents with prefix %s were still in doubt after %.0fs (err %v); see %s",
			pgLeft, sLeft, cfg.gidPrefix(), waited.Seconds(), err, cfg.logPath())
	}
	if err := setup(ctx, cfg, pool, chk, c); err != nil {
		return sum, err
	}
	pgStart, sStart, err := chk.balances(ctx)
	if err != nil {
		return sum, err
	}
	if len(pgStart) != cfg.Accounts || len(sStart) != cfg.Accounts {
		return sum, fmt.Errorf("setup: %d PostgreSQL and %d SurrealDB accounts, want %d each", len(pgStart), len(sStart), cfg.Accounts)
	}
	sum.PGBefore, sum.SurrealBefore = total(pgStart), total(sStart)
	sum.TotalBefore = sum.PGBefore + sum.SurrealBefore
	say("%d accounts in PostgreSQL (%s) and %d in SurrealDB (%s:*), %d each; total %d",
		cfg.Accounts, PGTable, cfg.Accounts, SurrealTable, cfg.InitialBalance, sum.TotalBefore)

	transfers := plan(cfg.Seed, cfg.Transfers, cfg.Accounts, cfg.MaxAmount, cfg.InitialBalance, cfg.OverdraftRate)
	for _, t := range transfers {
		if t.ToSurreal {
			sum.ToSurreal++
		}
	}
	sum.Transfers = len(transfers)
	results, kill, elapsed, err := runTransfers(ctx, cfg, coord, c, transfers, say)
	sum.Kill, sum.Elapsed = kill, elapsed
	if err != nil {
		return sum, err
	}

	// Tally; resolve unknown outcomes.
	delta := map[string]int64{} // "pg:<id>" / "surreal:<id>" → committed change
	apply := func(t transfer) {
		if t.ToSurreal {
			delta["pg:"+t.PGID] -= t.Amount
			delta["surreal:"+t.SurrealID] += t.Amount
		} else {
			delta["surreal:"+t.SurrealID] -= t.Amount
			delta["pg:"+t.PGID] += t.Amount
		}
	}
	sum.AbortReasons = map[string]int{}
	var unknown []transferResult
	for _, r := range results {
		switch r.kind {
		case resCommitted:
			sum.Committed++
			apply(r.t)
		case resAborted:
			sum.Aborted++
			sum.AbortReasons[r.reason]++
			if strings.HasPrefix(r.reason, reasonConflict) && r.err != nil && len(sum.ConflictSamples) < 2 {
				sum.ConflictSamples = append(sum.ConflictSamples, r.err.Error())
			}
			if r.reason == reasonError && len(sum.Errors) < maxReportedErrors {
				sum.Errors = append(sum.Errors, fmt.Sprintf("transfer %s (txid %s): %v", r.t, r.txid, r.err))
			}
		case resUnknown:
			unknown = append(unknown, r)
		case resNotRun:
			sum.NotRun++
			if len(sum.Errors) < maxReportedErrors {
				sum.Errors = append(sum.Errors, fmt.Sprintf("transfer %s never began: %v", r.t, r.err))
			}
		}
	}
	if len(unknown) > 0 {
		say("resolving %d unknown outcome(s) with WaitOutcome (at most %s)", len(unknown), cfg.ResolveTimeout)
	}
	rctx, rcancel := context.WithTimeout(ctx, cfg.ResolveTimeout)
	for _, r := range unknown {
		out, err := c.WaitOutcome(rctx, r.txid)
		switch {
		case err == nil && out == pb.Outcome_COMMITTED:
			sum.UnknownResolved++
			sum.UnknownCommitted++
			apply(r.t)
		case err == nil && out == pb.Outcome_ABORTED:
			sum.UnknownResolved++
			sum.UnknownAborted++
		default:
			sum.Unresolved++
			if len(sum.Errors) < maxReportedErrors {
				sum.Errors = append(sum.Errors, fmt.Sprintf("transfer %s (txid %s): commit said %v; WaitOutcome: %s %v", r.t, r.txid, r.err, out, err))
			}
		}
	}
	rcancel()

	say("waiting for recovery to leave nothing in doubt (at most %s)", cfg.SettleTimeout)
	sum.PGPreparedLeft, sum.SurrealIntentsLeft, sum.SettledAfter, err = chk.settle(ctx, cfg.SettleTimeout)
	if err != nil {
		return sum, fmt.Errorf("in-doubt check: %w", err)
	}

	pgEnd, sEnd, err := chk.balances(ctx)
	if err != nil {
		return sum, err
	}
	sum.PGAfter, sum.SurrealAfter = total(pgEnd), total(sEnd)
	sum.TotalAfter = sum.PGAfter + sum.SurrealAfter
	sum.AccountsChecked, sum.AccountsMismatched = compareAccounts(pgStart, sStart, pgEnd, sEnd, delta)
	return sum, nil
}

// compareAccounts checks every account against its start plus its committed
// transfers; it returns how many it checked and the mismatches, sorted.
func compareAccounts(pgStart, sStart, pgEnd, sEnd map[string]int64, delta map[string]int64) (int, []string) {
	var bad []string
	n := 0
	check := func(store string, start, end map[string]int64) {
		for id, s := range start {
			n++
			want := s + delta[store+":"+id]
			got, ok := end[id]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s:%s missing at the end (want %d)", store, id, want))
			case got != want:
				bad = append(bad, fmt.Sprintf("%s:%s have %d want %d", store, id, got, want))
			}
		}
		for id := range end {
			if _, ok := start[id]; !ok {
				bad = append(bad, fmt.Sprintf("%s:%s appeared during the run", store, id))
			}
		}
	}
	check("pg", pgStart, pgEnd)
	check("surreal", sStart, sEnd)
	sort.Strings(bad)
	return n, bad
}

// runTransfers runs the plan on cfg.Workers workers, prints progress, and
// kills and restarts the coordinator once KillAt of the transfers are done.
func runTransfers(ctx context.Context, cfg Config, coord *Coordinator, c *client.Client, plan []transfer,
	say func(string, ...any)) ([]transferResult, *KillEvent, time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &mover{cfg: cfg, c: c}
	var done, committed, aborted, unknown atomic.Int64
	results := make([]transferResult, 0, len(plan))
	var mu sync.Mutex
	work := make(chan transfer)
	t0 := time.Now()
	say("running %d transfers on %d workers; SIGKILL of the coordinator after %d", len(plan), cfg.Workers, killPoint(cfg, len(plan)))

	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				r := m.run(ctx, t)
				switch r.kind {
				case resCommitted:
					committed.Add(1)
				case resAborted:
					aborted.Add(1)
				case resUnknown:
					unknown.Add(1)
				}
				done.Add(1)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}

	// The kill: once the plan is KillAt done, SIGKILL and restart.
	var kill *KillEvent
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		at := killPoint(cfg, len(plan))
		if at == 0 {
			return
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for int(done.Load()) < at {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		k := &KillEvent{DoneAtKill: int(done.Load()), At: time.Since(t0), OldPid: coord.Pid()}
		exit, err := coord.Kill()
		if err != nil {
			cancel(fmt.Errorf("kill the coordinator: %w", err))
			return
		}
		k.ExitAfter = exit
		say("SIGKILL coordinator (pid %d) at %.1fs after %d transfers; process gone after %dms",
			k.OldPid, k.At.Seconds(), k.DoneAtKill, exit.Milliseconds())
		if err := coord.Start(); err != nil {
			cancel(fmt.Errorf("restart the coordinator: %w", err))
			return
		}
		say("restarting coordinator (pid %d); workers keep going (Begin retries while it is down)", coord.Pid())
		if _, err := coord.WaitHealthy(ctx, cfg.StartTimeout); err != nil {
			cancel(fmt.Errorf("the coordinator did not come back: %w", err))
			return
		}
		k.DownFor, k.NewPid = time.Since(t0)-k.At, coord.Pid()
		say("coordinator back serving (pid %d) %.1fs after the kill", k.NewPid, k.DownFor.Seconds())
		kill = k
	}()

	// Progress lines.
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		tick := time.NewTicker(cfg.Progress)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				state := ""
				if !coord.Running() {
					state = " (coordinator down)"
				}
				say("[%5.1fs] done=%d/%d committed=%d aborted=%d unknown=%d%s", time.Since(t0).Seconds(),
					done.Load(), len(plan), committed.Load(), aborted.Load(), unknown.Load(), state)
			}
		}
	}()

feed:
	for _, t := range plan {
		select {
		case work <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(t0)
	<-killDone // the restart finishes (or fails) before the checks
	cancel(nil)
	<-progDone
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return results, kill, elapsed, fmt.Errorf("%w (coordinator log %s)", cause, coord.LogPath)
	}
	say("[%5.1fs] done=%d/%d committed=%d aborted=%d unknown=%d", elapsed.Seconds(),
		done.Load(), len(plan), committed.Load(), aborted.Load(), unknown.Load())
	return results, kill, elapsed, nil
}

// killPoint is the number of finished transfers that triggers the kill (0: none).
func killPoint(cfg Config, n int) int {
	if cfg.KillAt <= 0 {
		return 0
	}
	return max(1, int(float64(n)*cfg.KillAt))
}
