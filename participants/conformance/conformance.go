// Package conformance is the one test suite every participant adapter
// passes against a real database. An adapter's test provides a Harness and
// calls Run:
//
//	func TestConformance(t *testing.T) {
//		if dsn == "" { t.Skip("set TXCOORD_..._DSN to run the conformance suite") }
//		conformance.Run(t, &myHarness{...})
//	}
//
// The suite is database-agnostic: the harness builds every operation, so it
// fits SQL databases and record stores alike. It checks the
// participants.Participant contract: prepare/commit and prepare/rollback,
// idempotent phase two, NO votes on constraint violations and lock
// conflicts, in-doubt listing across a Close and reopen, one-phase commit,
// READ_ONLY votes and the ErrBranchDone/ErrBranchFailed states. Adapters
// with the optional participants.CommitRecorder capability are checked for
// it too (Committed after one-phase and two-phase commits, and after
// rollbacks; no answer while a branch is prepared; Committed as a fence:
// after it answered false, a one-phase commit of the GID fails definitely
// and a prepare votes NO); for adapters without it those cases are skipped.
// Adapters whose branches give receipts (participants.Receipter) get the
// receipt back at every commit through a reopened participant, as the
// coordinator does from its decision log; for them a rolled-back GID's late
// prepare may succeed (it must be cleanly rolled back), and CommitRecorder
// covers one-phase commits only (see participants.CommitRecorder).
//
// Every run uses a random GID prefix and random keys, so runs against the
// same database never collide, and it rolls back whatever its own GIDs left
// prepared when it ends.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// Harness is what an adapter's test provides. Methods may be called from
// several goroutines at once.
//
// Keys are 1 to 64 bytes from [a-z0-9_]; values are short printable ASCII
// strings. The harness maps them onto its database (a row in a key/value
// table, a record id) and creates whatever schema it needs before Run.
type Harness interface {
	// Open returns a new, independent Participant on the harness's database
	// (its own pools and connections): Close followed by Open models a
	// restart. The suite closes what it opens. The participant must give up
	// waiting for a lock held by another branch (prepared or not) well
	// within LockWaitBound, failing the statement with ErrConflict or
	// letting Prepare vote NO with ErrConflict — never hang.
	Open(t testing.TB) participants.Participant
	// Write returns an operation that sets key to value, creating it if
	// absent (an upsert).
	Write(key, value string) participants.Operation
	// Read returns an operation that reads key and writes nothing: a branch
	// with only Reads must vote READ_ONLY.
	Read(key string) participants.Operation
	// Value extracts key's value from the Result of a Read; found is false
	// when the key does not exist (as seen by that branch).
	Value(t testing.TB, res participants.Result) (value string, found bool)
	// Violation returns an operation that makes the branch unable to commit
	// because a constraint is violated (a CHECK, a deferred foreign key, a
	// schema assertion...); key is fresh and may be used to build it. The
	// violation must surface as an error wrapping ErrConstraint at Execute,
	// or at the latest at Prepare (VoteNo wrapping ErrVoteNo and
	// ErrConstraint) or CommitOnePhase.
	Violation(key string) participants.Operation
	// Committed reads key's committed value outside any branch.
	Committed(t testing.TB, key string) (value string, found bool)
}

const (
	// LockWaitBound is the longest the suite lets a write wait behind a lock
	// held by another branch before it counts the adapter as hanging.
	LockWaitBound = 10 * time.Second
	// callTimeout bounds every other call the suite makes.
	callTimeout = 30 * time.Second
)

