package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participants"
)

func TestFloorSummary(t *testing.T) {
	base := Stats{TPS: 1000}
	r := Result{Workload: "pg-pg", Ack: AckApplied, Concurrency: 32}
	for _, x := range []struct{ tx, floor float64 }{{100, 400}, {150, 300}, {120, 500}} {
		f := Stats{TPS: x.floor}
		r.Rounds = append(r.Rounds, Round{Txcoord: Stats{TPS: x.tx}, Baseline: &base, Ratio: x.tx / 1000, Floor: &f})
	}
	r.summarize()
	if r.Floor == nil || r.Floor.TPS != 400 || r.Ceiling != 0.4 || r.OfFloor != 0.25 {
		t.Fatalf("floor %+v ceiling %v of floor %v; want 400, 0.4, 0.25 (medians of 0.25 0.5 0.24)", r.Floor, r.Ceiling, r.OfFloor)
	}
	if got, want := r.FloorLine(), "floor: workload=pg-pg c=32 floor_tps=400.0 ceiling=0.400 txcoord_of_floor=0.250"; got != want {
		t.Fatalf("FloorLine = %q, want %q", got, want)
	}
	rep := &Report{Settings: Settings{Workloads: []string{"pg-pg", "single"}, Acks: []string{AckApplied}, Floor: true},
		Results: []Result{r, {Workload: "single", Ack: AckApplied, Concurrency: 32}}}
	if lines := rep.FloorLines(); len(lines) != 1 || lines[0] != r.FloorLine() {
		t.Fatalf("FloorLines = %q: want only pg-pg's (single has no floor)", lines)
	}
	if tab := rep.String(); !strings.Contains(tab, "ceiling") || !strings.Contains(tab, "0.400") {
		t.Fatalf("table has no floor section:\n%s", tab)
	}
	// Without a floor nothing is reported for it.
	r.Rounds = []Round{{Txcoord: Stats{TPS: 1}, Baseline: &base}}
	r.summarize()
	if r.Floor != nil || r.FloorLine() != "" {
		t.Fatalf("floor without floor rounds: %+v %q", r.Floor, r.FloorLine())
	}
}

