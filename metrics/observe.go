package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// Observe wraps a participant so every call is timed and its errors
// classified. It is the outermost participant layer: it sees what the
// coordinator sees, after the adapter's own retries.
func (m *Metrics) Observe(p participants.Participant) participants.Participant {
	return &observed{Participant: p, m: m}
}

type observed struct {
	participants.Participant
	m *Metrics
}

// Unwrap returns the wrapped participant (for capabilities found by type
// assertion on the adapter).
func (o *observed) Unwrap() participants.Participant { return o.Participant }

func (o *observed) Begin(ctx context.Context, gid string, opts participants.BranchOptions) (participants.Branch, error) {
	start := time.Now()
	b, err := o.Participant.Begin(ctx, gid, opts)
	if err != nil {
		o.m.observe("begin", o.Name(), start, err)
		return nil, err
	}
	ob := &observedBranch{Branch: b, m: o.m, name: o.Name()}
	if q, ok := b.(participants.Queuer); ok {
		return &observedQueueBranch{observedBranch: ob, q: q}, nil
	}
	return ob, nil
}

// Phase-two calls that fail are retried by the coordinator (all but
// ErrNotPrepared, which it reports instead), so each failure is a retry.
func (o *observed) CommitPrepared(ctx context.Context, gid string) error {
	return o.CommitPreparedReceipt(ctx, gid, "")
}

// CommitPreparedReceipt is CommitPrepared with the branch's receipt
// (participants.ReceiptCommitter), observed as a commit.
func (o *observed) CommitPreparedReceipt(ctx context.Context, gid, receipt string) error {
	start := time.Now()
	err := participants.CommitPreparedReceipt(ctx, o.Participant, gid, receipt)
	o.m.observe("commit", o.Name(), start, err)
	if err != nil && !errors.Is(err, participants.ErrNotPrepared) {
		o.m.PhaseTwoRetry(o.Name())
	}
	return err
}

func (o *observed) RollbackPrepared(ctx context.Context, gid string) error {
	start := time.Now()
	err := o.Participant.RollbackPrepared(ctx, gid)
	o.m.observe("rollback", o.Name(), start, err)
	if err != nil {
		o.m.PhaseTwoRetry(o.Name())
	}
	return err
}

func (o *observed) InDoubt(ctx context.Context, prefix string) ([]participants.InDoubtBranch, error) {
	start := time.Now()
	b, err := o.Participant.InDoubt(ctx, prefix)
	o.m.observe("in_doubt", o.Name(), start, err)
	return b, err
}

type observedBranch struct {
	participants.Branch
	m    *Metrics
	name string
}

func (b *observedBranch) Execute(ctx context.Context, op participants.Operation) (participants.Result, error) {
	start := time.Now()
	r, err := b.Branch.Execute(ctx, op)
	b.m.observe("execute", b.name, start, err)
	return r, err
}

func (b *observedBranch) Prepare(ctx context.Context) (participants.Vote, error) {
	start := time.Now()
	v, err := b.Branch.Prepare(ctx)
	b.m.observe("prepare", b.name, start, err)
	return v, err
}

// Receipt forwards participants.Receipter.
func (b *observedBranch) Receipt() string { return participants.BranchReceipt(b.Branch) }

func (b *observedBranch) CommitOnePhase(ctx context.Context) error {
	start := time.Now()
	err := b.Branch.CommitOnePhase(ctx)
	b.m.observe("commit_one_phase", b.name, start, err)
	return err
}

// observedQueueBranch forwards participants.Queuer of a branch that has it.
// Queued operations are timed as part of the prepare or one-phase commit
// that sends them.
type observedQueueBranch struct {
	*observedBranch
	q participants.Queuer
}

func (b *observedQueueBranch) Queue(op participants.Operation) error { return b.q.Queue(op) }

func (b *observedQueueBranch) QueuedResults() []participants.Result { return b.q.QueuedResults() }