// Run runs the suite as subtests of t.
func Run(t *testing.T, h Harness) {
	s := &suite{h: h, started: time.Now()}
	s.run = randomHex(t, 6)
	s.prefix = "cf-" + s.run + ":"
	t.Logf("conformance run %s (GID prefix %q)", s.run, s.prefix)

	s.p = h.Open(t)
	t.Cleanup(func() { s.cleanup(t) })
	t.Cleanup(func() { closeWithin(t, s.p) })

	t.Run("PrepareCommitMakesWriteVisible", s.prepareCommit)
	t.Run("PrepareRollbackLeavesNothing", s.prepareRollback)
	t.Run("RollbackUnprepared", s.rollbackUnprepared)
	t.Run("CommitPreparedIsIdempotent", s.commitIdempotent)
	t.Run("RollbackPreparedIsIdempotent", s.rollbackIdempotent)
	t.Run("CommitPreparedOfUnpreparedGID", s.commitUnprepared)
	t.Run("PrepareAfterRollbackPreparedVotesNo", s.latePrepare)
	t.Run("ConstraintViolationVotesNo", s.constraintNo)
	t.Run("LockConflictOnNewKey", func(t *testing.T) { s.lockConflict(t, false) })
	t.Run("LockConflictOnExistingKey", func(t *testing.T) { s.lockConflict(t, true) })
	t.Run("InDoubtSurvivesReopen", s.inDoubtReopen)
	t.Run("InDoubtPrefixIsLiteral", s.inDoubtPrefixLiteral)
	t.Run("OnePhaseCommit", s.onePhase)
	t.Run("OnePhaseCommitConstraintViolation", s.onePhaseConstraint)
	t.Run("ReadOnlyVotesReadOnly", s.readOnly)
	t.Run("EmptyBranchVotesReadOnly", s.emptyBranch)
	t.Run("BranchDoneAfterFinish", s.branchDone)
	t.Run("ConcurrentBranches", s.concurrent)
	t.Run("CommittedAfterOnePhaseCommit", s.committedOnePhase)
	t.Run("NotCommittedAfterRollback", s.notCommittedRolledBack)
	t.Run("CommittedAfterCommitPrepared", s.committedTwoPhase)
	t.Run("NotCommittedAfterRollbackPrepared", s.notCommittedRollbackPrepared)
	t.Run("CommittedFalseFencesOnePhaseCommit", s.fenceOnePhase)
	t.Run("CommittedFalseFencesPrepare", s.fencePrepare)
}

type suite struct {
	h       Harness
	p       participants.Participant // shared by most cases
	run     string                   // random hex of this run
	prefix  string                   // GID prefix of this run
	started time.Time
	n       atomic.Int64
}

// gid returns a fresh GID "<prefix><name>:<n>".
func (s *suite) gid(name string) string {
	return fmt.Sprintf("%s%s:%d", s.prefix, name, s.n.Add(1))
}

// key returns a fresh key "k<run>_<name>_<n>".
func (s *suite) key(name string) string {
	return fmt.Sprintf("k%s_%s_%d", s.run, name, s.n.Add(1))
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func ctx(t testing.TB) context.Context { return ctxFor(t, callTimeout) }

func (s *suite) begin(t testing.TB, p participants.Participant, gid string) participants.Branch {
	t.Helper()
	b, err := p.Begin(ctx(t), gid, participants.BranchOptions{})
	if err != nil {
		t.Fatalf("Begin(%s): %v", gid, err)
	}
	if b.GID() != gid {
		t.Fatalf("Branch.GID() = %q, want %q", b.GID(), gid)
	}
	return b
}

func mustExec(t testing.TB, b participants.Branch, op participants.Operation) participants.Result {
	t.Helper()
	res, err := b.Execute(ctx(t), op)
	if err != nil {
		t.Fatalf("Execute(%s) in %s: %v", op.Kind, b.GID(), err)
	}
	return res
}

func mustVote(t testing.TB, b participants.Branch, want participants.Vote) {
	t.Helper()
	v, err := b.Prepare(ctx(t))
	if v != want || err != nil {
		t.Fatalf("Prepare(%s) = %v, %v; want %v, nil", b.GID(), v, err, want)
	}
}

func (s *suite) wantCommitted(t testing.TB, key, want string) {
	t.Helper()
	v, ok := s.h.Committed(t, key)
	if !ok || v != want {
		t.Fatalf("committed value of %s = %q (found %v), want %q", key, v, ok, want)
	}
}

func (s *suite) wantAbsent(t testing.TB, key string) {
	t.Helper()
	if v, ok := s.h.Committed(t, key); ok {
		t.Fatalf("key %s is committed with %q, want absent", key, v)
	}
}

// wantNotInDoubt checks that no prepared branch with gid as prefix exists.
func (s *suite) wantNotInDoubt(t testing.TB, p participants.Participant, gid string) {
	t.Helper()
	list, err := p.InDoubt(ctx(t), gid)
	if err != nil {
		t.Fatalf("InDoubt(%s): %v", gid, err)
	}
	if len(list) != 0 {
		t.Fatalf("InDoubt(%s) = %v, want none", gid, list)
	}
}

// writePrepared opens a branch that writes key=value and votes YES, and
// returns its receipt ("" when the adapter gives none).
func (s *suite) writePrepared(t testing.TB, p participants.Participant, gid, key, value string) string {
	t.Helper()
	b := s.begin(t, p, gid)
	mustExec(t, b, s.h.Write(key, value))
	mustVote(t, b, participants.VoteYes)
	return participants.BranchReceipt(b)
}

// commitReceipt commits gid through p with its receipt, as a coordinator
// does from its decision log.
func commitReceipt(t testing.TB, p participants.Participant, gid, receipt string) error {
	return participants.CommitPreparedReceipt(ctx(t), p, gid, receipt)
}

// commitOnePhase commits key=value directly (used to seed data).
func (s *suite) commitOnePhase(t testing.TB, key, value string) {
	t.Helper()
	b := s.begin(t, s.p, s.gid("seed"))
	mustExec(t, b, s.h.Write(key, value))
	if err := b.CommitOnePhase(ctx(t)); err != nil {
		t.Fatalf("CommitOnePhase(%s): %v", b.GID(), err)
	}
}

func (s *suite) prepareCommit(t *testing.T) {
	k, gid := s.key("pc"), s.gid("pc")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	if v, ok := s.h.Value(t, mustExec(t, b, s.h.Read(k))); !ok || v != "v1" {
		t.Fatalf("branch reads its own write as %q (found %v), want v1", v, ok)
	}
	s.wantAbsent(t, k) // not visible before it commits
	mustVote(t, b, participants.VoteYes)
	s.wantAbsent(t, k) // prepared is not committed
	if err := s.p.CommitPrepared(ctx(t), gid); err != nil {
		t.Fatalf("CommitPrepared(%s): %v", gid, err)
	}
	s.wantCommitted(t, k, "v1")
	s.wantNotInDoubt(t, s.p, gid)
}

func (s *suite) prepareRollback(t *testing.T) {
	k, gid := s.key("pr"), s.gid("pr")
	s.writePrepared(t, s.p, gid, k, "v1")
	if list, err := s.p.InDoubt(ctx(t), gid); err != nil || len(list) != 1 || list[0].GID != gid {
		t.Fatalf("InDoubt(%s) = %v, %v; want the prepared branch", gid, list, err)
	}
	if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
		t.Fatalf("RollbackPrepared(%s): %v", gid, err)
	}
	s.wantAbsent(t, k)
	s.wantNotInDoubt(t, s.p, gid)
}

