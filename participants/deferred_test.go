package participants

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stubParticipant is what a Deferred opens in these tests.
type stubParticipant struct {
	Participant // only the methods below are called
	closed      atomic.Bool
}

func (s *stubParticipant) Name() string { return "pg" }
func (s *stubParticipant) InDoubt(context.Context, string) ([]InDoubtBranch, error) {
	return []InDoubtBranch{{GID: "g"}}, nil
}
func (s *stubParticipant) Committed(context.Context, string) (bool, error) { return true, nil }
func (s *stubParticipant) Close() error                                    { s.closed.Store(true); return nil }

var fastRetry = DeferredRetry{Min: time.Millisecond, Max: 4 * time.Millisecond, Attempt: time.Second}

// Until an attempt succeeds every call is ErrUnavailable naming the last
// failure; afterwards calls and capabilities reach the opened participant.
func TestDeferredOpensLater(t *testing.T) {
	down := errors.New("connection refused")
	var calls atomic.Int32
	stub := &stubParticipant{}
	openAt := make(chan struct{})
	d := NewDeferred("pg", KindPostgres, down, func(ctx context.Context) (Participant, error) {
		calls.Add(1)
		select {
		case <-openAt:
			return stub, nil
		default:
			return nil, down
		}
	}, fastRetry, nil)
	defer d.Close()

	for calls.Load() < 3 { // a few failed attempts
		time.Sleep(time.Millisecond)
	}
	_, err := d.InDoubt(context.Background(), "x")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("before opening: want ErrUnavailable, got %v", err)
	}
	if got := err.Error(); !strings.Contains(got, "connection refused") || !strings.Contains(got, "not open yet") {
		t.Fatalf("the error must say why: %q", got)
	}
	if _, ok := Capability[CommitRecorder](d); ok {
		t.Fatal("a capability was found before the participant opened")
	}
	close(openAt)
	deadline := time.Now().Add(5 * time.Second)
	for d.Unwrap() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the participant never opened")
		}
		time.Sleep(time.Millisecond)
	}
	b, err := d.InDoubt(context.Background(), "x")
	if err != nil || len(b) != 1 {
		t.Fatalf("after opening: %v %v", b, err)
	}
	if _, ok := Capability[CommitRecorder](d); !ok {
		t.Fatal("the opened participant's CommitRecorder is not reachable")
	}
	n := calls.Load()
	time.Sleep(20 * time.Millisecond)
	if calls.Load() != n {
		t.Fatal("attempts go on after the participant opened")
	}
	if err := d.Close(); err != nil || !stub.closed.Load() {
		t.Fatalf("Close must close the opened participant: %v %v", err, stub.closed.Load())
	}
}

// Close ends the attempts, even one that is in progress.
func TestDeferredCloseStopsAttempts(t *testing.T) {
	started := make(chan struct{}, 1)
	d := NewDeferred("pg", KindPostgres, errors.New("down"), func(ctx context.Context) (Participant, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done() // an attempt that hangs until canceled
		return nil, ctx.Err()
	}, DeferredRetry{Min: time.Millisecond, Max: time.Millisecond, Attempt: time.Hour}, nil)
	<-started
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for an attempt in progress")
	}
	if _, err := d.Begin(context.Background(), "g", BranchOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after Close: want ErrUnavailable, got %v", err)
	}
}
