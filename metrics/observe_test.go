package metrics

import (
	"context"
	"testing"

	"github.com/txcoord/txcoord/participants"
)

// fakeParticipant opens fakeBranch branches; queueing is what it tests.
type fakeParticipant struct {
	participants.Participant // nil: only Name and Begin are called
	queues                   bool
}

func (p fakeParticipant) Name() string { return "fake" }

func (p fakeParticipant) Begin(_ context.Context, gid string, _ participants.BranchOptions) (participants.Branch, error) {
	if p.queues {
		return &queueBranch{}, nil
	}
	return &plainBranch{}, nil
}

type plainBranch struct{ participants.Branch }

type queueBranch struct {
	participants.Branch
	queued []participants.Operation
}

func (b *queueBranch) Queue(op participants.Operation) error {
	b.queued = append(b.queued, op)
	return nil
}

func (b *queueBranch) QueuedResults() []participants.Result {
	return make([]participants.Result, len(b.queued))
}

// The metrics layer keeps a branch's Queuer capability, and adds none.
func TestObserveForwardsQueuer(t *testing.T) {
	m := New()
	b, err := m.Observe(fakeParticipant{queues: true}).Begin(context.Background(), "g", participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q, ok := b.(participants.Queuer)
	if !ok {
		t.Fatalf("observed branch %T lost the Queuer capability", b)
	}
	if err := q.Queue(participants.Operation{}); err != nil {
		t.Fatal(err)
	}
	if got := len(q.QueuedResults()); got != 1 {
		t.Fatalf("QueuedResults through the layer = %d results, want 1", got)
	}
	b, err = m.Observe(fakeParticipant{}).Begin(context.Background(), "g", participants.BranchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(participants.Queuer); ok {
		t.Fatalf("observed branch %T claims Queuer although the adapter's branch has none", b)
	}
}
