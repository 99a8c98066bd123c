package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// TestCommittedFence: Committed is a fence. A transaction of the GID that
// holds the uncommitted commit marker (a one-phase commit before its
// COMMIT ran, or a prepared branch) makes it wait: the answer follows that
// transaction's end, or, past LockTimeout, is an error wrapping
// ErrUnavailable — never false for something that may still commit. A
// one-phase commit still running when the fence answered false fails
// definitely and commits nothing.
func TestCommittedFence(t *testing.T) {
	cfg := testConfig(testDSN(t))
	h := newHarness(t, cfg)
	p := openTest(t, cfg)
	defer p.Close()

	// holdMarker inserts gid's commit marker in an open transaction, as a
	// one-phase commit does before its COMMIT; end commits or rolls it back
	// after d, while Committed runs.
	committedWhileHeld := func(t *testing.T, gid string, d time.Duration, commit bool) (bool, error) {
		t.Helper()
		tx, err := h.db.Begin(bg(t))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(bg(t), `INSERT INTO `+p.marker+` (gid, outcome) VALUES ($1, 'c')`, gid); err != nil {
			t.Fatal(err)
		}
		var ok bool
		var cerr error
		done := make(chan struct{})
		go func() { defer close(done); ok, cerr = p.Committed(bg(t), gid) }()
		time.Sleep(d)
		if commit {
			err = tx.Commit(bg(t))
		} else {
			err = tx.Rollback(bg(t))
		}
		if err != nil {
			t.Fatal(err)
		}
		<-done
		return ok, cerr
	}

	t.Run("WaitsForCommit", func(t *testing.T) {
		gid := testGID(t, "fence-c")
		if ok, err := committedWhileHeld(t, gid, 100*time.Millisecond, true); !ok || err != nil {
			t.Fatalf("Committed while a commit was in flight, which then committed = %v, %v; want true", ok, err)
		}
	})
	t.Run("WaitsForRollback", func(t *testing.T) {
		gid := testGID(t, "fence-a")
		if ok, err := committedWhileHeld(t, gid, 100*time.Millisecond, false); ok || err != nil {
			t.Fatalf("Committed while a commit was in flight, which then rolled back = %v, %v; want false", ok, err)
		}
		var outcome string
		if err := h.db.QueryRow(bg(t), `SELECT outcome::text FROM `+p.marker+` WHERE gid = $1`, gid).Scan(&outcome); err != nil || outcome != "a" {
			t.Fatalf("marker after the fence = %q, %v; want the abort tombstone", outcome, err)
		}
	})
	t.Run("UndecidedIsUnavailable", func(t *testing.T) {
		gid := testGID(t, "fence-u")
		ok, err := committedWhileHeld(t, gid, 3*cfg.LockTimeout, true)
		if !errors.Is(err, participants.ErrUnavailable) {
			t.Fatalf("Committed while a commit stayed in flight past LockTimeout = %v, %v; want ErrUnavailable", ok, err)
		}
		// It committed afterwards: the answer now is true.
		if ok, err := p.Committed(bg(t), gid); !ok || err != nil {
			t.Fatalf("Committed after the commit = %v, %v", ok, err)
		}
	})

	// The case the fence exists for: the one-phase commit's batch is still
	// running at the server (here: a slow statement before the marker
	// insert) when Committed answers false. Its marker insert then fails.
	t.Run("LateOnePhaseCommitFails", func(t *testing.T) {
		gid := testGID(t, "fence-late")
		key := "fl-" + gid
		b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(bg(t), h.Write(key, "x")); err != nil {
			t.Fatal(err)
		}
		if err := b.(queuer).Queue(sqlOp(`SELECT pg_sleep(0.5)`)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- b.CommitOnePhase(bg(t)) }()
		time.Sleep(150 * time.Millisecond)
		if ok, err := p.Committed(bg(t), gid); ok || err != nil {
			t.Fatalf("Committed during the slow one-phase commit = %v, %v; want false", ok, err)
		}
		err = <-done
		if err == nil || errors.Is(err, participants.ErrAmbiguous) {
			t.Fatalf("one-phase commit after the fence = %v; want a definite failure", err)
		}
		if _, ok := h.Committed(t, key); ok {
			t.Fatal("the fenced one-phase commit's write is visible")
		}
		if ok, err := p.Committed(bg(t), gid); ok || err != nil {
			t.Fatalf("Committed again = %v, %v; want false", ok, err)
		}
	})

	// Racing a one-phase commit: the answers agree.
	t.Run("Race", func(t *testing.T) {
		wins := map[bool]int{}
		for range 20 {
			gid := testGID(t, "fence-race")
			key := "fr-" + gid
			b, err := p.Begin(bg(t), gid, participants.BranchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Execute(bg(t), h.Write(key, "x")); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var commitErr, fenceErr error
			var got bool
			wg.Add(2)
			go func() { defer wg.Done(); commitErr = b.CommitOnePhase(bg(t)) }()
			go func() { defer wg.Done(); got, fenceErr = p.Committed(bg(t), gid) }()
			wg.Wait()
			if fenceErr != nil {
				t.Fatalf("Committed(%s): %v", gid, fenceErr)
			}
			if errors.Is(commitErr, participants.ErrAmbiguous) || got != (commitErr == nil) {
				t.Fatalf("Committed(%s) = %v but CommitOnePhase = %v", gid, got, commitErr)
			}
			if _, visible := h.Committed(t, key); visible != got {
				t.Fatalf("write visible = %v, Committed = %v", visible, got)
			}
			wins[got]++
		}
		t.Logf("commit won %d, fence won %d", wins[true], wins[false])
	})
}
