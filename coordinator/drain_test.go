package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Drain refuses new transactions at once, lets a held one run to its
// commit, and returns when none is held (a single-node cluster has nobody
// to hand leadership to, so it stays leader).
func TestDrainRefusesNewAndFinishesHeld(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	ctx := context.Background()
	held := h.begin(t, write("a"))
	drained := make(chan int, 1)
	go func() { drained <- h.c.Drain(30 * time.Second) }()
	deadline := time.Now().Add(5 * time.Second)
	for !h.c.Draining() {
		if time.Now().After(deadline) {
			t.Fatal("Drain never started")
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, err := h.c.Begin(ctx, TxOptions{}); !errors.Is(err, ErrDraining) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Begin while draining: want ErrDraining (an ErrUnavailable), got %v", err)
	}
	if _, _, err := h.c.Run(ctx, TxOptions{}, []Statement{write("b")}); !errors.Is(err, ErrDraining) {
		t.Fatalf("Run while draining: want ErrDraining, got %v", err)
	}
	select {
	case left := <-drained:
		t.Fatalf("Drain returned (%d held) while a transaction was still held", left)
	default:
	}
	if _, err := h.c.Execute(ctx, held, write("b")); err != nil {
		t.Fatalf("Execute of a held transaction while draining: %v", err)
	}
	if err := h.c.Commit(ctx, held); err != nil {
		t.Fatalf("Commit of a held transaction while draining: %v", err)
	}
	select {
	case left := <-drained:
		if left != 0 {
			t.Fatalf("Drain left %d transactions held", left)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the held transaction committed")
	}
	if info, err := h.c.GetTransaction(ctx, held); err != nil || info.Outcome != OutcomeCommitted {
		t.Fatalf("held transaction: %+v %v", info, err)
	}
}

// Drain gives up after its timeout and reports what is still held.
func TestDrainTimeoutReportsHeld(t *testing.T) {
	h := newHarness(t, TestingKnobs{}, nil)
	h.begin(t, write("a"))
	if left := h.c.Drain(50 * time.Millisecond); left != 1 {
		t.Fatalf("Drain with one transaction held and never finished: left=%d, want 1", left)
	}
}