func (s *suite) rollbackUnprepared(t *testing.T) {
	k, gid := s.key("ru"), s.gid("ru")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	for i := 0; i < 2; i++ {
		if err := b.Rollback(ctx(t)); err != nil {
			t.Fatalf("Rollback #%d: %v", i+1, err)
		}
	}
	s.wantAbsent(t, k)
	s.wantNotInDoubt(t, s.p, gid)
}

func (s *suite) commitIdempotent(t *testing.T) {
	k, gid := s.key("ci"), s.gid("ci")
	receipt := s.writePrepared(t, s.p, gid, k, "v1")
	for i := 0; i < 3; i++ {
		if err := s.p.CommitPrepared(ctx(t), gid); err != nil {
			t.Fatalf("CommitPrepared(%s) #%d: %v", gid, i+1, err)
		}
	}
	s.wantCommitted(t, k, "v1")

	// A coordinator that fails over retries with a fresh adapter instance
	// that never saw the branch, and the receipt from its log: still a
	// no-op success.
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	if err := commitReceipt(t, p2, gid, receipt); err != nil {
		t.Fatalf("CommitPrepared(%s, receipt %q) after reopen: %v", gid, receipt, err)
	}
	s.wantCommitted(t, k, "v1")
}

func (s *suite) rollbackIdempotent(t *testing.T) {
	k, gid := s.key("ri"), s.gid("ri")
	s.writePrepared(t, s.p, gid, k, "v1")
	for i := 0; i < 3; i++ {
		if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
			t.Fatalf("RollbackPrepared(%s) #%d: %v", gid, i+1, err)
		}
	}
	s.wantAbsent(t, k)
	unknown := s.gid("ri_unknown")
	for i := 0; i < 2; i++ {
		if err := s.p.RollbackPrepared(ctx(t), unknown); err != nil {
			t.Fatalf("RollbackPrepared(unknown %s) #%d: %v", unknown, i+1, err)
		}
	}
}

func (s *suite) commitUnprepared(t *testing.T) {
	unknown := s.gid("cu_unknown")
	if err := s.p.CommitPrepared(ctx(t), unknown); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared(never prepared %s) = %v, want ErrNotPrepared", unknown, err)
	}
	k, gid := s.key("cu"), s.gid("cu")
	receipt := s.writePrepared(t, s.p, gid, k, "v1")
	if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
		t.Fatalf("RollbackPrepared(%s): %v", gid, err)
	}
	if err := s.p.CommitPrepared(ctx(t), gid); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared(rolled back %s) = %v, want ErrNotPrepared", gid, err)
	}
	// The receipt does not turn a rollback into a commit, in this process
	// or another.
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	if err := commitReceipt(t, p2, gid, receipt); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared(rolled back %s, receipt %q) after reopen = %v, want ErrNotPrepared", gid, receipt, err)
	}
	s.wantAbsent(t, k)
}

