package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", durations(7), 99, 7 * time.Millisecond},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p95 of 100", hundred, 95, 95 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p100 of 100", hundred, 100, 100 * time.Millisecond},
		{"p50 of 4 (nearest rank)", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 4", durations(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{"tiny p", durations(1, 2, 3), 0.0001, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p%g) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := summarize(durations(30, 10, 20, 40), 2, 1, 2*time.Second)
	want := Stats{Ops: 4, Aborts: 2, Errors: 1, Seconds: 2, TPS: 2, P50Ms: 20, P95Ms: 40, P99Ms: 40, MaxMs: 40}
	if s != want {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
	if z := summarize(nil, 0, 0, 0); z.TPS != 0 || z.MaxMs != 0 {
		t.Fatalf("empty: %+v", z)
	}
}

func TestResultLine(t *testing.T) {
	r := Result{Workload: "pg-surreal", Concurrency: 8,
		Txcoord:  Stats{TPS: 123.456, P50Ms: 5.5, P99Ms: 31.25},
		Baseline: &Stats{TPS: 1000}, Ratio: 0.123456}
	want := "bench: workload=pg-surreal c=8 txcoord_tps=123.5 baseline_tps=1000.0 ratio=0.123 p50_ms=5.50 p99_ms=31.25"
	if got := r.Line(); got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	r.Baseline, r.Ratio = nil, 0
	if got := r.Line(); !strings.Contains(got, "baseline_tps=0.0 ratio=0.000") {
		t.Fatalf("without baseline: %s", got)
	}
	if ratio(5, 0) != 0 || ratio(1, 4) != 0.25 {
		t.Fatal("ratio")
	}
}

func TestClassify(t *testing.T) {
	if o, err := classify(nil); o != outOK || err != nil {
		t.Fatal("nil")
	}
	if o, _ := classify(fmt.Errorf("commit: %w", client.ErrAborted)); o != outAborted {
		t.Fatal("aborted")
	}
	if o, _ := classify(fmt.Errorf("commit: %w", client.ErrOutcomeUnknown)); o != outError {
		t.Fatal("unknown outcome must not count as an abort")
	}
	if o, _ := classify(errors.New("boom")); o != outError {
		t.Fatal("plain error")
	}
	if o, _ := classify(context.DeadlineExceeded); o != outError {
		t.Fatal("deadline")
	}
}

// TestDrive: every operation is counted once, by its outcome; the warm-up's
// are not counted.
func TestDrive(t *testing.T) {
	var calls atomic.Int64
	s := drive(context.Background(), 3, 0, 30*time.Millisecond, time.Second, 1, 0, nil,
		func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
			switch calls.Add(1) % 3 {
			case 0:
				return outAborted, errors.New("aborted")
			case 1:
				return outError, errors.New("first")
			}
			time.Sleep(time.Millisecond)
			return outOK, nil
		})
	if total := int64(s.Ops + s.Aborts + s.Errors); total != calls.Load() || s.Ops == 0 || s.Errors == 0 || s.Aborts == 0 {
		t.Fatalf("stats %+v after %d calls", s, calls.Load())
	}
	if s.FirstError != "first" {
		t.Fatalf("first error %q", s.FirstError)
	}

	calls.Store(0)
	s = drive(context.Background(), 1, 20*time.Millisecond, time.Millisecond, time.Second, 1, 0, nil,
		func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
			calls.Add(1)
			time.Sleep(time.Millisecond)
			return outOK, nil
		})
	if int64(s.Ops) >= calls.Load() {
		t.Fatalf("warm-up operations counted: %d ops of %d calls", s.Ops, calls.Load())
	}
}

func validConfig() Config {
	c := DefaultConfig()
	c.Stores = demo.Stores{PGDSNA: "postgres://a", PGDSNB: "postgres://b", SurrealURL: "ws://127.0.0.1:58000/rpc",
		SurrealUser: "root", SurrealPass: "root", SurrealNS: "txcoord", SurrealDB: "test"}
	return c
}

func TestValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid: %v", err)
	}
	c := validConfig()
	c.Workloads = []string{"pg-pg", "nope"}
	c.Stores.PGDSNB = ""
	c.Concurrency = []int{0}
	err := c.Validate()
	for _, want := range []string{`workload "nope"`, "TXCOORD_PG_DSN_B", "concurrency 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	c = validConfig()
	c.Phases = maxPhaseSample + 1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "phases") {
		t.Errorf("--phases past the leader's kept timelines: %v", err)
	}
	c = validConfig()
	c.Workloads = []string{"single"}
	c.Stores.SurrealURL, c.Stores.PGDSNB = "", ""
	if err := c.Validate(); err != nil {
		t.Fatalf("single needs only database A: %v", err)
	}
}

func TestNeeds(t *testing.T) {
	c := validConfig()
	c.Workloads = []string{"single"}
	if !c.needs("a") || c.needs("b") || c.needs("surreal") {
		t.Fatal("single")
	}
	c.Workloads = []string{"pg-pg", "pg-surreal"}
	if !c.needs("b") || !c.needs("surreal") {
		t.Fatal("pg-pg, pg-surreal")
	}
}

// TestDriveRetries: an aborted operation is run again with the same random
// choices; retries and aborts are counted, and an operation that aborts on
// every attempt is counted as failed.
func TestDriveRetries(t *testing.T) {
	var mu sync.Mutex
	seen := map[uint64]int{} // first random number of an attempt → attempts
	s := drive(context.Background(), 2, 0, 30*time.Millisecond, time.Second, 7, 2, nil,
		func(ctx context.Context, worker int, rnd *rand.Rand) (outcome, error) {
			k := rnd.Uint64()
			mu.Lock()
			seen[k]++
			n := seen[k]
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			if k%2 == 0 || n < 2 { // even keys always abort, odd ones once
				return outAborted, client.ErrAborted
			}
			return outOK, nil
		})
	if s.Ops == 0 || s.Failed == 0 || s.Retries == 0 {
		t.Fatalf("stats %+v", s)
	}
	for k, n := range seen {
		if k%2 == 0 && n > 3 {
			t.Fatalf("key %d attempted %d times with 2 retries", k, n)
		}
	}
	if s.Aborts != s.Retries+s.Failed {
		t.Fatalf("aborts %d != retries %d + failed %d", s.Aborts, s.Retries, s.Failed)
	}
}

func TestMedians(t *testing.T) {
	r := Result{Workload: "pg-pg", Ack: AckApplied, Concurrency: 32}
	for _, x := range []struct{ tx, base float64 }{{100, 400}, {300, 500}, {200, 1000}} {
		b := Stats{TPS: x.base, P50Ms: x.base / 100}
		r.Rounds = append(r.Rounds, Round{Txcoord: Stats{TPS: x.tx, P50Ms: x.tx / 10, Ops: int(x.tx)}, Baseline: &b, Ratio: x.tx / x.base})
	}
	r.summarize()
	if r.Txcoord.TPS != 200 || r.Txcoord.P50Ms != 20 || r.Txcoord.Ops != 200 || r.Baseline.TPS != 500 {
		t.Fatalf("medians %+v %+v", r.Txcoord, r.Baseline)
	}
	// Ratios 0.25, 0.6, 0.2: the median ratio, not the ratio of medians.
	if r.Ratio != 0.25 || r.RatioMin != 0.2 || r.RatioMax != 0.6 {
		t.Fatalf("ratio %v (%v-%v)", r.Ratio, r.RatioMin, r.RatioMax)
	}
	if median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Fatal("median")
	}
}