// floorIntegration opens the floor's adapters on the dev databases, or
// skips when their environment is not set.
func floorIntegration(t *testing.T, workloads ...string) (*floorEnv, Config, *pgxpool.Pool, *pgxpool.Pool) {
	t.Helper()
	if os.Getenv("TXCOORD_PG_DSN_A") == "" || os.Getenv("TXCOORD_PG_DSN_B") == "" || os.Getenv("TXCOORD_SURREAL_URL") == "" {
		t.Skip("floor integration test: set the database environment (eval \"$(scripts/pg.sh env)\"; eval \"$(scripts/surreal.sh env)\")")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Workloads, cfg.Accounts = workloads, 4
	cfg.Stores = demo.StoresFromEnv(os.Getenv)
	f, err := openFloor(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	pa, err := demo.OpenPG(ctx, cfg.Stores.PGDSNA, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pa.Close)
	pb, err := demo.OpenPG(ctx, cfg.Stores.PGDSNB, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Close)
	for _, p := range []*pgxpool.Pool{pa, pb} {
		if err := setupPG(ctx, p, cfg.Accounts); err != nil {
			t.Fatal(err)
		}
	}
	return f, cfg, pa, pb
}

func pgTotal(t *testing.T, p *pgxpool.Pool) int64 {
	t.Helper()
	var sum int64
	if err := p.QueryRow(context.Background(), "SELECT COALESCE(sum(balance), 0)::bigint FROM "+pgTable).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

// noneLeftPrepared checks that no floor branch is left prepared.
func noneLeftPrepared(t *testing.T, f *floorEnv) {
	t.Helper()
	for _, p := range f.adapters() {
		left, err := p.InDoubt(context.Background(), f.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != 0 {
			t.Fatalf("%s: floor branches left prepared: %+v", p.Name(), left)
		}
	}
}

func TestFloorTransactions(t *testing.T) {
	f, _, pa, pb := floorIntegration(t, "pg-pg", "single", "pg-surreal")
	ctx := context.Background()
	// Seed the SurrealDB records through the floor itself (one-phase commits).
	for id := range f.accounts {
		tx := f.begin(ctx)
		if _, err := tx.exec(f.surreal, participants.Operation{Kind: participants.OpUpsert,
			Record: participants.RecordID{Table: surrealTable, ID: int64(id)}, Content: map[string]any{"balance": int64(0)}}); err != nil {
			t.Fatal(err)
		}
		if out, err := tx.commit(); out != outOK {
			t.Fatalf("seed %d: %v %v", id, out, err)
		}
	}
	run := func(name string, n int) {
		rnd := rand.New(rand.NewPCG(1, 2))
		for i := range n {
			if out, err := workloads[name].floor(ctx, f, rnd); out != outOK {
				t.Fatalf("%s transaction %d: outcome %v: %v", name, i, out, err)
			}
		}
	}
	run("pg-pg", 12)
	if a, b := pgTotal(t, pa), pgTotal(t, pb); a != -12 || b != 12 {
		t.Fatalf("after 12 pg-pg transfers: totals %d and %d, want -12 and 12", a, b)
	}
	run("single", 5)
	if a := pgTotal(t, pa); a != -7 {
		t.Fatalf("after 5 single credits: total %d, want -7", a)
	}
	run("pg-surreal", 3)
	if a := pgTotal(t, pa); a != -10 {
		t.Fatalf("after 3 pg-surreal transfers: PostgreSQL total %d, want -10", a)
	}
	var sum int64
	for id := range f.accounts {
		tx := f.begin(ctx)
		res, err := tx.exec(f.surreal, participants.Operation{Kind: participants.OpRead, Record: participants.RecordID{Table: surrealTable, ID: int64(id)}})
		if err != nil {
			t.Fatal(err)
		}
		bal, err := floorBalance(res)
		if err != nil {
			t.Fatal(err)
		}
		sum += bal
		_, _ = tx.commit()
	}
	if sum != 3 {
		t.Fatalf("after 3 pg-surreal transfers: SurrealDB total %d, want 3", sum)
	}
	noneLeftPrepared(t, f)
}

func TestFloorNoVoteRollsBack(t *testing.T) {
	f, _, pa, pb := floorIntegration(t, "pg-pg")
	ctx := context.Background()
	tx := f.begin(ctx)
	if err := tx.queue(f.pgA, participants.Operation{Kind: participants.OpSQL, SQL: sqlDebit, Args: []any{int64(1)}}); err != nil {
		t.Fatal(err)
	}
	// A statement that fails at the server: pg-b votes NO, pg-a (prepared)
	// must be rolled back.
	if err := tx.queue(f.pgB, participants.Operation{Kind: participants.OpSQL, SQL: "UPDATE " + pgTable + " SET balance = balance / 0 WHERE id = $1", Args: []any{int64(1)}}); err != nil {
		t.Fatal(err)
	}
	out, err := tx.commit()
	if out != outError || err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("commit with a failing statement = %v, %v; want an error naming division by zero", out, err)
	}
	if a, b := pgTotal(t, pa), pgTotal(t, pb); a != 0 || b != 0 {
		t.Fatalf("totals %d and %d after a NO vote, want 0 and 0", a, b)
	}
	noneLeftPrepared(t, f)
}

// An adapter that cannot open fails openFloor with its participant named,
// and closes the ones already open (no nil adapter is closed).
func TestFloorOpenFailure(t *testing.T) {
	if os.Getenv("TXCOORD_PG_DSN_A") == "" {
		t.Skip("floor integration test: set the database environment (eval \"$(scripts/pg.sh env)\")")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Workloads = []string{"pg-surreal"}
	cfg.Stores = demo.StoresFromEnv(os.Getenv)
	cfg.Stores.SurrealURL = "ws://127.0.0.1:1/rpc" // nothing listens there
	f, err := openFloor(ctx, cfg)
	if err == nil {
		f.close()
		t.Fatal("openFloor with an unreachable SurrealDB succeeded")
	}
	if !strings.Contains(err.Error(), "participant "+cfg.Surreal) {
		t.Fatalf("error does not name the participant: %v", err)
	}
}

func TestFloorPID(t *testing.T) {
	for gid, want := range map[string]int{
		"txbench-floor:1234:7:pg-a": 1234,
		"txbench-floor:x:7:pg-a":    0,
		"txbench-floor:1234":        0,
		"txc:bench:01J:pg-a":        0,
	} {
		pid, ok := floorPID(gid)
		if pid != want || ok != (want > 0) {
			t.Errorf("floorPID(%q) = %d, %v; want %d", gid, pid, ok, want)
		}
	}
}

// A floor branch left prepared by a txbench that is gone is rolled back
// when the next run opens the floor; one of a live process is left alone.
func TestFloorRollsBackAbandonedBranches(t *testing.T) {
	f, _, _, _ := floorIntegration(t, "single")
	ctx := context.Background()
	dead := 0
	for pid := 4_000_000; pid < 4_000_100; pid++ {
		if !processAlive(pid) {
			dead = pid
			break
		}
	}
	if dead == 0 {
		t.Skip("no free pid found to stand for a finished run")
	}
	prepare := func(gid string, id int64) { // distinct rows: a prepared branch keeps its row locked
		t.Helper()
		b, err := f.pgA.Begin(ctx, gid, participants.BranchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Execute(ctx, participants.Operation{Kind: participants.OpSQL, SQL: sqlCredit, Args: []any{id}}); err != nil {
			t.Fatal(err)
		}
		if v, err := b.Prepare(ctx); v != participants.VoteYes || err != nil {
			t.Fatalf("prepare %s: %v %v", gid, v, err)
		}
	}
	abandoned := fmt.Sprintf("%s:%d:1:%s", floorGIDPrefix, dead, f.pgA.Name())
	live := fmt.Sprintf("%s:%d:2:%s", floorGIDPrefix, os.Getppid(), f.pgA.Name()) // the test's parent process is alive
	prepare(abandoned, 1)
	prepare(live, 2)
	t.Cleanup(func() { _ = f.pgA.RollbackPrepared(context.Background(), live) })
	f.rollbackAbandoned(ctx)
	left, err := f.pgA.InDoubt(ctx, floorGIDPrefix+":")
	if err != nil {
		t.Fatal(err)
	}
	var gids []string
	for _, b := range left {
		gids = append(gids, b.GID)
	}
	if slices.Contains(gids, abandoned) || !slices.Contains(gids, live) {
		t.Fatalf("after rollbackAbandoned, prepared floor branches: %v; want %s gone and %s kept", gids, abandoned, live)
	}
}
