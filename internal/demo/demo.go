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
// not run (a database down, a node not starting, no leader after the kill);
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
	sum.Nodes = cfg.Nodes
	for i := range cfg.Nodes {
		sum.LogPaths = append(sum.LogPaths, cfg.logPath(i))
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

	cl, err := newCluster(ctx, cfg)
	if err != nil {
		return sum, err
	}
	defer func() {
		if err := cl.stop(10 * time.Second); err != nil {
			say("stopping the nodes: %v", err)
		}
	}()
	all := make([]int, cfg.Nodes)
	for i := range all {
		all[i] = i
		say("starting node %s: %s serve --config %s (log %s)", cl.id(i), cfg.Txcoord, cfg.configPath(i), cfg.logPath(i))
		if err := cl.start(i); err != nil {
			return sum, err
		}
	}
	t0 := time.Now()
	li, lst, err := cl.waitLeader(ctx, all, 0, cfg.StartTimeout, "cluster start")
	if err != nil {
		return sum, err
	}
	say("%s leads term %d and serves after %.1fs (%d voter(s); gRPC %s)", cl.id(li), lst.Term, time.Since(t0).Seconds(),
		len(lst.Members), cl.addrs())
	var murls []string
	for i := 0; i < cfg.Nodes; i++ {
		if a := cfg.metricsAddr(i); a != "" {
			murls = append(murls, "http://"+a+"/metrics")
		}
	}
	say("metrics (Prometheus) at %s; readiness at /readyz on the same ports", strings.Join(murls, " "))
	var curls []string
	for i := 0; i < cfg.Nodes; i++ {
		if a := cfg.consoleAddr(i); a != "" {
			curls = append(curls, fmt.Sprintf("%s http://%s/", cl.id(i), a))
		}
	}
	if len(curls) > 0 {
		say("web console (loopback, no auth in the demo) at %s; the leader's shows transactions and in-doubt state", strings.Join(curls, ", "))
	}

	c, err := DialClient(ctx, cl.addrs(), client.WithRetryPolicy(restartRetryPolicy(cfg.StartTimeout)))
	if err != nil {
		return sum, err
	}
	defer c.Close()

	// Leftovers of an earlier, interrupted run are resolved by the recovery
	// of the leader that just started; wait for it before resetting.
	if pgLeft, sLeft, waited, err := chk.settle(ctx, cfg.SettleTimeout); err != nil || pgLeft+sLeft > 0 {
		return sum, fmt.Errorf("at start, %d prepared PostgreSQL transactions and %d SurrealDB intents with prefix %s were still in doubt after %.0fs (err %v)%s",
			pgLeft, sLeft, cfg.gidPrefix(), waited.Seconds(), err, cl.logHint(li))
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
	fo := newFailover(cfg.gidPrefix())
	// The in-doubt watch after the kill has its own checker: it runs next to
	// Run's queries.
	wchk := &checker{pg: pool, surreal: cfg.Stores.Surreal(), gidPrefix: cfg.gidPrefix(), intentTable: cfg.IntentTable}
	defer wchk.close()
	run, err := runTransfers(ctx, cfg, cl, c, fo, wchk, transfers, say)
	defer run.stopWatch()
	sum.Kill, sum.Elapsed = run.kill, run.elapsed
	if err != nil {
		return sum, err
	}

	// What the kill left in doubt: wait (bounded) for the watch to see it
	// cleared; it polls the databases and the transfers' outcomes.
	if run.watch != nil {
		var w InDoubtWatch
		select {
		case w = <-run.watch:
		case <-time.After(cfg.SettleTimeout):
			run.stopWatch()
			w = <-run.watch
		}
		sum.InDoubt = &w
		if w.Cleared {
			say("nothing the kill left is in doubt: %dms after the kill", w.ClearAfter.Milliseconds())
		}
	}
	if sum.Kill != nil {
		sum.Failover, sum.FailoverSeen = fo.failoverTime()
	}

	// Tally. Unknown outcomes were resolved by the workers (WaitOutcome).
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
	inDoubtAtKill := map[string]bool{}
	if sum.InDoubt != nil {
		for _, id := range sum.InDoubt.AtKill.TxIDs {
			inDoubtAtKill[id] = true
		}
	}
	sum.AbortReasons = map[string]int{}
	for _, r := range run.results {
		committed := false
		switch r.kind {
		case resCommitted:
			sum.Committed++
			committed = true
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
			switch r.outcome {
			case pb.Outcome_COMMITTED:
				sum.UnknownResolved++
				sum.UnknownCommitted++
				committed = true
				apply(r.t)
			case pb.Outcome_ABORTED:
				sum.UnknownResolved++
				sum.UnknownAborted++
			default:
				sum.Unresolved++
				if len(sum.Errors) < maxReportedErrors {
					sum.Errors = append(sum.Errors, fmt.Sprintf("transfer %s (txid %s): commit said %v; WaitOutcome: %s %v", r.t, r.txid, r.err, r.outcome, r.werr))
				}
			}
		case resNotRun:
			sum.NotRun++
			if len(sum.Errors) < maxReportedErrors {
				sum.Errors = append(sum.Errors, fmt.Sprintf("transfer %s never began: %v", r.t, r.err))
			}
		}
		if inDoubtAtKill[r.txid] {
			if committed {
				sum.InDoubtCommitted++
			} else {
				sum.InDoubtAborted++
			}
		}
	}
	if n := sum.UnknownResolved + sum.Unresolved; n > 0 {
		say("%d commit(s) answered \"outcome unknown\"; WaitOutcome resolved %d (committed %d, aborted %d)",
			n, sum.UnknownResolved, sum.UnknownCommitted, sum.UnknownAborted)
	}

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

	// Every node's decision store, at one applied index.
	say("comparing the decision stores of %s (StoreDigest at one applied index, at most %s)", cl.names(all), cfg.CatchUpTimeout)
	sum.Digests, err = cl.digests(ctx, cfg.CatchUpTimeout)
	if err != nil {
		return sum, err
	}
	sum.DigestProblem = digestsDiffer(sum.Digests)
	for _, d := range sum.Digests {
		say("  %s applied=%d records=%d sha256=%s", d.Node, d.Applied, d.Records, d.SHA256)
	}
	if li, lst, err := cl.leader(ctx, 5*time.Second); err == nil {
		say("ClusterStatus as the leader %s reports it:", cl.id(li))
		for _, l := range formatStatus(lst) {
			say("  %s", l)
		}
	}
	sum.Leaders = cl.leaderTerms()
	if sum.Kill != nil {
		sum.Elections = electionsAfter(sum.Leaders, sum.Kill.Term)
	}
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

// transferRun is what runTransfers did.
type transferRun struct {
	results []transferResult
	kill    *KillEvent
	elapsed time.Duration
	// watch delivers the in-doubt watch started at the kill (nil: no kill);
	// stopWatch ends it early.
	watch     <-chan InDoubtWatch
	stopWatch context.CancelFunc
}

// runTransfers runs the plan on cfg.Workers workers, prints progress, and
// once KillAt of the transfers are done kills the leader (see killLeader).
func runTransfers(ctx context.Context, cfg Config, cl *cluster, c *client.Client, fo *failover, wchk *checker, plan []transfer,
	say func(string, ...any)) (transferRun, error) {
	var run transferRun
	// The in-doubt watch outlives the transfers: Run waits for it.
	watchCtx, stopWatch := context.WithCancel(ctx)
	run.stopWatch = stopWatch
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m := &mover{cfg: cfg, c: c, onBegin: fo.begun}
	var done, committed, aborted, unknown atomic.Int64
	results := make([]transferResult, 0, len(plan))
	var mu sync.Mutex
	work := make(chan transfer)
	t0 := time.Now()
	what := "the leader"
	if cfg.Nodes == 1 {
		what = "the only node"
	}
	if at := killPoint(cfg, len(plan)); at > 0 {
		say("running %d transfers on %d workers; SIGKILL of %s after %d", len(plan), cfg.Workers, what, at)
	} else {
		say("running %d transfers on %d workers; no kill", len(plan), cfg.Workers)
	}

	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				r := m.run(ctx, t)
				fo.finished(r)
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

	// The kill: once the plan is KillAt done.
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
		k, watch, err := killLeader(ctx, watchCtx, cfg, cl, fo, wchk, int(done.Load()), t0, say)
		run.kill, run.watch = k, watch
		if err != nil {
			cancel(err)
		}
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
				if d := cl.down(); d != "" {
					state = " (down: " + d + ")"
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
	run.elapsed = time.Since(t0)
	<-killDone // the election and the rejoin finish (or fail) before the checks
	cancel(nil)
	<-progDone
	run.results = results
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		stopWatch()
		if run.watch != nil {
			<-run.watch // it uses a checker Run closes
		}
		return run, cause
	}
	say("[%5.1fs] done=%d/%d committed=%d aborted=%d unknown=%d", run.elapsed.Seconds(),
		done.Load(), len(plan), committed.Load(), aborted.Load(), unknown.Load())
	return run, nil
}

// killLeader SIGKILLs the node that leads (found with ClusterStatus), starts
// the in-doubt watch, and then: with one node, restarts it and waits until
// it serves again; with 3 or 5, waits for the survivors to elect a leader
// that serves, restarts the killed node and waits until it has rejoined as
// a follower and caught up. Every wait is bounded; an error names the logs
// to read.
func killLeader(ctx, watchCtx context.Context, cfg Config, cl *cluster, fo *failover, wchk *checker, doneAtKill int, t0 time.Time,
	say func(string, ...any)) (*KillEvent, <-chan InDoubtWatch, error) {
	li, lst, err := cl.leader(ctx, 5*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("find the leader to kill: %w", err)
	}
	k := &KillEvent{Node: cl.id(li), Term: lst.Term, DoneAtKill: doneAtKill, OldPid: cl.pid(li)}
	killAt := time.Now()
	k.At = killAt.Sub(t0)
	fo.kill(killAt)
	exit, err := cl.kill(li)
	if err != nil {
		return k, nil, fmt.Errorf("kill node %s: %w", k.Node, err)
	}
	k.ExitAfter = exit
	say("SIGKILL %s (leader of term %d, pid %d) at %.1fs after %d transfers; process gone after %dms",
		k.Node, k.Term, k.OldPid, k.At.Seconds(), k.DoneAtKill, exit.Milliseconds())

	watch := make(chan InDoubtWatch, 1)
	go func() { watch <- watchInDoubt(watchCtx, wchk, fo, killAt) }()

	restart := func() error {
		if err := cl.start(li); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		k.Restarted, k.RestartedAfter, k.NewPid = true, time.Since(killAt), cl.pid(li)
		return nil
	}
	var survivors []int
	for i := range cl.nodes {
		if i != li {
			survivors = append(survivors, i)
		}
	}
	if len(survivors) == 0 {
		// One node: nobody to elect; restart it and wait until it leads again.
		if err := restart(); err != nil {
			return k, watch, err
		}
		say("restarting %s (pid %d); workers keep going (Begin retries while it is down)", k.Node, k.NewPid)
		survivors = []int{li}
	} else {
		say("waiting for %s to elect a leader (at most %s); workers keep going (the client follows redirects)",
			cl.names(survivors), cfg.ElectionWait)
	}
	wait := cfg.ElectionWait
	if cfg.Nodes == 1 {
		wait = cfg.StartTimeout
	}
	ni, nst, err := cl.waitLeader(ctx, survivors, k.Term, wait, "election after the kill")
	if err != nil {
		return k, watch, err
	}
	k.NewLeader, k.NewTerm, k.ServingAfter = cl.id(ni), nst.Term, time.Since(killAt)
	for _, l := range cl.leaderTerms() {
		if l.Term > k.Term {
			k.ElectedAfter = l.At.Sub(killAt)
			break
		}
	}
	say("election: %s leads term %d (seen leading %dms after the kill; serving, in-doubt transfers recovered, after %dms)",
		k.NewLeader, k.NewTerm, k.ElectedAfter.Milliseconds(), k.ServingAfter.Milliseconds())
	for _, i := range survivors {
		if st, err := cl.status(ctx, i); err == nil {
			say("  %s sees: state %s, term %d, leader %s, commit %d, applied %d", cl.id(i), st.State, st.Term, st.LeaderId,
				st.CommitIndex, st.AppliedIndex)
		}
	}
	if cfg.Nodes == 1 {
		return k, watch, nil
	}

	if err := restart(); err != nil {
		return k, watch, err
	}
	say("restarted %s (pid %d) %dms after the kill; waiting until it follows %s and has caught up (at most %s)",
		k.Node, k.NewPid, k.RestartedAfter.Milliseconds(), k.NewLeader, cfg.CatchUpTimeout)
	cu, err := cl.waitCaughtUp(ctx, li, cfg.CatchUpTimeout)
	if err != nil {
		return k, watch, err
	}
	k.Rejoined = &cu
	say("%s rejoined: follower of %s in term %d; applied index %d ≥ %d (the leader's commit index at its restart; now %d), %dms after its restart",
		cu.Node, cu.Leader, cu.Term, cu.Applied, cu.Target, cu.LeaderCommit, cu.Took.Milliseconds())
	return k, watch, nil
}

// killPoint is the number of finished transfers that triggers the kill (0: none).
func killPoint(cfg Config, n int) int {
	if cfg.KillAt <= 0 {
		return 0
	}
	return max(1, int(float64(n)*cfg.KillAt))
}
