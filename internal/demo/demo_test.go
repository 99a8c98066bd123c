package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/node"
)

func TestSummaryLine(t *testing.T) {
	s := Summary{Transfers: 400, Committed: 250, Aborted: 130, UnknownResolved: 20,
		TotalBefore: 40000, TotalAfter: 40000, PGPreparedLeft: 0, SurrealIntentsLeft: 1}
	want := "demo: transfers=400 committed=250 aborted=130 unknown_resolved=20 total_before=40000 total_after=40000 pg_prepared_left=0 surreal_intents_left=1"
	if got := s.Line(); got != want {
		t.Fatalf("Line()\n got %s\nwant %s", got, want)
	}
}

func TestSummaryProblems(t *testing.T) {
	ok := Summary{Transfers: 10, Committed: 5, Aborted: 3, UnknownResolved: 2, TotalBefore: 100, TotalAfter: 100}
	tests := []struct {
		name   string
		mutate func(*Summary)
		want   string // substring of the only problem; "" = pass
	}{
		{"pass", func(*Summary) {}, ""},
		{"totals differ", func(s *Summary) { s.TotalAfter = 99 }, "total balance changed"},
		{"pg prepared left", func(s *Summary) { s.PGPreparedLeft = 2 }, "prepared PostgreSQL"},
		{"intents left", func(s *Summary) { s.SurrealIntentsLeft = 1 }, "SurrealDB intent"},
		{"account off", func(s *Summary) { s.AccountsMismatched = []string{"pg:p001 have 1 want 2"} }, "account(s) differ"},
		{"unresolved", func(s *Summary) { s.UnknownResolved, s.Unresolved = 1, 1 }, "still unknown"},
		{"not run", func(s *Summary) { s.Committed, s.NotRun = 4, 1 }, "never ran"},
		{"accounting", func(s *Summary) { s.Committed = 4 }, "accounting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mutate(&s)
			p := s.Problems()
			if tt.want == "" {
				if len(p) != 0 || !s.OK() {
					t.Fatalf("want pass, got %q", p)
				}
				return
			}
			if len(p) != 1 || !strings.Contains(p[0], tt.want) || s.OK() {
				t.Fatalf("want one problem containing %q, got %q", tt.want, p)
			}
		})
	}
}

func TestReportEndsWithLine(t *testing.T) {
	s := Summary{Transfers: 3, Committed: 1, Aborted: 1, UnknownResolved: 1, UnknownAborted: 1,
		AbortReasons: map[string]int{reasonOverdraft: 1}, TotalBefore: 10, TotalAfter: 10}
	var b bytes.Buffer
	s.Report(&b)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != s.Line() {
		t.Fatalf("last line %q, want %q", last, s.Line())
	}
	if !strings.Contains(b.String(), "PASS") {
		t.Fatalf("report of a passing run says no PASS:\n%s", b.String())
	}
}

