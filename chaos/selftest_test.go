package chaos

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestInjectedBugIsCaught proves the suite catches a broken coordinator: a
// run with Inject "rogue-rollback" (prepared PostgreSQL branches rolled back
// behind the coordinator's back, as a coordinator presuming abort without
// reading its log would) must report atomicity anomalies, and the same run
// without it must not report those. It starts its own databases (ports
// 55442/58042, .data/chaos-selftest) and three coordinators, about two
// minutes in all, so it runs only with TXCHAOS_SELFTEST=1:
//
//	TXCHAOS_SELFTEST=1 go test -run TestInjectedBugIsCaught -timeout 15m ./chaos/
func TestInjectedBugIsCaught(t *testing.T) {
	if os.Getenv("TXCHAOS_SELFTEST") == "" {
		t.Skip("starts databases and a cluster (~2 min): set TXCHAOS_SELFTEST=1")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	run := func(inject string, keep bool) *Report {
		t.Helper()
		o := ShortOptions()
		o.Repo, o.WorkDir = repo, filepath.Join(repo, ".data", "chaos-selftest")
		o.PGPort, o.SurrealPort = 55442, 58042
		o.Duration, o.Seed = 30*time.Second, 7
		// Mild faults, and no one-phase transfers (their status answers are a
		// separate finding), so that only the injected bug can fail the run.
		o.Nemeses = []string{NLinkDelay, NKillFollower, NPartMinority}
		o.OnePhase = false
		o.Inject, o.KeepDatabases = inject, keep
		o.Out = testWriter{t}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		rep, err := Run(ctx, o)
		if err != nil {
			t.Fatalf("run (inject %q): %v", inject, err)
		}
		t.Log(rep.Line())
		return rep
	}
	broken := run("rogue-rollback", true)
	if broken.Injected == 0 {
		t.Fatal("the injected bug never acted (no prepared branch found to roll back)")
	}
	caught := broken.AnomaliesByKind[APartial] + broken.AnomaliesByKind[ALostCommit] + broken.AnomaliesByKind[ATotal]
	if caught == 0 {
		t.Fatalf("a coordinator whose committed branches are rolled back passed the checkers: %v", broken.AnomaliesByKind)
	}
	healthy := run("", false)
	for _, k := range []string{APartial, ALostCommit, AFailedVisible, ADuplicate, ATotal, ABalanceDrift} {
		if n := healthy.AnomaliesByKind[k]; n > 0 {
			t.Errorf("the control run (no injected bug) reports %d %s anomalies: %v", n, k, healthy.AnomalyList)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
