package coordinator

import (
	"errors"
	"testing"
	"time"

	"github.com/txcoord/txcoord/wal"
)

// A decision that cannot get into a flight within ApplyTimeout was never
// appended: applyDecision says unavailable (definitely not decided), not
// unknown, and does not wait longer.
func TestApplyDecisionEnqueueIsBounded(t *testing.T) {
	c := &Coordinator{cfg: Config{ApplyTimeout: 20 * time.Millisecond}, decideQ: make(chan decideReq), stop: make(chan struct{})}
	_, err := c.applyDecision(&wal.Record{TxID: "x", Outcome: wal.OutcomeCommit})
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a decision that never left the queue: want ErrUnavailable, got %v", err)
	}
}