func TestFinalLines(t *testing.T) {
	rep := &Report{Settings: Settings{Workloads: []string{"pg-pg", "single"}, Acks: []string{AckDecision, AckApplied}}}
	for _, w := range []string{"pg-pg", "single"} {
		for _, ack := range []string{AckDecision, AckApplied} {
			for _, c := range []int{1, 16, 32, 64} {
				rep.Results = append(rep.Results, Result{Workload: w, Ack: ack, Concurrency: c, Txcoord: Stats{TPS: float64(c)}})
			}
		}
	}
	lines := rep.FinalLines()
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "bench: workload=pg-pg c=32 txcoord_tps=32.0 ") ||
		!strings.HasPrefix(lines[1], "bench: workload=single c=32 ") {
		t.Fatalf("lines %q", lines)
	}
	rep.Results = rep.Results[:2] // pg-pg decision at c=1 and 16 only
	rep.Settings.Acks = []string{AckDecision}
	if lines := rep.FinalLines(); len(lines) != 1 || !strings.Contains(lines[0], " c=16 ") {
		t.Fatalf("without c=32: %q", lines)
	}
}

func TestNodeFile(t *testing.T) {
	dir := t.TempDir()
	f := nodeFile{NodeID: "n2", ClusterID: "bench", Listen: "127.0.0.1:7482", DataDir: dir + "/n2",
		Raft:         nodeRaft{Bind: "127.0.0.1:7582", Bootstrap: true, Peers: []nodePeer{{ID: "n1", Raft: "r1", GRPC: "g1"}, {ID: "n2", Raft: "r2", GRPC: "g2"}}},
		Participants: []demo.NodeParticipant{demo.PostgresParticipant("pg-a", "postgres://a")},
		Coordinator:  nodeCoordinator{MaxActive: 10000}, LogLevel: "warn"}
	if err := f.write(dir + "/n2.yaml"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dir + "/n2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{"node_id: n2", "cluster_id: bench", "max_active: 10000", "name: pg-a", "dsn: postgres://a",
		"listen: 127.0.0.1:7482", "bind: 127.0.0.1:7582", "id: n1", "log_level: warn"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
}

func TestProcStat(t *testing.T) {
	pid := os.Getpid()
	for i := 0; i < 2_000_000; i++ { // burn a little CPU
		_ = fmt.Sprint(i)
	}
	cpu, err := procCPU(pid, false)
	if err != nil || cpu <= 0 {
		t.Fatalf("cpu %v, %v", cpu, err)
	}
	if rss, err := procRSS(pid); err != nil || rss < 1<<20 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	if ppid, err := procPPID(pid); err != nil || ppid != os.Getppid() {
		t.Fatalf("ppid %d, %v", ppid, err)
	}
	if procHWM(pid) <= 0 {
		t.Fatal("hwm")
	}
	m := newMonitor([]int{pid}, 0, 0, 0)
	m.start()
	time.Sleep(150 * time.Millisecond)
	u := m.stop()
	if u.LeaderPeakRSSMiB <= 0 || u.PeakRSSMiB != u.LeaderPeakRSSMiB {
		t.Fatalf("usage %+v", u)
	}
}

func TestPorts(t *testing.T) {
	if dsnPort("postgres://u@127.0.0.1:55432/db?sslmode=disable") != 55432 || dsnPort("host=x port=6543 dbname=y") != 6543 ||
		dsnPort("host=x") != 5432 || urlPort("ws://127.0.0.1:58000/rpc") != 58000 {
		t.Fatal("ports")
	}
}

func TestChart(t *testing.T) {
	rep := &Report{Settings: Settings{Workloads: []string{"pg-pg"}, Concurrency: []int{1, 8, 32}, Acks: []string{AckApplied, AckDecision}}}
	for _, ack := range []string{AckApplied, AckDecision} {
		for _, c := range []int{1, 8, 32} {
			rep.Results = append(rep.Results, Result{Workload: "pg-pg", Ack: ack, Concurrency: c,
				Txcoord: Stats{TPS: float64(10 * c), P99Ms: 5}, Baseline: &Stats{TPS: float64(30 * c), P99Ms: 2},
				Floor: &Stats{TPS: float64(20 * c), P99Ms: 3}})
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteChart(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("\x89PNG")) {
		t.Fatal("not a PNG")
	}
	var table strings.Builder
	rep.WriteTable(&table)
	if !strings.Contains(table.String(), "pg-pg") {
		t.Fatalf("table:\n%s", table.String())
	}
}
