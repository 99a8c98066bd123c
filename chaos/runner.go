package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// Options configure a chaos run. DefaultOptions gives the 10-minute run.
type Options struct {
	Repo       string        // repository root: scripts/, cmd/txcoord
	WorkDir    string        // everything the run writes: databases, nodes, binary, report
	Duration   time.Duration // workload and fault window
	Seed       uint64
	ReportPath string // JSON report; the history goes next to it (.history.jsonl)
	Binary     string // a prebuilt txcoord; empty: build one from Repo

	PGPort      int
	SurrealPort int

	Nemeses []string // fault kinds to schedule (default AllNemeses)
	Mix     Mix
	HoldMin time.Duration
	HoldMax time.Duration
	GapMin  time.Duration
	GapMax  time.Duration

	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration

	RecoveryBound time.Duration // after a heal, how long the cluster may take to commit again
	ResolveBound  time.Duration // after the run, how long GetTransaction may stay UNKNOWN for a txid
	SettleBound   time.Duration // after the run, how long in-doubt branches may take to resolve

	// Inject breaks atomicity on purpose to prove the checkers work:
	// "rogue-rollback" rolls back prepared PostgreSQL branches behind the
	// coordinator's back, as a coordinator that skipped its log would.
	Inject string

	// OnePhase lets transfers stay inside one participant (one-phase
	// commits); false makes every transfer cross two participants.
	OnePhase bool

	KeepDatabases bool      // leave the databases running at the end
	Out           io.Writer // progress and summary
	Command       string    // how to reproduce this run (printed on failure)
}

// DefaultOptions is the 10-minute run.
func DefaultOptions() Options {
	return Options{
		WorkDir: ".data/chaos", Duration: 10 * time.Minute, PGPort: 55441, SurrealPort: 58041,
		Nemeses: AllNemeses, Mix: Mix{Transfer: 4, Append: 3, Idem: 2}, OnePhase: true,
		HoldMin: 800 * time.Millisecond, HoldMax: 4 * time.Second, GapMin: 300 * time.Millisecond, GapMax: 1500 * time.Millisecond,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		RecoveryBound: 30 * time.Second, ResolveBound: 30 * time.Second, SettleBound: 60 * time.Second, Out: os.Stdout,
	}
}

// ShortOptions is the run `make chaos-short` uses: under three minutes in
// all, at least 20 faults.
func ShortOptions() Options {
	o := DefaultOptions()
	o.Duration = 100 * time.Second
	o.HoldMin, o.HoldMax = 500*time.Millisecond, 2*time.Second
	o.GapMin, o.GapMax = 200*time.Millisecond, 600*time.Millisecond
	o.ResolveBound, o.SettleBound = 15*time.Second, 30*time.Second
	return o
}

// Runner is one chaos run. Build it with Run.
type Runner struct {
	opts    Options
	out     io.Writer
	dbs     *Databases
	stores  *Stores
	cluster *Cluster
	admin   *client.Client // admin calls and GetTransaction; never replaced
	prober  *client.Client // probe transactions; replaced when its node hangs (used by one goroutine at a time)
	hist    *History
	sched   *Schedule
	start   time.Time

	finishing atomic.Bool
	mu        sync.Mutex
	faults    []Fault
	anomalies []Anomaly
	fired     map[string]int // failpoint → times it killed a node
	exits     []string       // unexpected exits that were not failpoints
	injected  int
	leaders   leaderTrack
}

type leaderTrack struct {
	mu        sync.Mutex
	last      string
	lastTerm  uint64
	firstTerm uint64
	changes   int
}

