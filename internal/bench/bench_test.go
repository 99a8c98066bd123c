package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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
	s := drive(context.Background(), 3, 0, 30*time.Millisecond, time.Second, 1,
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
	s = drive(context.Background(), 1, 20*time.Millisecond, time.Millisecond, time.Second, 1,
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

func TestBenchNodeFile(t *testing.T) {
	f := benchNodeFile(validConfig(), "/tmp/b")
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{"cluster_id: bench", "name: pg-a", "dsn: postgres://a", "name: pg-b",
		"dsn: postgres://b", "name: surreal", "listen: 127.0.0.1:7462", "data_dir: /tmp/b/n1", "log_level: warn"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	c := validConfig()
	c.Stores.PGDSNB, c.Stores.SurrealURL = "", ""
	if parts := benchNodeFile(c, "/tmp/b").Participants; len(parts) != 1 {
		t.Fatalf("participants without B and SurrealDB: %+v", parts)
	}
}