func TestFormatReasons(t *testing.T) {
	got := formatReasons(map[string]int{reasonError: 1, "zzz": 2, reasonOverdraft: 30, reasonConflict: 0, reasonCoordinator: 4,
		"conflict@surreal": 5, "conflict@pg": 1})
	want := "overdraft 30, conflict@pg 1, conflict@surreal 5, coordinator-lost 4, error 1, zzz 2"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestPlan(t *testing.T) {
	const n, accounts, maxAmount, initial = 2000, 20, 300, 1000
	p := plan(7, n, accounts, maxAmount, initial, 0.1)
	if !reflect.DeepEqual(p, plan(7, n, accounts, maxAmount, initial, 0.1)) {
		t.Fatal("plan is not deterministic for a seed")
	}
	over, toSurreal := 0, 0
	for i, tr := range p {
		if tr.Seq != i+1 {
			t.Fatalf("transfer %d has seq %d", i, tr.Seq)
		}
		if tr.PGID < pgAccountID(0) || tr.PGID > pgAccountID(accounts-1) ||
			tr.SurrealID < surrealAccountID(0) || tr.SurrealID > surrealAccountID(accounts-1) {
			t.Fatalf("transfer %v names an account outside 0..%d", tr, accounts-1)
		}
		switch {
		case tr.Amount >= 1 && tr.Amount <= maxAmount:
		case tr.Amount > initial && tr.Amount <= 3*initial:
			over++
		default:
			t.Fatalf("transfer %v: amount out of range", tr)
		}
		if tr.ToSurreal {
			toSurreal++
		}
	}
	// 10% of 2000 drawn; far outside [100, 300] would mean the rate is ignored.
	if over < 100 || over > 300 {
		t.Fatalf("%d overdraft amounts in %d, want about 10%%", over, n)
	}
	if toSurreal < n/3 || toSurreal > 2*n/3 {
		t.Fatalf("%d of %d transfers go to SurrealDB, want about half", toSurreal, n)
	}
	if none := plan(1, 100, 5, 10, 1000, 0); len(none) != 100 {
		t.Fatal("wrong length")
	} else {
		for _, tr := range none {
			if tr.Amount > 10 {
				t.Fatalf("overdraft amount %d with rate 0", tr.Amount)
			}
		}
	}
}

func TestIntField(t *testing.T) {
	tests := []struct {
		name    string
		res     *client.Result
		want    int64
		wantErr string
	}{
		{"column", &client.Result{Columns: []string{"balance", "id"}, Rows: [][]any{{int64(42), "s001"}}}, 42, ""},
		{"float column", &client.Result{Columns: []string{"balance"}, Rows: [][]any{{float64(7)}}}, 7, ""},
		{"record map", &client.Result{Columns: []string{"record"}, Rows: [][]any{{map[string]any{"balance": int64(5)}}}}, 5, ""},
		{"missing record", &client.Result{}, 0, "not found"},
		{"nil", nil, 0, "not found"},
		{"no field", &client.Result{Columns: []string{"x"}, Rows: [][]any{{int64(1)}}}, 0, "no balance"},
		{"not integer", &client.Result{Columns: []string{"balance"}, Rows: [][]any{{"ten"}}}, 0, "not an integer"},
		{"fraction", &client.Result{Columns: []string{"balance"}, Rows: [][]any{{1.5}}}, 0, "not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IntField(tt.res, "balance")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestCompareAccounts(t *testing.T) {
	pgStart := map[string]int64{"p000": 100, "p001": 100}
	sStart := map[string]int64{"s000": 100}
	delta := map[string]int64{"pg:p000": -30, "surreal:s000": 30}
	n, bad := compareAccounts(pgStart, sStart, map[string]int64{"p000": 70, "p001": 100}, map[string]int64{"s000": 130}, delta)
	if n != 3 || len(bad) != 0 {
		t.Fatalf("consistent run: checked %d, mismatches %q", n, bad)
	}
	_, bad = compareAccounts(pgStart, sStart, map[string]int64{"p000": 70, "p002": 1}, map[string]int64{"s000": 100}, delta)
	want := []string{"pg:p001 missing at the end (want 100)", "pg:p002 appeared during the run", "surreal:s000 have 100 want 130"}
	if !reflect.DeepEqual(bad, want) {
		t.Fatalf("mismatches\n got %q\nwant %q", bad, want)
	}
}

func TestChildEnv(t *testing.T) {
	env := []string{"PATH=/bin", "TXCOORD_DATA_DIR=/repo/.data", "TXCOORD_LISTEN=x", "TXCOORD_SURREAL_PASS=old", "TXCOORD_PG_DSN_A=dsn"}
	got := ChildEnv(env, "TXCOORD_SURREAL_PASS=root")
	want := []string{"PATH=/bin", "TXCOORD_PG_DSN_A=dsn", "TXCOORD_SURREAL_PASS=root"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestInt64(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want int64
		ok   bool
	}{
		{int64(-3), -3, true}, {uint64(9), 9, true}, {uint64(1 << 63), 0, false}, {float64(2), 2, true},
		{2.5, 0, false}, {"1", 0, false}, {nil, 0, false}, {int(4), 4, true},
	} {
		got, ok := Int64(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Int64(%#v) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func testConfig() Config {
	c := DefaultConfig()
	c.WorkDir = "/tmp/demo-work"
	c.Stores = Stores{PGDSNA: "postgres://txcoord@127.0.0.1:55432/txcoord_a?sslmode=disable",
		SurrealURL: "ws://127.0.0.1:58000/rpc", SurrealUser: "root", SurrealPass: "secret",
		SurrealNS: "txcoord", SurrealDB: "test"}
	return c
}

func TestNodeFile(t *testing.T) {
	cfg := testConfig()
	b, err := cfg.nodeFile().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Contains(text, "secret") {
		t.Fatalf("the password is in the config file:\n%s", text)
	}
	for _, want := range []string{
		"cluster_id: demo", "listen: 127.0.0.1:7461", "bind: 127.0.0.1:7561", "bootstrap: true",
		"data_dir: /tmp/demo-work/n1", "name: pg", "kind: postgres", "dsn: postgres://txcoord@127.0.0.1:55432/txcoord_a?sslmode=disable",
		"name: surreal", "kind: surrealdb", "url: ws://127.0.0.1:58000/rpc", "namespace: txcoord",
		"database: test", "username: root", "password_env: TXCOORD_SURREAL_PASS", "recovery_interval: 1s",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if cfg.gidPrefix() != "txc:demo:" {
		t.Errorf("gid prefix %q", cfg.gidPrefix())
	}
}

// TestNodeFileLoads: txcoord itself reads the generated file (unknown keys
// are errors there) and finds it valid.
func TestNodeFileLoads(t *testing.T) {
	cfg := testConfig()
	path := filepath.Join(t.TempDir(), "txcoord.yaml")
	if err := cfg.nodeFile().Write(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi, err)
	}
	nc, err := node.Load(path)
	if err != nil {
		t.Fatalf("node.Load: %v", err)
	}
	if err := nc.Validate(); err != nil {
		t.Fatalf("node config invalid: %v", err)
	}
	if nc.Listen != cfg.Listen || nc.ClusterID != "demo" || len(nc.Participants) != 2 ||
		nc.Participants[1].PasswordEnv != SurrealPasswordEnv {
		t.Fatalf("loaded %+v", nc)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	c := testConfig()
	c.Stores.PGDSNA, c.Workers, c.KillAt = "", 0, 1
	err := c.Validate()
	for _, want := range []string{"TXCOORD_PG_DSN_A", "workers 0", "kill-at 1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestKillPoint(t *testing.T) {
	c := testConfig()
	if got := killPoint(c, 400); got != 160 {
		t.Errorf("kill point %d, want 160", got)
	}
	c.KillAt = 0
	if got := killPoint(c, 400); got != 0 {
		t.Errorf("kill point with kill-at 0: %d", got)
	}
	c.KillAt = 0.001
	if got := killPoint(c, 10); got != 1 {
		t.Errorf("kill point rounds to %d, want at least 1", got)
	}
}