// latePrepare: a GID rolled back by RollbackPrepared before its branch
// prepared (the coordinator gave up on an ambiguous or slow prepare) must
// not end up prepared — or, for an adapter whose branches give receipts,
// may end up prepared (with no commit decision, the coordinator's in-doubt
// scan rolls it back) and then rolls back cleanly.
func (s *suite) latePrepare(t *testing.T) {
	k, gid := s.key("lp"), s.gid("lp")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "late"))
	if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
		t.Fatalf("RollbackPrepared(%s) before prepare: %v", gid, err)
	}
	v, err := b.Prepare(ctx(t))
	if v == participants.VoteYes {
		receipt := participants.BranchReceipt(b)
		if rerr := s.p.RollbackPrepared(ctx(t), gid); rerr != nil {
			t.Fatalf("RollbackPrepared(%s) of the late prepared branch: %v", gid, rerr)
		}
		if receipt == "" {
			t.Fatalf("Prepare after RollbackPrepared of the same GID voted YES")
		}
		s.wantAbsent(t, k)
		s.wantNotInDoubt(t, s.p, gid)
		return
	}
	if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("Prepare after RollbackPrepared = %v, %v; want NO wrapping ErrVoteNo", v, err)
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	s.wantNotInDoubt(t, s.p, gid)
}

func (s *suite) constraintNo(t *testing.T) {
	k, bad, gid := s.key("cn"), s.key("cn_bad"), s.gid("cn")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	_, err := b.Execute(ctx(t), s.h.Violation(bad))
	if err != nil {
		if !errors.Is(err, participants.ErrConstraint) {
			t.Fatalf("Execute(violation) = %v, want an error wrapping ErrConstraint", err)
		}
		if _, err := b.Execute(ctx(t), s.h.Read(k)); !errors.Is(err, participants.ErrBranchFailed) {
			t.Fatalf("Execute after a failed Execute = %v, want ErrBranchFailed", err)
		}
	}
	v, perr := b.Prepare(ctx(t))
	if v != participants.VoteNo || !errors.Is(perr, participants.ErrVoteNo) {
		t.Fatalf("Prepare after a constraint violation = %v, %v; want NO wrapping ErrVoteNo", v, perr)
	}
	if err == nil && !errors.Is(perr, participants.ErrConstraint) {
		t.Fatalf("Prepare NO = %v, want it to wrap ErrConstraint", perr)
	}
	// The caller's cleanup after a NO vote.
	if err := b.Rollback(ctx(t)); err != nil {
		t.Fatalf("Rollback after NO: %v", err)
	}
	if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
		t.Fatalf("RollbackPrepared after NO: %v", err)
	}
	s.wantAbsent(t, k)
	s.wantAbsent(t, bad)
	s.wantNotInDoubt(t, s.p, gid)
}

// lockConflict: branch A writes k and prepares (a prepared branch holds its
// locks until phase two); branch B writes k too. B must fail with
// ErrConflict at Execute or vote NO with ErrConflict, within LockWaitBound.
func (s *suite) lockConflict(t *testing.T, existing bool) {
	k, gidA, gidB := s.key("lc"), s.gid("lc_a"), s.gid("lc_b")
	if existing {
		s.commitOnePhase(t, k, "v0")
	}
	s.writePrepared(t, s.p, gidA, k, "a")

	b := s.begin(t, s.p, gidB)
	start := time.Now()
	_, err := b.Execute(ctxFor(t, LockWaitBound), s.h.Write(k, "b"))
	if err != nil {
		if !errors.Is(err, participants.ErrConflict) {
			t.Fatalf("conflicting Execute after %v = %v, want ErrConflict", time.Since(start), err)
		}
	} else {
		v, perr := b.Prepare(ctxFor(t, LockWaitBound))
		if v == participants.VoteYes {
			_ = s.p.RollbackPrepared(ctx(t), gidB)
			t.Fatalf("conflicting branch voted YES")
		}
		if !errors.Is(perr, participants.ErrVoteNo) || !errors.Is(perr, participants.ErrConflict) {
			t.Fatalf("conflicting Prepare = %v, %v; want NO wrapping ErrVoteNo and ErrConflict", v, perr)
		}
	}
	if d := time.Since(start); d >= LockWaitBound {
		t.Fatalf("conflict took %v, more than LockWaitBound %v", d, LockWaitBound)
	}
	if err := b.Rollback(ctx(t)); err != nil {
		t.Fatalf("Rollback(B): %v", err)
	}
	if err := s.p.RollbackPrepared(ctx(t), gidB); err != nil {
		t.Fatalf("RollbackPrepared(B): %v", err)
	}
	if err := s.p.CommitPrepared(ctx(t), gidA); err != nil {
		t.Fatalf("CommitPrepared(A): %v", err)
	}
	s.wantCommitted(t, k, "a")
}