func (r *Runner) logf(format string, args ...any) {
	fmt.Fprintf(r.out, "[%7.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *Runner) anomaly(a Anomaly) {
	r.mu.Lock()
	r.anomalies = append(r.anomalies, a)
	r.mu.Unlock()
	r.logf("ANOMALY %s", a)
}

// Run executes a chaos run: databases, cluster, workloads under a seeded
// fault schedule, heal, recovery, checks, report. It cleans up every
// process it started, also on error or when ctx is cancelled (Ctrl-C). The
// report is returned whenever the run got as far as checking.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if len(o.Nemeses) == 0 {
		o.Nemeses = AllNemeses
	}
	r := &Runner{opts: o, out: o.Out, start: time.Now(), fired: map[string]int{}}
	work, err := filepath.Abs(o.WorkDir)
	if err != nil {
		return nil, err
	}
	// One run per work directory: a second one would drop the first one's
	// tables and stop its databases.
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(work, ".run.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, fmt.Errorf("another chaos run holds %s (use another --work-dir and ports to run two at once): %w", lock.Name(), err)
	}
	// The previous run's logs stay in run.prev (one generation).
	runDir := filepath.Join(work, "run")
	if err := os.RemoveAll(runDir + ".prev"); err != nil {
		return nil, err
	}
	if err := os.Rename(runDir, runDir+".prev"); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	dbLog, err := os.Create(filepath.Join(runDir, "databases.log"))
	if err != nil {
		return nil, err
	}
	defer dbLog.Close()
	r.dbs = &Databases{Repo: o.Repo, DataDir: work, PGPort: o.PGPort, SurrealPort: o.SurrealPort, Log: dbLog}

	defer r.teardown()

	bin := o.Binary
	if bin == "" {
		bin = filepath.Join(work, "bin", "txcoord")
		r.logf("building txcoord")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/txcoord")
		cmd.Dir = o.Repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/txcoord: %w\n%s", err, out)
		}
	}
	r.logf("starting PostgreSQL on %d and SurrealDB on %d (data under %s)", o.PGPort, o.SurrealPort, work)
	if err := r.dbs.Up(ctx); err != nil {
		return nil, err
	}
	if r.stores, err = OpenStores(ctx, r.dbs.PGAddr(), r.dbs.SurrealAddr()); err != nil {
		return nil, err
	}
	spec, lists := bankSpec(), listIDs()
	if err := r.stores.Setup(ctx, spec, lists); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	r.cluster, err = NewCluster(bin, runDir, ClusterOptions{Size: 3, HeartbeatTimeout: o.HeartbeatTimeout,
		ElectionTimeout: o.ElectionTimeout, LogLevel: "info",
		Coordinator: map[string]any{"recovery_interval": "1s", "prepare_timeout": "3s", "default_timeout": "10s"}},
		r.dbs.PGAddr(), r.dbs.SurrealAddr())
	if err != nil {
		return nil, err
	}
	r.cluster.OnExit = r.onExit
	if r.admin, err = dialCluster(ctx, r.cluster.Addrs(), 0); err != nil {
		return nil, err
	}
	if r.prober, err = dialCluster(ctx, r.cluster.Addrs(), 0); err != nil {
		return nil, err
	}
	for _, n := range r.cluster.Nodes {
		if err := r.cluster.Start(n, nil); err != nil {
			return nil, err
		}
	}
	if _, err := r.awaitCommit(ctx, 60*time.Second); err != nil {
		var why []string
		for _, n := range r.cluster.Nodes {
			if n.Deaths() > 0 {
				why = append(why, fmt.Sprintf("%s exited %d times; its log ends:\n%s", n.ID, n.Deaths(), n.LogTail(6)))
			}
		}
		return nil, fmt.Errorf("the cluster never committed a first transaction: %w (logs: %s)\n%s", err, runDir, strings.Join(why, "\n"))
	}
	r.logf("cluster up: %s; seed %d; %s of workload under faults", r.cluster.Addrs(), o.Seed, o.Duration)

	// The workload and fault window.
	r.hist = NewHistory()
	wl := &Workloads{Hist: r.hist, Addrs: strings.Split(r.cluster.Addrs(), ","), Spec: spec, Lists: lists, Seed: o.Seed,
		OpTimeout: 5 * time.Second, RunTry: 2 * time.Second, RunTries: 6, CrossOnly: !o.OnePhase}
	wctx, stopWork := context.WithTimeout(ctx, o.Duration)
	defer stopWork()
	waitWork := wl.Run(wctx, o.Mix)
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { defer bg.Done(); r.watchLeaders(wctx) }()
	if o.Inject != "" {
		bg.Add(1)
		go func() { defer bg.Done(); r.injectBug(wctx, o.Inject) }()
	}
	r.sched = NewSchedule(o.Seed, o.Nemeses, o.HoldMin, o.HoldMax, o.GapMin, o.GapMax)
	windowStart := time.Now()
	r.faultLoop(wctx, windowStart.Add(o.Duration))
	<-wctx.Done()
	waitWork()
	bg.Wait()
	window := time.Since(windowStart)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	r.logf("workload stopped after %.0fs: %d operations; healing everything", window.Seconds(), len(r.hist.Events())/2)

	// Heal and recover.
	if err := r.healAll(ctx); err != nil {
		r.logf("heal: %v", err)
	}
	if took, err := r.awaitCommit(ctx, o.RecoveryBound*2); err != nil {
		r.anomaly(Anomaly{Kind: ANoRecovery, Detail: fmt.Sprintf("after the final heal: %v", err)})
	} else {
		r.logf("final heal: committing again after %d ms", took.Milliseconds())
	}
	if n, err := wl.RetryUnknownIdem(ctx, Operations(r.hist.Events())); n > 0 || err != nil {
		r.logf("retried %d idem operations left unknown, with their keys (err %v)", n, err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	rep := r.check(ctx, spec, window)
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return rep, nil
}

func bankSpec() BankSpec {
	var accts []string
	for _, p := range []struct{ part, prefix string }{{PartPG, "a"}, {PartPGB, "b"}, {PartSurreal, "s"}} {
		for i := 0; i < 4; i++ {
			accts = append(accts, fmt.Sprintf("%s/%s%d", p.part, p.prefix, i))
		}
	}
	return BankSpec{Accounts: accts, Initial: 1000}
}

func listIDs() []string {
	var out []string
	for i := 0; i < 8; i++ {
		out = append(out, fmt.Sprintf("l%d", i))
	}
	return out
}

// faultLoop injects faults one after another until end (leaving room for
// the last one to heal).
func (r *Runner) faultLoop(ctx context.Context, end time.Time) {
	sleepCtx(ctx, 2*time.Second) // a moment of fault-free load first
	for seq := 1; ctx.Err() == nil && time.Until(end) > r.opts.HoldMax+2*time.Second; seq++ {
		kind, rng := r.sched.Next()
		f := Fault{Seq: seq, Kind: kind, StartMs: time.Since(r.start).Milliseconds(), RecoveryMs: -1}
		err := r.inject(ctx, kind, rng, &f)
		f.HealMs = time.Since(r.start).Milliseconds()
		if err != nil {
			f.Error = err.Error()
		}
		took, rerr := r.awaitCommit(context.WithoutCancel(ctx), r.opts.RecoveryBound)
		if rerr == nil {
			f.RecoveryMs = took.Milliseconds()
		} else {
			r.anomaly(Anomaly{Kind: ANoRecovery, Detail: fmt.Sprintf("fault #%d %s %s: %v", seq, kind, f.Target, rerr)})
		}
		r.mu.Lock()
		r.faults = append(r.faults, f)
		r.mu.Unlock()
		msg := fmt.Sprintf("fault #%d %-22s %-28s %s; recovered in %d ms", seq, kind, f.Target, f.Detail, f.RecoveryMs)
		if f.Error != "" {
			msg += " (error: " + f.Error + ")"
		}
		r.logf("%s", msg)
		sleepCtx(ctx, r.sched.Gap())
	}
}

// awaitCommit runs probe transactions until one commits, within bound, and
// returns how long that took.
func (r *Runner) awaitCommit(ctx context.Context, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(bound)
	var last error
	for i := int64(1); ; i++ {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := Probe(pctx, r.prober, start.UnixNano()+i)
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		last = err
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no probe committed within %s (last error: %v)", bound, last)
		}
		if stuck(err) { // a hung or dead node: start again at another one
			if cl, derr := dialCluster(ctx, r.cluster.Addrs(), int(i)); derr == nil {
				r.prober.Close()
				r.prober = cl
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialCluster makes a client for the comma-separated addrs, starting at
// the k-th.
func dialCluster(ctx context.Context, addrs string, k int) (*client.Client, error) {
	as := strings.Split(addrs, ",")
	k %= len(as)
	return client.Dial(ctx, strings.Join(append(as[k:], as[:k]...), ","),
		client.WithRetryPolicy(client.RetryPolicy{Attempts: 6, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}))
}

// onExit handles a coordinator exit the runner did not cause: a failpoint
// firing (expected, counted), a start-up failure (a database was down; the
// node is started again) or a crash (an anomaly).
func (r *Runner) onExit(e Exit) {
	if r.finishing.Load() {
		return
	}
	switch {
	case e.Failpoint != "":
		r.mu.Lock()
		r.fired[e.Failpoint]++
		r.mu.Unlock()
		r.logf("failpoint %s killed %s", e.Failpoint, e.Node.ID)
	case strings.Contains(e.LogTail, "panic:") || strings.Contains(e.LogTail, "fatal error:") || strings.Contains(e.Status, "signal"):
		r.anomaly(Anomaly{Kind: ACrash, Detail: fmt.Sprintf("%s exited (%s); log %s:\n%s", e.Node.ID, e.Status, e.Node.LogPath(), e.LogTail)})
	default:
		r.mu.Lock()
		r.exits = append(r.exits, fmt.Sprintf("%s: %s: %s", e.Node.ID, e.Status, lastLine(e.LogTail)))
		r.mu.Unlock()
		r.logf("%s exited (%s): %s; starting it again", e.Node.ID, e.Status, lastLine(e.LogTail))
	}
	go func() {
		time.Sleep(e.Node.RestartDelay())
		if !r.finishing.Load() && !e.Node.Running() {
			if err := r.cluster.Start(e.Node, nil); err != nil {
				r.logf("restart %s: %v", e.Node.ID, err)
			}
		}
	}()
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// watchLeaders counts leader changes while the workload runs.
func (r *Runner) watchLeaders(ctx context.Context) {
	for ctx.Err() == nil {
		if n, term, _ := r.cluster.Leader(ctx, r.admin); n != nil {
			t := &r.leaders
			t.mu.Lock()
			if t.firstTerm == 0 {
				t.firstTerm = term
			}
			if term > t.lastTerm || (term == t.lastTerm && n.ID != t.last) {
				if t.last != "" {
					t.changes++
				}
				t.last, t.lastTerm = n.ID, term
			}
			t.mu.Unlock()
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

// injectBug breaks atomicity on purpose (Options.Inject).
func (r *Runner) injectBug(ctx context.Context, kind string) {
	for ctx.Err() == nil {
		switch kind {
		case "rogue-rollback":
			if g, err := r.stores.RogueRollback(ctx, GIDPrefix); err == nil && g != "" {
				r.mu.Lock()
				r.injected++
				r.mu.Unlock()
			}
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// healAll lifts every fault: proxies healed, paused nodes continued, dead
// nodes and databases started.
func (r *Runner) healAll(ctx context.Context) error {
	for _, p := range r.cluster.Proxies() {
		p.Heal()
	}
	var errs []error
	if err := r.dbs.Up(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.cluster.Nodes {
		if n.Paused() {
			errs = append(errs, n.Resume())
		}
		if !n.Running() {
			errs = append(errs, r.cluster.Start(n, nil))
		} else if len(n.Armed()) > 0 {
			n.Stop()
			errs = append(errs, r.cluster.Start(n, nil))
		}
	}
	return errors.Join(errs...)
}

// teardown stops every process the run started.
func (r *Runner) teardown() {
	r.finishing.Store(true)
	if r.admin != nil {
		r.admin.Close()
	}
	if r.prober != nil {
		r.prober.Close()
	}
	if r.cluster != nil {
		var wg sync.WaitGroup
		for _, n := range r.cluster.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.Stop() }()
		}
		wg.Wait()
		r.cluster.Close()
	}
	if r.stores != nil {
		r.stores.Close()
	}
	if r.dbs != nil && !r.opts.KeepDatabases {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := r.dbs.Down(ctx); err != nil {
			fmt.Fprintf(r.out, "chaos: stopping the databases: %v\n", err)
		}
	}
}

// check resolves what the history left unknown, waits for in-doubt
// branches to settle, compares the nodes' decision stores, reads the final
// state and runs every checker.
func (r *Runner) check(ctx context.Context, spec BankSpec, window time.Duration) *Report {
	ops := Operations(r.hist.Events())
	resolved, outcomes := r.resolve(ctx, ops)
	r.logf("asked the coordinator about %d transaction ids of %d operations: unknown ones resolved %d committed, %d aborted, %d not within %s",
		resolved.Asked, len(ops), resolved.UnknownCommitted, resolved.UnknownAborted, resolved.UnknownUnresolved, r.opts.ResolveBound)

	inDoubt := r.settle(ctx, outcomes)
	r.logf("in doubt after settling: %d (pg prepared %d, surreal intents %d, locks %d, log not done %d, unreadable %d)",
		inDoubt.Total(), inDoubt.PGPrepared, inDoubt.SurrealIntents, inDoubt.SurrealLocks, inDoubt.LogNotDone, inDoubt.Unreadable)
	digests := r.digests(ctx)

	var anomalies []Anomaly
	obs, err := r.stores.Observe(ctx)
	if err != nil {
		anomalies = append(anomalies, Anomaly{Kind: "check-failed", Detail: "reading the final state: " + err.Error()})
	} else {
		anomalies = append(anomalies, CheckTags(ops, obs)...)
		anomalies = append(anomalies, CheckBank(spec, obs)...)
		anomalies = append(anomalies, CheckListOrder(obs)...)
	}
	anomalies = append(anomalies, CheckDigests(digests)...)
	r.mu.Lock()
	anomalies = append(r.anomalies, anomalies...)
	faults := append([]Fault(nil), r.faults...)
	fired := map[string]int{}
	for k, v := range r.fired {
		fired[k] = v
	}
	exits := append([]string(nil), r.exits...)
	injected := r.injected
	r.mu.Unlock()
	r.leaders.mu.Lock()
	elections := Elections{LeaderChanges: r.leaders.changes, FirstTerm: r.leaders.firstTerm, LastTerm: r.leaders.lastTerm}
	r.leaders.mu.Unlock()

	rep := newReport(r.opts, ops, faults, anomalies, inDoubt, digests, elections, resolved, window)
	rep.FailpointsFired = fired
	rep.UnexpectedExits = exits
	rep.Injected = injected
	rep.LogsDir = filepath.Dir(r.cluster.Nodes[0].dir)
	if r.opts.ReportPath != "" {
		hp := strings.TrimSuffix(r.opts.ReportPath, ".json") + ".history.jsonl"
		if err := os.MkdirAll(filepath.Dir(r.opts.ReportPath), 0o755); err == nil {
			if err := r.hist.WriteJSONL(hp); err == nil {
				rep.HistoryPath = hp
			}
		}
	}
	return rep
}

// ResolveStats counts what GetTransaction said after the run.
type ResolveStats struct {
	Asked             int `json:"asked"`
	UnknownCommitted  int `json:"unknown_committed"`
	UnknownAborted    int `json:"unknown_aborted"`
	UnknownUnresolved int `json:"unknown_unresolved"`
	// StillUnknown names up to 50 txids GetTransaction did not resolve
	// within the bound (with the operation).
	StillUnknown []string `json:"still_unknown,omitempty"`
}

// resolve asks the coordinator for the outcome of every transaction id in
// the history and sets each operation's Status (waiting, within a bound,
// for the ones it does not know yet).
func (r *Runner) resolve(ctx context.Context, ops []Operation) (ResolveStats, map[string]Outcome) {
	var ids []string
	for _, o := range ops {
		ids = append(ids, o.TxIDs()...)
	}
	outcomes := make(map[string]Outcome, len(ids))
	var mu sync.Mutex
	jobs := make(chan string)
	var wg sync.WaitGroup
	deadline := time.Now().Add(r.opts.ResolveBound)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				o := r.outcome(ctx, id, deadline)
				mu.Lock()
				outcomes[id] = o
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		jobs <- id
	}
	close(jobs)
	wg.Wait()
	st := ResolveStats{Asked: len(ids)}
	for i := range ops {
		o := &ops[i]
		ids := o.TxIDs()
		if len(ids) == 0 {
			continue
		}
		committed, aborted := false, 0
		for _, id := range ids {
			switch outcomes[id] {
			case OutcomeCommitted:
				committed = true
			case OutcomeAborted:
				aborted++
			}
		}
		// An attempt with no txid (the call failed in transport) may have
		// committed under an id we never learnt.
		blind := false
		for _, a := range o.Value.Attempts {
			blind = blind || (a.TxID == "" && a.Result == Unknown)
		}
		switch {
		case committed:
			o.Status = OutcomeCommitted
		case aborted == len(ids) && !blind:
			o.Status = OutcomeAborted
		default:
			o.Status = OutcomeUnknown
		}
		if o.Type == Unknown {
			switch o.Status {
			case OutcomeCommitted:
				st.UnknownCommitted++
			case OutcomeAborted:
				st.UnknownAborted++
			default:
				st.UnknownUnresolved++
				if len(st.StillUnknown) < 50 {
					listed := false
					for _, id := range ids {
						if outcomes[id] == OutcomeUnknown {
							st.StillUnknown = append(st.StillUnknown, fmt.Sprintf("%s (op %d %s %s)", id, o.ID, o.F, o.Value.Tag))
							listed = true
						}
					}
					if !listed && blind {
						st.StillUnknown = append(st.StillUnknown, fmt.Sprintf("op %d %s %s: an attempt failed in transport before its txid was known", o.ID, o.F, o.Value.Tag))
					}
				}
			}
		}
	}
	return st, outcomes
}

// outcome asks for one txid until the answer is COMMITTED or ABORTED or
// the deadline passes.
func (r *Runner) outcome(ctx context.Context, txid string, deadline time.Time) Outcome {
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		t, err := r.admin.GetTransaction(cctx, txid)
		cancel()
		if err == nil {
			switch t.Outcome {
			case pb.Outcome_COMMITTED:
				return OutcomeCommitted
			case pb.Outcome_ABORTED:
				return OutcomeAborted
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return OutcomeUnknown
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settle waits, within SettleBound, until nothing of ours is in doubt:
// no prepared PostgreSQL branch, no SurrealDB intent or lock, no commit
// decision in the log that is not finished (of the txids GetTransaction
// said COMMITTED).
func (r *Runner) settle(ctx context.Context, outcomes map[string]Outcome) InDoubt {
	var committed []string
	for id, o := range outcomes {
		if o == OutcomeCommitted {
			committed = append(committed, id)
		}
	}
	sort.Strings(committed)
	deadline := time.Now().Add(r.opts.SettleBound)
	pending := committed
	for {
		var d InDoubt
		gids, err := r.stores.PreparedGIDs(ctx, GIDPrefix)
		if err != nil {
			d.Unreadable++
			d.Samples = append(d.Samples, "pg: "+err.Error())
		}
		d.PGPrepared = len(gids)
		intents, locks, err := r.stores.SurrealInDoubt(ctx, GIDPrefix)
		if err != nil {
			d.Unreadable++
			d.Samples = append(d.Samples, "surreal: "+err.Error())
		}
		d.SurrealIntents, d.SurrealLocks = len(intents), len(locks)
		var still []string
		for _, id := range pending {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			t, err := r.admin.GetTransaction(cctx, id)
			cancel()
			if err != nil || (t.State != pb.TransactionState_COMMITTED_STATE && t.State != pb.TransactionState_ABORTED_STATE) {
				still = append(still, id)
			}
		}
		pending = still
		d.LogNotDone = len(pending)
		for _, s := range [][]string{gids, intents, locks, pending} {
			for i := 0; i < len(s) && i < 5; i++ {
				d.Samples = append(d.Samples, s[i])
			}
		}
		if d.Total() == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return d
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// digests reads every node's decision-store digest, waiting (bounded) until
// all report the same applied index.
func (r *Runner) digests(ctx context.Context) []Digest {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ds []Digest
		same := true
		for _, n := range r.cluster.Nodes {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			d, err := r.admin.StoreDigest(cctx, n.GRPC)
			cancel()
			dg := Digest{Node: n.ID}
			if err != nil {
				dg.Err = err.Error()
			} else {
				dg.Applied, dg.SHA256, dg.Records = d.AppliedIndex, d.Sha256, d.Records
			}
			if err != nil || (len(ds) > 0 && dg.Applied != ds[0].Applied) {
				same = false
			}
			ds = append(ds, dg)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i].Node < ds[j].Node })
		if same || time.Now().After(deadline) || ctx.Err() != nil {
			return ds
		}
		time.Sleep(250 * time.Millisecond)
	}
}
