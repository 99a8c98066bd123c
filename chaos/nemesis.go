package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/txcoord/txcoord/coordinator"
)

// Fault kinds. Each is injected, held, then healed; docs: chaos/README.md.
const (
	NKillLeader        = "kill-leader"        // SIGKILL the leader, restart it after the hold
	NKillFollower      = "kill-follower"      // SIGKILL a follower, restart it after the hold
	NPauseLeader       = "pause-leader"       // SIGSTOP the leader, SIGCONT after the hold
	NPartLeader        = "partition-leader"   // the leader cut off from both followers
	NPartMinority      = "partition-minority" // one follower cut off (the leader keeps its majority)
	NPartMajority      = "partition-majority" // random halves: a random majority of 2 | the other node
	NPartRing          = "partition-ring"     // majorities ring: leader and one follower cannot talk, both reach the third
	NPartOneWay        = "partition-oneway"   // the leader cannot open connections to the followers; they can to it
	NLinkBlackhole     = "link-blackhole"     // the leader's link to one participant stalls
	NLinkDelay         = "link-delay"         // the leader's links to every participant get latency
	NLinkReset         = "link-reset"         // every node's connections to one participant reset, repeatedly
	NResetCommitPrep   = "reset-commit-prepared"
	NResetPrepare      = "reset-prepare"
	NResetCommit       = "reset-commit"      // the same for a one-phase COMMIT
	NRestartPostgres   = "restart-postgres"  // immediate-mode stop (crash) while branches are prepared, then start
	NRestartSurreal    = "restart-surrealdb" // SIGKILL the SurrealDB server while intents exist, then start
	NFailpoint         = "failpoint"         // a follower restarted with a 2PC failpoint armed (kill@P), made leader
	NFailpointFiredPfx = "failpoint-fired:"  // recorded when a failpoint kills a node (not scheduled)
)

// AllNemeses lists every schedulable fault kind.
var AllNemeses = []string{
	NKillLeader, NKillFollower, NPauseLeader,
	NPartLeader, NPartMinority, NPartMajority, NPartRing, NPartOneWay,
	NLinkBlackhole, NLinkDelay, NLinkReset, NResetCommitPrep, NResetPrepare, NResetCommit,
	NRestartPostgres, NRestartSurreal, NFailpoint,
}

// Fault is one injected fault, as the report lists it.
type Fault struct {
	Seq        int    `json:"seq"`
	Kind       string `json:"kind"`
	Target     string `json:"target,omitempty"`
	Detail     string `json:"detail,omitempty"`
	StartMs    int64  `json:"start_ms"`
	HealMs     int64  `json:"heal_ms"`
	RecoveryMs int64  `json:"recovery_ms"` // heal → first committed probe; -1: none within the bound
	Error      string `json:"error,omitempty"`
}

// Schedule draws the run's faults from its seed: kinds in shuffled rounds
// (every kind once per round, so a short run still sees many kinds) and
// every duration and choice from the same generator. Targets named by role
// (leader, follower) are resolved when the fault starts.
type Schedule struct {
	rng     *rand.Rand
	kinds   []string
	round   []string
	HoldMin time.Duration
	HoldMax time.Duration
	GapMin  time.Duration
	GapMax  time.Duration
}

// NewSchedule makes the schedule of seed over kinds.
func NewSchedule(seed uint64, kinds []string, holdMin, holdMax, gapMin, gapMax time.Duration) *Schedule {
	return &Schedule{rng: rand.New(rand.NewPCG(seed, 0x6e656d65)), kinds: kinds,
		HoldMin: holdMin, HoldMax: holdMax, GapMin: gapMin, GapMax: gapMax}
}

// Next returns the next fault's kind and a generator for its choices.
func (s *Schedule) Next() (string, *rand.Rand) {
	if len(s.round) == 0 {
		s.round = append([]string(nil), s.kinds...)
		s.rng.Shuffle(len(s.round), func(i, j int) { s.round[i], s.round[j] = s.round[j], s.round[i] })
	}
	k := s.round[0]
	s.round = s.round[1:]
	return k, rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64()))
}

// Gap is the pause before the next fault.
func (s *Schedule) Gap() time.Duration { return between(s.rng, s.GapMin, s.GapMax) }

