package bench

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/txcoord/txcoord/client"
)

// Where a two-phase transaction's time goes (--phases N): txbench keeps the
// txids of the last N transactions each txcoord side committed and, once
// the side's measurement is over, reads their timelines from the leader
// (GetTransaction keeps them in memory for recent transactions). Each
// timeline gives the server-side phases; the report has their medians.

// maxPhaseSample bounds --phases: the leader keeps the timelines of its
// most recent 10,000 finished transactions (coordinator.recent_finished),
// and the sample is read one GetTransaction at a time.
const maxPhaseSample = 2000

// Phases is the median time of each server-side phase over a sample of
// committed two-phase transactions.
type Phases struct {
	Sampled int `json:"sampled"` // timelines that had every phase
	// StatementsMs: from Begin to the commit request. For a one-shot Run,
	// statements are queued and sent with the prepare, so this is near 0;
	// for an interactive transaction it includes the client's calls.
	StatementsMs float64 `json:"statements_ms"`
	// PrepareMs: from the commit request to the last branch's vote.
	PrepareMs float64 `json:"prepare_ms"`
	// DecisionMs: from the last vote to the decision applied on the
	// leader (the flight's linger, Raft).
	DecisionMs float64 `json:"decision_ms"`
	// CommitMs: from the decision to the last branch's commit.
	CommitMs float64 `json:"commit_ms"`
	// ServerMs: from Begin to the last branch's commit.
	ServerMs float64 `json:"server_ms"`
}

// txidSample keeps the txids of the last n committed transactions (a ring).
// A nil sample keeps nothing.
type txidSample struct {
	mu   sync.Mutex
	ids  []string
	next int
}

func newTxidSample(n int) *txidSample {
	if n <= 0 {
		return nil
	}
	return &txidSample{ids: make([]string, 0, n)}
}

func (s *txidSample) add(txid string) {
	if s == nil || txid == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) < cap(s.ids) {
		s.ids = append(s.ids, txid)
		return
	}
	s.ids[s.next] = txid
	s.next = (s.next + 1) % len(s.ids)
}

func (s *txidSample) txids() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// phasesOf reads one committed two-phase transaction's phases from its
// timeline (a sample of one); false when one is missing (a read-only or
// one-phase commit, a retried phase two, a timeline no longer kept).
func phasesOf(t *client.Transaction) (*Phases, bool) {
	if t.GetCreatedAt() == nil {
		return nil, false
	}
	begun := t.GetCreatedAt().AsTime()
	var requested, lastVote, decided, lastCommit time.Time
	for _, e := range t.GetTimeline() {
		at := e.GetAt().AsTime()
		switch e.GetEvent() {
		case "COMMIT_REQUESTED":
			if requested.IsZero() {
				requested = at
			}
		case "VOTE":
			lastVote = at
		case "DECISION":
			if decided.IsZero() {
				decided = at
			}
		case "COMMITTED":
			lastCommit = at
		}
	}
	if requested.IsZero() || lastVote.IsZero() || decided.IsZero() || lastCommit.IsZero() ||
		requested.Before(begun) || lastVote.Before(requested) || decided.Before(lastVote) || lastCommit.Before(decided) {
		return nil, false
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &Phases{
		Sampled:      1,
		StatementsMs: ms(requested.Sub(begun)),
		PrepareMs:    ms(lastVote.Sub(requested)),
		DecisionMs:   ms(decided.Sub(lastVote)),
		CommitMs:     ms(lastCommit.Sub(decided)),
		ServerMs:     ms(lastCommit.Sub(begun)),
	}, true
}

// samplePhases reads the timelines of txids and returns the medians of
// their phases (nil when none had every phase). Each read is bounded by
// timeout; a failed read only leaves that transaction out.
func samplePhases(ctx context.Context, c *client.Client, txids []string, timeout time.Duration) *Phases {
	var all []*Phases
	for _, id := range txids {
		if ctx.Err() != nil {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		t, err := c.GetTransaction(rctx, id)
		cancel()
		if err != nil {
			continue
		}
		if p, ok := phasesOf(t); ok {
			all = append(all, p)
		}
	}
	return medianOfPhases(all)
}

// medianOfPhases is the per-phase median of samples — one timeline each,
// or one round's medians each — with their sample counts added up (nil
// when there is none).
func medianOfPhases(ps []*Phases) *Phases {
	var have []*Phases
	for _, p := range ps {
		if p != nil {
			have = append(have, p)
		}
	}
	if len(have) == 0 {
		return nil
	}
	f := func(get func(*Phases) float64) float64 {
		xs := make([]float64, len(have))
		for i, p := range have {
			xs[i] = get(p)
		}
		return median(xs)
	}
	out := &Phases{
		StatementsMs: f(func(p *Phases) float64 { return p.StatementsMs }),
		PrepareMs:    f(func(p *Phases) float64 { return p.PrepareMs }),
		DecisionMs:   f(func(p *Phases) float64 { return p.DecisionMs }),
		CommitMs:     f(func(p *Phases) float64 { return p.CommitMs }),
		ServerMs:     f(func(p *Phases) float64 { return p.ServerMs }),
	}
	for _, p := range have {
		out.Sampled += p.Sampled
	}
	return out
}