func (s *suite) inDoubtReopen(t *testing.T) {
	kA, kB := s.key("id_a"), s.key("id_b")
	prefA, prefB := s.prefix+"id_a:", s.prefix+"id_b:"
	gidA, gidB := prefA+"1", prefB+"1"

	p1 := s.h.Open(t)
	s.writePrepared(t, p1, gidA, kA, "a")
	s.writePrepared(t, p1, gidB, kB, "b")
	closeWithin(t, p1)

	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	for _, c := range []struct{ prefix, gid string }{{prefA, gidA}, {prefB, gidB}} {
		list, err := p2.InDoubt(ctx(t), c.prefix)
		if err != nil {
			t.Fatalf("InDoubt(%s) after reopen: %v", c.prefix, err)
		}
		if len(list) != 1 || list[0].GID != c.gid {
			t.Fatalf("InDoubt(%s) after reopen = %v, want exactly %s", c.prefix, list, c.gid)
		}
		if at := list[0].PreparedAt; !at.IsZero() &&
			(at.Before(s.started.Add(-time.Minute)) || at.After(time.Now().Add(time.Minute))) {
			t.Fatalf("PreparedAt of %s = %v, outside this run (started %v)", c.gid, at, s.started)
		}
	}
	list, err := p2.InDoubt(ctx(t), s.prefix+"id_")
	if err != nil {
		t.Fatalf("InDoubt: %v", err)
	}
	gids := make([]string, 0, len(list))
	for _, b := range list {
		gids = append(gids, b.GID)
	}
	slices.Sort(gids)
	if !slices.Equal(gids, []string{gidA, gidB}) {
		t.Fatalf("InDoubt(%s) = %v, want [%s %s]", s.prefix+"id_", gids, gidA, gidB)
	}

	if err := p2.CommitPrepared(ctx(t), gidA); err != nil {
		t.Fatalf("CommitPrepared(%s) via reopened participant: %v", gidA, err)
	}
	if err := p2.RollbackPrepared(ctx(t), gidB); err != nil {
		t.Fatalf("RollbackPrepared(%s) via reopened participant: %v", gidB, err)
	}
	s.wantCommitted(t, kA, "a")
	s.wantAbsent(t, kB)
	s.wantNotInDoubt(t, p2, s.prefix+"id_")
}

// inDoubtPrefixIsLiteral: '_' (a LIKE wildcard in SQL) in a prefix matches
// only itself.
func (s *suite) inDoubtPrefixLiteral(t *testing.T) {
	g1, g2 := s.prefix+"lit_1:x", s.prefix+"litx1:x"
	s.writePrepared(t, s.p, g1, s.key("lit1"), "1")
	s.writePrepared(t, s.p, g2, s.key("lit2"), "2")
	defer func() {
		_ = s.p.RollbackPrepared(ctx(t), g1)
		_ = s.p.RollbackPrepared(ctx(t), g2)
	}()
	list, err := s.p.InDoubt(ctx(t), s.prefix+"lit_1")
	if err != nil {
		t.Fatalf("InDoubt: %v", err)
	}
	if len(list) != 1 || list[0].GID != g1 {
		t.Fatalf("InDoubt(%s) = %v, want only %s", s.prefix+"lit_1", list, g1)
	}
}

func (s *suite) onePhase(t *testing.T) {
	k, gid := s.key("op"), s.gid("op")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	mustExec(t, b, s.h.Write(k, "v2"))
	if err := b.CommitOnePhase(ctx(t)); err != nil {
		t.Fatalf("CommitOnePhase: %v", err)
	}
	s.wantCommitted(t, k, "v2")
	s.wantNotInDoubt(t, s.p, gid)
}