func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// inject runs one fault: inject, hold, heal. It returns once healed (the
// caller measures recovery). Errors are recorded in the fault, not fatal.
func (r *Runner) inject(ctx context.Context, kind string, rng *rand.Rand, f *Fault) error {
	hold := between(rng, r.sched.HoldMin, r.sched.HoldMax)
	leader := func() (*Node, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if n, _, _ := r.cluster.Leader(ctx, r.admin); n != nil {
				return n, nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("no leader within 10s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	pick := func(ns []*Node) *Node { return ns[rng.IntN(len(ns))] }
	parts := []string{PartPG, PartPGB, PartSurreal}

	switch kind {
	case NKillLeader, NKillFollower:
		l, err := leader()
		if err != nil {
			return err
		}
		n := l
		if kind == NKillFollower {
			n = pick(r.cluster.Followers(l))
		}
		f.Target, f.Detail = n.ID, fmt.Sprintf("down %s", hold.Round(time.Millisecond))
		n.Kill()
		sleepCtx(ctx, hold)
		return r.cluster.Start(n, nil)

	case NPauseLeader:
		l, err := leader()
		if err != nil {
			return err
		}
		hold = max(hold, 2*r.opts.ElectionTimeout) // long enough for an election behind its back
		f.Target, f.Detail = l.ID, fmt.Sprintf("stopped %s", hold.Round(time.Millisecond))
		if err := l.Pause(); err != nil {
			return err
		}
		sleepCtx(ctx, hold)
		return l.Resume()

	case NPartLeader, NPartMinority, NPartMajority, NPartRing, NPartOneWay:
		l, err := leader()
		if err != nil {
			return err
		}
		fs := r.cluster.Followers(l)
		var cuts [][2]*Node // directed: connections opened by [0] to [1] are cut
		both := func(a, b *Node) { cuts = append(cuts, [2]*Node{a, b}, [2]*Node{b, a}) }
		isolate := func(n *Node) {
			for _, o := range r.cluster.Nodes {
				if o != n {
					both(n, o)
				}
			}
		}
		switch kind {
		case NPartLeader:
			isolate(l)
			f.Target = l.ID + " | " + fs[0].ID + " " + fs[1].ID
		case NPartMinority:
			n := pick(fs)
			isolate(n)
			f.Target = n.ID + " | others"
		case NPartMajority:
			ns := append([]*Node(nil), r.cluster.Nodes...)
			rng.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
			isolate(ns[len(ns)-1])
			f.Target = fmt.Sprintf("%s %s | %s (leader %s)", ns[0].ID, ns[1].ID, ns[2].ID, l.ID)
		case NPartRing:
			n := pick(fs)
			both(l, n)
			f.Target = fmt.Sprintf("%s x %s (both reach the third)", l.ID, n.ID)
		case NPartOneWay:
			for _, o := range fs {
				cuts = append(cuts, [2]*Node{l, o})
			}
			f.Target = l.ID + " -> followers cut"
		}
		for _, c := range cuts {
			c[1].Raft.SetRule(c[0].ID, Rule{Blackhole: true})
		}
		f.Detail = fmt.Sprintf("held %s", hold.Round(time.Millisecond))
		sleepCtx(ctx, hold)
		for _, n := range r.cluster.Nodes {
			n.Raft.Heal()
		}
		return nil

	case NLinkBlackhole:
		l, err := leader()
		if err != nil {
			return err
		}
		p := parts[rng.IntN(len(parts))]
		f.Target, f.Detail = l.ID+"->"+p, fmt.Sprintf("stalled %s", hold.Round(time.Millisecond))
		l.Parts[p].SetRule("", Rule{Blackhole: true})
		sleepCtx(ctx, hold)
		l.Parts[p].Heal()
		return nil

	case NLinkDelay:
		l, err := leader()
		if err != nil {
			return err
		}
		d := between(rng, 20*time.Millisecond, 200*time.Millisecond)
		f.Target, f.Detail = l.ID+"->all", fmt.Sprintf("+%s per chunk for %s", d.Round(time.Millisecond), hold.Round(time.Millisecond))
		for _, p := range parts {
			l.Parts[p].SetRule("", Rule{Delay: d})
		}
		sleepCtx(ctx, hold)
		for _, p := range parts {
			l.Parts[p].Heal()
		}
		return nil

	case NLinkReset:
		p := parts[rng.IntN(len(parts))]
		every := between(rng, 150*time.Millisecond, 500*time.Millisecond)
		resets := 0
		end := time.Now().Add(hold)
		for time.Now().Before(end) && ctx.Err() == nil {
			for _, n := range r.cluster.Nodes {
				resets += n.Parts[p].Reset("")
			}
			sleepCtx(ctx, every)
		}
		f.Target, f.Detail = "all->"+p, fmt.Sprintf("%d connections reset every %s for %s", resets, every.Round(time.Millisecond), hold.Round(time.Millisecond))
		return nil

	case NResetCommitPrep, NResetPrepare, NResetCommit:
		pattern := "COMMIT PREPARED"
		switch kind {
		case NResetPrepare:
			pattern = "PREPARE TRANSACTION"
		case NResetCommit:
			// The one-phase COMMIT, as a simple query or in a batch's Parse
			// message: the text ends with the protocol's NUL.
			pattern = "COMMIT\x00"
		}
		after := rng.IntN(2) == 0
		n := 1 + rng.IntN(3)
		var proxies []*Proxy
		before := 0
		for _, node := range r.cluster.Nodes {
			for _, p := range []string{PartPG, PartPGB} {
				proxies = append(proxies, node.Parts[p])
				before += node.Parts[p].Stats().Triggered
			}
		}
		for _, p := range proxies {
			p.ArmReset(pattern, after, n)
		}
		// Hold until one fired (phase two needs traffic) or twice the hold.
		end := time.Now().Add(2 * hold)
		fired := 0
		for time.Now().Before(end) && ctx.Err() == nil {
			fired = -before
			for _, p := range proxies {
				fired += p.Stats().Triggered
			}
			if fired >= n && time.Now().After(end.Add(-hold)) {
				break
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
		for _, p := range proxies {
			p.Heal()
		}
		when := "before forwarding (never executed)"
		if after {
			when = "after forwarding (executed, answer lost)"
		}
		f.Target, f.Detail = "all->pg,pg-b", fmt.Sprintf("reset on %q %s: fired %d", strings.TrimSuffix(pattern, "\x00"), when, fired)
		return nil

	case NRestartPostgres:
		prepared := r.waitUntil(ctx, 2*time.Second, func() int {
			g, _ := r.stores.PreparedGIDs(ctx, GIDPrefix)
			return len(g)
		})
		f.Target, f.Detail = "postgresql", fmt.Sprintf("immediate stop with %d of our branches prepared, down %s", prepared, hold.Round(time.Millisecond))
		if err := r.dbs.PGCrash(ctx); err != nil {
			return err
		}
		sleepCtx(ctx, hold)
		return r.dbs.PGStart(context.WithoutCancel(ctx))

	case NRestartSurreal:
		intents := r.waitUntil(ctx, 2*time.Second, func() int {
			i, _, _ := r.stores.SurrealInDoubt(ctx, GIDPrefix)
			return len(i)
		})
		f.Target, f.Detail = "surrealdb", fmt.Sprintf("SIGKILL with %d of our intents, down %s", intents, hold.Round(time.Millisecond))
		if err := r.dbs.SurrealKill(); err != nil {
			return err
		}
		sleepCtx(ctx, hold)
		return r.dbs.SurrealStart(context.WithoutCancel(ctx))

	case NFailpoint:
		return r.failpoint(ctx, rng, hold, f)
	}
	return fmt.Errorf("unknown nemesis %q", kind)
}

// waitUntil polls count every 20 ms until it is positive or d passes, and
// returns the last count.
func (r *Runner) waitUntil(ctx context.Context, d time.Duration, count func() int) int {
	end := time.Now().Add(d)
	for {
		n := count()
		if n > 0 || time.Now().After(end) || ctx.Err() != nil {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failpoint restarts a follower with one 2PC failpoint armed with a
// probability, hands it the leadership and waits for the failpoint to kill
// it (the exit handler restarts it disarmed). If it did not fire within
// the window, the follower is restarted disarmed.
func (r *Runner) failpoint(ctx context.Context, rng *rand.Rand, hold time.Duration, f *Fault) error {
	name := coordinator.Failpoints[rng.IntN(len(coordinator.Failpoints))]
	prob := []string{"0.05", "0.1", "0.2", "0.3"}[rng.IntN(4)]
	l, _, _ := r.cluster.Leader(ctx, r.admin)
	if l == nil {
		return fmt.Errorf("no leader")
	}
	fs := r.cluster.Followers(l)
	n := fs[rng.IntN(len(fs))]
	f.Target = n.ID
	n.Stop()
	deaths := n.Deaths()
	if err := r.cluster.Start(n, map[string]string{name: "kill@" + prob}); err != nil {
		return err
	}
	// Let it catch up, then make it the leader.
	r.waitUntil(ctx, 5*time.Second, func() int {
		st, err := r.admin.NodeStatus(ctx, n.GRPC)
		if err != nil || st.LeaderId == "" || st.AppliedIndex == 0 || st.AppliedIndex+10 < st.CommitIndex {
			return 0
		}
		return 1
	})
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	newLeader, err := r.admin.TransferLeadership(tctx, n.ID)
	cancel()
	fired := false
	if err == nil && newLeader == n.ID {
		end := time.Now().Add(max(hold, 3*time.Second) * 2)
		for time.Now().Before(end) && ctx.Err() == nil {
			if n.Deaths() > deaths {
				fired = true
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	f.Detail = fmt.Sprintf("%s=kill@%s, transfer to %s: %v, fired: %v", name, prob, n.ID, errOr(err, newLeader), fired)
	if !fired {
		if n.Deaths() > deaths {
			return nil // it fired after all; the exit handler restarts it
		}
		n.Stop()
		if n.Deaths() > deaths {
			return nil
		}
		return r.cluster.Start(n, nil)
	}
	// The exit handler restarts it; wait for that.
	r.waitUntil(ctx, 5*time.Second, func() int {
		if n.Running() && len(n.Armed()) == 0 {
			return 1
		}
		return 0
	})
	return nil
}

func errOr(err error, ok string) string {
	if err != nil {
		s := err.Error()
		if i := strings.IndexByte(s, '\n'); i > 0 {
			s = s[:i]
		}
		return "error " + s
	}
	return "leader " + ok
}