func (s *suite) onePhaseConstraint(t *testing.T) {
	k, bad, gid := s.key("oc"), s.key("oc_bad"), s.gid("oc")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	_, err := b.Execute(ctx(t), s.h.Violation(bad))
	if err != nil && !errors.Is(err, participants.ErrConstraint) {
		t.Fatalf("Execute(violation) = %v, want an error wrapping ErrConstraint", err)
	}
	cerr := b.CommitOnePhase(ctx(t))
	switch {
	case cerr == nil:
		t.Fatalf("CommitOnePhase of a branch with a constraint violation succeeded")
	case errors.Is(cerr, participants.ErrAmbiguous):
		t.Fatalf("CommitOnePhase = %v: a constraint violation is a definite failure, not ambiguous", cerr)
	case err == nil && !errors.Is(cerr, participants.ErrConstraint):
		t.Fatalf("CommitOnePhase = %v, want it to wrap ErrConstraint", cerr)
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	s.wantAbsent(t, bad)
}

func (s *suite) readOnly(t *testing.T) {
	k := s.key("ro")
	s.commitOnePhase(t, k, "v0")
	gid := s.gid("ro")
	b := s.begin(t, s.p, gid)
	if v, ok := s.h.Value(t, mustExec(t, b, s.h.Read(k))); !ok || v != "v0" {
		t.Fatalf("Read(%s) = %q (found %v), want v0", k, v, ok)
	}
	missing := s.key("ro_missing")
	if v, ok := s.h.Value(t, mustExec(t, b, s.h.Read(missing))); ok {
		t.Fatalf("Read(missing %s) found %q", missing, v)
	}
	mustVote(t, b, participants.VoteReadOnly)
	s.wantNotInDoubt(t, s.p, gid)
	s.wantCommitted(t, k, "v0")
}

func (s *suite) emptyBranch(t *testing.T) {
	gid := s.gid("empty")
	b := s.begin(t, s.p, gid)
	mustVote(t, b, participants.VoteReadOnly)
	s.wantNotInDoubt(t, s.p, gid)
}

// branchDone: Execute after the branch is prepared, committed, rolled back
// or voted READ_ONLY fails with ErrBranchDone.
func (s *suite) branchDone(t *testing.T) {
	finish := map[string]func(t *testing.T, b participants.Branch){
		"Prepared": func(t *testing.T, b participants.Branch) {
			mustVote(t, b, participants.VoteYes)
			t.Cleanup(func() { _ = s.p.RollbackPrepared(context.Background(), b.GID()) })
		},
		"CommittedOnePhase": func(t *testing.T, b participants.Branch) {
			if err := b.CommitOnePhase(ctx(t)); err != nil {
				t.Fatalf("CommitOnePhase: %v", err)
			}
		},
		"RolledBack": func(t *testing.T, b participants.Branch) {
			if err := b.Rollback(ctx(t)); err != nil {
				t.Fatalf("Rollback: %v", err)
			}
		},
	}
	for _, name := range []string{"Prepared", "CommittedOnePhase", "RolledBack"} {
		t.Run(name, func(t *testing.T) {
			k := s.key("bd")
			b := s.begin(t, s.p, s.gid("bd"))
			mustExec(t, b, s.h.Write(k, "v1"))
			finish[name](t, b)
			if _, err := b.Execute(ctx(t), s.h.Write(k, "v2")); !errors.Is(err, participants.ErrBranchDone) {
				t.Fatalf("Execute after %s = %v, want ErrBranchDone", name, err)
			}
		})
	}
	t.Run("ReadOnly", func(t *testing.T) {
		b := s.begin(t, s.p, s.gid("bd_ro"))
		mustExec(t, b, s.h.Read(s.key("bd_ro")))
		mustVote(t, b, participants.VoteReadOnly)
		if _, err := b.Execute(ctx(t), s.h.Read(s.key("bd_ro"))); !errors.Is(err, participants.ErrBranchDone) {
			t.Fatalf("Execute after READ_ONLY = %v, want ErrBranchDone", err)
		}
	})
}

// concurrent: several goroutines run prepare/commit transactions on the
// shared participant at once (the Participant is safe for concurrent use).
func (s *suite) concurrent(t *testing.T) {
	const workers, perWorker = 8, 4
	var wg sync.WaitGroup
	keys := make([][]string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				k, gid := s.key("cc"), s.gid("cc")
				b, err := s.p.Begin(ctx(t), gid, participants.BranchOptions{})
				if err != nil {
					t.Errorf("Begin: %v", err)
					return
				}
				if _, err := b.Execute(ctx(t), s.h.Write(k, gid)); err != nil {
					t.Errorf("Execute: %v", err)
					_ = b.Rollback(ctx(t))
					return
				}
				if v, err := b.Prepare(ctx(t)); v != participants.VoteYes || err != nil {
					t.Errorf("Prepare(%s) = %v, %v", gid, v, err)
					return
				}
				if err := s.p.CommitPrepared(ctx(t), gid); err != nil {
					t.Errorf("CommitPrepared(%s): %v", gid, err)
					return
				}
				keys[w] = append(keys[w], k+"="+gid)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, ks := range keys {
		for _, kv := range ks {
			var k, v string
			for i := range kv {
				if kv[i] == '=' {
					k, v = kv[:i], kv[i+1:]
					break
				}
			}
			s.wantCommitted(t, k, v)
		}
	}
}

// recorder returns p's CommitRecorder (found as the coordinator finds it),
// or skips the test: the capability is optional.
func recorder(t *testing.T, p participants.Participant) participants.CommitRecorder {
	t.Helper()
	rec, ok := participants.Capability[participants.CommitRecorder](p)
	if !ok {
		t.Skipf("%T does not implement participants.CommitRecorder", p)
	}
	return rec
}

// wantRecorded checks what p's CommitRecorder says about gid.
func wantRecorded(t *testing.T, p participants.Participant, gid string, want bool) {
	t.Helper()
	got, err := recorder(t, p).Committed(ctx(t), gid)
	if err != nil {
		t.Fatalf("Committed(%s): %v", gid, err)
	}
	if got != want {
		t.Fatalf("Committed(%s) = %v, want %v", gid, got, want)
	}
}

// committedOnePhase: a one-phase commit logs no decision at the
// coordinator; the participant's record is what tells it committed, also
// to a coordinator that restarted (a freshly opened adapter).
func (s *suite) committedOnePhase(t *testing.T) {
	recorder(t, s.p)
	k, gid := s.key("rec1pc"), s.gid("rec1pc")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	if err := b.CommitOnePhase(ctx(t)); err != nil {
		t.Fatalf("CommitOnePhase(%s): %v", gid, err)
	}
	s.wantCommitted(t, k, "v1")
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	wantRecorded(t, p2, gid, true)
	wantRecorded(t, s.p, gid, true)
}

// notCommittedRolledBack: GIDs that never committed anything answer false:
// never begun, rolled back before prepare, and a one-phase commit that
// failed.
func (s *suite) notCommittedRolledBack(t *testing.T) {
	recorder(t, s.p)
	wantRecorded(t, s.p, s.gid("rec_never"), false)

	k, gid := s.key("recrb"), s.gid("recrb")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	if err := b.Rollback(ctx(t)); err != nil {
		t.Fatalf("Rollback(%s): %v", gid, err)
	}
	wantRecorded(t, s.p, gid, false)

	k, bad, gid := s.key("recfail"), s.key("recfail_bad"), s.gid("recfail")
	b = s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	if _, err := b.Execute(ctx(t), s.h.Violation(bad)); err == nil {
		if err := b.CommitOnePhase(ctx(t)); err == nil || errors.Is(err, participants.ErrAmbiguous) {
			t.Fatalf("CommitOnePhase with a constraint violation = %v, want a definite failure", err)
		}
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	wantRecorded(t, p2, gid, false)
}

// committedTwoPhase: a prepared branch is not committed; after
// CommitPrepared (repeated, and through a reopened adapter) it is.
func (s *suite) committedTwoPhase(t *testing.T) {
	recorder(t, s.p)
	k, gid := s.key("rec2pc"), s.gid("rec2pc")
	if receipt := s.writePrepared(t, s.p, gid, k, "v1"); receipt != "" {
		if err := commitReceipt(t, s.p, gid, receipt); err != nil {
			t.Fatalf("CommitPrepared(%s): %v", gid, err)
		}
		t.Skip("two-phase branches give receipts: their commit record is the coordinator's decision log, not Committed")
	}
	// Prepared, not decided: Committed has no final answer yet. false would
	// fence a branch that may still commit; true would be a guess.
	if got, err := recorder(t, s.p).Committed(ctx(t), gid); err == nil {
		t.Fatalf("Committed(%s) of a prepared branch = %v, nil; want an error (not decided yet)", gid, got)
	} else if !errors.Is(err, participants.ErrUnavailable) {
		t.Fatalf("Committed(%s) of a prepared branch: %v; want an error wrapping ErrUnavailable", gid, err)
	}
	if err := s.p.CommitPrepared(ctx(t), gid); err != nil {
		t.Fatalf("CommitPrepared(%s): %v", gid, err)
	}
	wantRecorded(t, s.p, gid, true)
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	if err := p2.CommitPrepared(ctx(t), gid); err != nil {
		t.Fatalf("CommitPrepared(%s) again after reopen: %v", gid, err)
	}
	wantRecorded(t, p2, gid, true)
	s.wantCommitted(t, k, "v1")
}

// notCommittedRollbackPrepared: a prepared branch rolled back, and an
// unknown GID rolled back (an abort tombstone where the adapter writes
// one), answer false.
func (s *suite) notCommittedRollbackPrepared(t *testing.T) {
	recorder(t, s.p)
	k, gid := s.key("recrbp"), s.gid("recrbp")
	s.writePrepared(t, s.p, gid, k, "v1")
	if err := s.p.RollbackPrepared(ctx(t), gid); err != nil {
		t.Fatalf("RollbackPrepared(%s): %v", gid, err)
	}
	wantRecorded(t, s.p, gid, false)
	unknown := s.gid("recrbp_unknown")
	if err := s.p.RollbackPrepared(ctx(t), unknown); err != nil {
		t.Fatalf("RollbackPrepared(unknown %s): %v", unknown, err)
	}
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	wantRecorded(t, p2, gid, false)
	wantRecorded(t, p2, unknown, false)
	s.wantAbsent(t, k)
}

// fenceOnePhase: Committed is a fence. After it answered false for a GID,
// a one-phase commit of that GID fails definitely (not ErrAmbiguous) and
// commits nothing, and the answer stays false.
func (s *suite) fenceOnePhase(t *testing.T) {
	recorder(t, s.p)
	k, gid := s.key("fence1pc"), s.gid("fence1pc")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	wantRecorded(t, s.p, gid, false)
	err := b.CommitOnePhase(ctx(t))
	if err == nil || errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("CommitOnePhase(%s) after Committed answered false = %v; want a definite failure", gid, err)
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	p2 := s.h.Open(t)
	defer closeWithin(t, p2)
	wantRecorded(t, p2, gid, false)
	wantRecorded(t, s.p, gid, false)

	// The same with a branch begun after the fence.
	k, gid = s.key("fence1pc_late"), s.gid("fence1pc_late")
	wantRecorded(t, s.p, gid, false)
	b = s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	if err := b.CommitOnePhase(ctx(t)); err == nil || errors.Is(err, participants.ErrAmbiguous) {
		t.Fatalf("CommitOnePhase(%s) of a GID begun after Committed answered false = %v; want a definite failure", gid, err)
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	wantRecorded(t, s.p, gid, false)
}

// fencePrepare: after Committed answered false for a GID, a prepare of that
// GID votes NO and leaves nothing prepared.
func (s *suite) fencePrepare(t *testing.T) {
	recorder(t, s.p)
	k, gid := s.key("fence2pc"), s.gid("fence2pc")
	b := s.begin(t, s.p, gid)
	mustExec(t, b, s.h.Write(k, "v1"))
	wantRecorded(t, s.p, gid, false)
	v, err := b.Prepare(ctx(t))
	if v == participants.VoteYes {
		receipt := participants.BranchReceipt(b)
		if rerr := s.p.RollbackPrepared(ctx(t), gid); rerr != nil {
			t.Fatalf("RollbackPrepared(%s): %v", gid, rerr)
		}
		if receipt == "" {
			t.Fatalf("Prepare(%s) after Committed answered false voted YES", gid)
		}
		// Receipts: Committed fences one-phase commits only; the late
		// branch, with no commit decision, is rolled back as the
		// coordinator's in-doubt scan would.
		s.wantAbsent(t, k)
		s.wantNotInDoubt(t, s.p, gid)
		t.Skip("two-phase branches give receipts: Committed fences one-phase commits only")
	}
	if v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("Prepare(%s) after Committed answered false = %v, %v; want NO wrapping ErrVoteNo", gid, v, err)
	}
	_ = b.Rollback(ctx(t))
	s.wantAbsent(t, k)
	s.wantNotInDoubt(t, s.p, gid)
	if err := s.p.CommitPrepared(ctx(t), gid); !errors.Is(err, participants.ErrNotPrepared) {
		t.Fatalf("CommitPrepared(%s) of a fenced GID = %v; want ErrNotPrepared", gid, err)
	}
	wantRecorded(t, s.p, gid, false)
}

// cleanup rolls back whatever this run left prepared, through a fresh
// participant. Leftovers after passing cases are a failure.
func (s *suite) cleanup(t *testing.T) {
	p := s.h.Open(t)
	defer closeWithin(t, p)
	list, err := p.InDoubt(ctx(t), s.prefix)
	if err != nil {
		t.Errorf("cleanup: InDoubt(%s): %v", s.prefix, err)
		return
	}
	for _, b := range list {
		if err := p.RollbackPrepared(ctx(t), b.GID); err != nil {
			t.Errorf("cleanup: RollbackPrepared(%s): %v", b.GID, err)
		}
	}
	if len(list) > 0 && !t.Failed() {
		t.Errorf("the run left %d prepared branches: %v", len(list), list)
	}
}

// closeWithin closes p and fails if Close takes longer than callTimeout.
func closeWithin(t testing.TB, p participants.Participant) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(callTimeout):
		t.Errorf("Close did not return within %v", callTimeout)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}
