package demo

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/node"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

func TestSummaryLine(t *testing.T) {
	s := Summary{Transfers: 400, Committed: 250, Aborted: 130, UnknownResolved: 20,
		TotalBefore: 40000, TotalAfter: 40000, PGPreparedLeft: 0, SurrealIntentsLeft: 1,
		Nodes: 3, Elections: 1, Failover: 1295*time.Millisecond + 400*time.Microsecond, FailoverSeen: true,
		InDoubt: &InDoubtWatch{Cleared: true, ClearAfter: 1098 * time.Millisecond}}
	want := "demo: transfers=400 committed=250 aborted=130 unknown_resolved=20 total_before=40000 total_after=40000 pg_prepared_left=0 surreal_intents_left=1 nodes=3 elections=1 failover_ms=1295 in_doubt_clear_ms=1098"
	if got := s.Line(); got != want {
		t.Fatalf("Line()\n got %s\nwant %s", got, want)
	}
	// Not cleared (or no kill): in_doubt_clear_ms is 0, and Problems says why.
	s.InDoubt.Cleared = false
	if got := s.Line(); !strings.HasSuffix(got, " in_doubt_clear_ms=0") {
		t.Fatalf("Line() of an uncleared watch: %s", got)
	}
	none := Summary{Nodes: 1}
	if got := none.Line(); !strings.HasSuffix(got, " nodes=1 elections=0 failover_ms=0 in_doubt_clear_ms=0") {
		t.Fatalf("Line() without a kill: %s", got)
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
		{"kill without a later commit", func(s *Summary) {
			s.Kill, s.InDoubt = &KillEvent{}, &InDoubtWatch{Cleared: true}
		}, "failover not shown"},
		{"kill, in doubt not cleared", func(s *Summary) {
			s.Kill, s.FailoverSeen, s.InDoubt = &KillEvent{}, true, &InDoubtWatch{}
		}, "never seen cleared"},
		{"kill, no watch", func(s *Summary) { s.Kill, s.FailoverSeen = &KillEvent{}, true }, "never seen cleared"},
		{"digests differ", func(s *Summary) { s.DigestProblem = "decision stores differ" }, "store digests"},
	}
	killed := ok
	killed.Kill, killed.FailoverSeen, killed.InDoubt = &KillEvent{}, true, &InDoubtWatch{Cleared: true}
	if p := killed.Problems(); len(p) != 0 {
		t.Fatalf("a kill with failover and a cleared watch: %q", p)
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
		AbortReasons: map[string]int{reasonOverdraft: 1}, TotalBefore: 10, TotalAfter: 10, Nodes: 3,
		Kill: &KillEvent{Node: "n1", Term: 2, NewLeader: "n2", NewTerm: 3, Restarted: true,
			Rejoined: &catchUp{Node: "n1", Leader: "n2", Term: 3, Applied: 10, Target: 9, LeaderCommit: 12}},
		Leaders:      []termLeader{{Term: 2, ID: "n1"}, {Term: 3, ID: "n2"}},
		Elections:    1,
		FailoverSeen: true, Failover: time.Second,
		InDoubt: &InDoubtWatch{Cleared: true, AtKill: inDoubtCount{PG: 1, Surreal: 1, Open: 1, TxIDs: []string{"a"}}},
		Digests: []NodeDigest{{Node: "n1", Applied: 5, SHA256: "ab"}, {Node: "n2", Applied: 5, SHA256: "ab"}}}
	var b bytes.Buffer
	s.Report(&b)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != s.Line() {
		t.Fatalf("last line %q, want %q", last, s.Line())
	}
	for _, want := range []string{"PASS", "SIGKILL of leader n1 (term 2", "n2 leads term 3", "elections           1 after the kill (term:leader 3:n2",
		"follower of n2 in term 3, applied index 10 ≥ 9", "store digests       equal on n1,n2 at applied index 5"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
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

// TestNodeFile: with one node the demo writes the single-node file it
// always wrote (same data dir, no peers).
func TestNodeFile(t *testing.T) {
	cfg := testConfig()
	cfg.Nodes = 1
	b, err := cfg.nodeFile(0).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Contains(text, "secret") {
		t.Fatalf("the password is in the config file:\n%s", text)
	}
	for _, want := range []string{
		"node_id: n1", "cluster_id: demo", "listen: 127.0.0.1:7461", "bind: 127.0.0.1:7561", "bootstrap: true",
		"data_dir: /tmp/demo-work/n1", "name: pg", "kind: postgres", "dsn: postgres://txcoord@127.0.0.1:55432/txcoord_a?sslmode=disable",
		"name: surreal", "kind: surrealdb", "url: ws://127.0.0.1:58000/rpc", "namespace: txcoord",
		"database: test", "username: root", "password_env: TXCOORD_SURREAL_PASS", "recovery_interval: 1s",
		"heartbeat_timeout: 500ms", "election_timeout: 500ms", "console:\n    enabled: true\n    listen: 127.0.0.1:7761",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "peers") {
		t.Errorf("single-node config lists peers:\n%s", text)
	}
	if cfg.gidPrefix() != "txc:demo:" {
		t.Errorf("gid prefix %q", cfg.gidPrefix())
	}
	if cfg.configPath(0) != "/tmp/demo-work/n1.yaml" || cfg.logPath(0) != "/tmp/demo-work/n1.log" {
		t.Errorf("paths %s %s", cfg.configPath(0), cfg.logPath(0))
	}
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 0, 0
	if b, _ := cfg.nodeFile(0).Marshal(); strings.Contains(string(b), "timeout: ") && strings.Contains(string(b), "heartbeat") {
		t.Errorf("0 timeouts are written:\n%s", b)
	}
}

// TestNodeFileLoads: txcoord itself reads every generated file (unknown
// keys are errors there) and finds it valid; the nodes of a cluster share
// one peers list and differ in id, addresses and data dir.
func TestNodeFileLoads(t *testing.T) {
	for _, nodes := range []int{1, 3, 5} {
		cfg := testConfig()
		cfg.Nodes = nodes
		cfg.WorkDir = t.TempDir()
		var first []node.PeerConfig
		for i := range nodes {
			path := cfg.configPath(i)
			if err := cfg.nodeFile(i).Write(path); err != nil {
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
				t.Fatalf("%d nodes, node %d: config invalid: %v", nodes, i, err)
			}
			p, _ := cfg.peers()
			if nc.NodeID != p[i].ID || nc.Listen != p[i].GRPC || nc.Raft.Bind != p[i].Raft || nc.DataDir != cfg.dataDir(i) ||
				nc.ClusterID != "demo" || len(nc.Participants) != 2 || nc.Participants[1].PasswordEnv != SurrealPasswordEnv ||
				!nc.Raft.Bootstrap || time.Duration(nc.Raft.HeartbeatTimeout) != 500*time.Millisecond ||
				!nc.Console.Enabled || nc.Console.Listen != cfg.consoleAddr(i) {
				t.Fatalf("%d nodes, node %d: loaded %+v", nodes, i, nc)
			}
			if nodes == 1 {
				if len(nc.Raft.Peers) != 0 {
					t.Fatalf("single node has peers %v", nc.Raft.Peers)
				}
				continue
			}
			if len(nc.Raft.Peers) != nodes {
				t.Fatalf("node %d: %d peers, want %d", i, len(nc.Raft.Peers), nodes)
			}
			if i == 0 {
				first = nc.Raft.Peers
			} else if !reflect.DeepEqual(nc.Raft.Peers, first) {
				t.Fatalf("node %d peers %v differ from node 0's %v", i, nc.Raft.Peers, first)
			}
		}
	}
}

func TestPeers(t *testing.T) {
	cfg := testConfig()
	p, err := cfg.peers()
	if err != nil {
		t.Fatal(err)
	}
	want := []NodePeer{
		{ID: "n1", Raft: "127.0.0.1:7561", GRPC: "127.0.0.1:7461"},
		{ID: "n2", Raft: "127.0.0.1:7562", GRPC: "127.0.0.1:7462"},
		{ID: "n3", Raft: "127.0.0.1:7563", GRPC: "127.0.0.1:7463"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("peers %v, want %v", p, want)
	}
	for _, tt := range []struct {
		listen, raft string
		nodes        int
		err          string
	}{
		{"127.0.0.1:7461", "127.0.0.1:7463", 3, "overlap"},
		{"127.0.0.1:7461", "127.0.0.1:7464", 3, ""},
		{"127.0.0.1:7461", "127.0.0.2:7462", 3, ""}, // other host: no clash
		{"127.0.0.1:65534", "127.0.0.1:7561", 3, "room for 3"},
		{"localhost", "127.0.0.1:7561", 3, "listen"},
		{"127.0.0.1:7461", "127.0.0.1:x", 1, "raft-bind"},
	} {
		c := testConfig()
		c.Listen, c.RaftBind, c.Nodes = tt.listen, tt.raft, tt.nodes
		_, err := c.peers()
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("peers(%s, %s, %d) error %v, want %q", tt.listen, tt.raft, tt.nodes, err, tt.err)
		}
		if tt.err != "" && c.Validate() == nil {
			t.Errorf("Validate accepts %s %s", tt.listen, tt.raft)
		}
	}
}

func TestClusterDir(t *testing.T) {
	c := testConfig()
	if c.clusterDir() != "/tmp/demo-work/cluster3" || c.dataDir(2) != "/tmp/demo-work/cluster3/n3" ||
		c.configPath(1) != "/tmp/demo-work/cluster3/n2.yaml" || c.logPath(0) != "/tmp/demo-work/cluster3/n1.log" {
		t.Fatalf("3-node paths: %s %s %s %s", c.clusterDir(), c.dataDir(2), c.configPath(1), c.logPath(0))
	}
	c.Nodes = 1 // where the single-node demo always kept its data
	if c.clusterDir() != "/tmp/demo-work" || c.dataDir(0) != "/tmp/demo-work/n1" {
		t.Fatalf("1-node paths: %s %s", c.clusterDir(), c.dataDir(0))
	}
}

func TestCheckLayout(t *testing.T) {
	c := testConfig()
	c.WorkDir = t.TempDir()
	if err := os.MkdirAll(c.clusterDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkLayout(c); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if err := checkLayout(c); err != nil {
		t.Fatalf("same layout again: %v", err)
	}
	c.RaftBind = "127.0.0.1:7661"
	err := checkLayout(c)
	if err == nil || !strings.Contains(err.Error(), "another cluster layout") || !strings.Contains(err.Error(), "raft=127.0.0.1:7561") {
		t.Fatalf("changed addresses: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	c := testConfig()
	c.Stores.PGDSNA, c.Workers, c.KillAt, c.Nodes, c.ElectionWait = "", 0, 1, 2, 0
	err := c.Validate()
	for _, want := range []string{"TXCOORD_PG_DSN_A", "workers 0", "kill-at 1", "nodes 2", "election-wait"} {
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

func TestTxidOfGID(t *testing.T) {
	for _, tt := range []struct {
		gid, txid string
		ok        bool
	}{
		{"txc:demo:01a2153349664e11d525:surreal", "01a2153349664e11d525", true},
		{"txc:demo:01a2153349664e11d525:pg", "01a2153349664e11d525", true},
		{"txc:other:01a2153349664e11d525:pg", "", false},
		{"txc:demo:", "", false},
		{"txc:demo:abc", "", false},
	} {
		got, ok := txidOfGID("txc:demo:", tt.gid)
		if got != tt.txid || ok != tt.ok {
			t.Errorf("txidOfGID(%q) = %q, %v; want %q, %v", tt.gid, got, ok, tt.txid, tt.ok)
		}
	}
}

// TestFailoverInDoubt: only transfers begun before the kill count; their
// branches count until gone, and they stay open until their outcome is known.
func TestFailoverInDoubt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := newFailover("txc:demo:")
	gid := func(txid, p string) string { return "txc:demo:" + txid + ":" + p }
	f.begun("aaa", t0)                    // prepared at the kill, then committed by the new leader
	f.begun("bbb", t0.Add(time.Second))   // commit answered unknown; WaitOutcome resolves it later
	f.begun("ccc", t0.Add(2*time.Second)) // finished before the kill
	f.finished(transferResult{txid: "ccc", kind: resCommitted, ended: t0.Add(3 * time.Second)})
	f.kill(t0.Add(5 * time.Second))
	f.begun("ddd", t0.Add(6*time.Second)) // the new leader's ordinary work

	c := f.inDoubt([]string{gid("aaa", "pg"), gid("ddd", "pg")}, []string{gid("aaa", "surreal"), gid("zzz", "surreal")})
	want := inDoubtCount{PG: 1, Surreal: 2, Open: 2, TxIDs: []string{"aaa", "bbb", "zzz"}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("at the kill: %+v, want %+v", c, want)
	}
	if _, ok := f.failoverTime(); ok {
		t.Fatal("failover time before any commit after the kill")
	}

	f.finished(transferResult{txid: "aaa", kind: resCommitted, ended: t0.Add(7 * time.Second)}) // begun before: not a new commit
	f.finished(transferResult{txid: "bbb", kind: resUnknown, outcome: pb.Outcome_UNKNOWN})      // still unknown
	f.finished(transferResult{txid: "ddd", kind: resCommitted, ended: t0.Add(8 * time.Second)})
	c = f.inDoubt(nil, []string{gid("ddd", "surreal")})
	if want := (inDoubtCount{Open: 1, TxIDs: []string{"bbb"}}); !reflect.DeepEqual(c, want) {
		t.Fatalf("later: %+v, want %+v", c, want)
	}
	if d, ok := f.failoverTime(); !ok || d != 3*time.Second {
		t.Fatalf("failover %s %v, want 3s", d, ok)
	}
	f.finished(transferResult{txid: "bbb", kind: resUnknown, outcome: pb.Outcome_ABORTED})
	if c := f.inDoubt(nil, nil); !c.zero() {
		t.Fatalf("all resolved: %+v", c)
	}
}

func TestElectionsAfter(t *testing.T) {
	seen := []termLeader{{Term: 2, ID: "n1"}, {Term: 3, ID: "n2"}, {Term: 5, ID: "n3"}}
	if got := electionsAfter(seen, 2); got != 2 {
		t.Errorf("after term 2: %d, want 2", got)
	}
	if got := electionsAfter(seen, 5); got != 0 {
		t.Errorf("after term 5: %d, want 0", got)
	}
}

func TestDigests(t *testing.T) {
	a := NodeDigest{Node: "n1", Applied: 10, SHA256: "aa", Records: 3}
	b, c := a, a
	b.Node, c.Node = "n2", "n3"
	if got := digestsDiffer([]NodeDigest{a, b, c}); got != "" || !sameApplied([]NodeDigest{a, b, c}) {
		t.Fatalf("equal digests: %q", got)
	}
	c.SHA256 = "bb"
	if got := digestsDiffer([]NodeDigest{a, b, c}); !strings.Contains(got, "differ at applied index 10") || !strings.Contains(got, "n3 applied=10 records=3 sha256=bb") {
		t.Fatalf("different sums: %q", got)
	}
	c.Applied = 11
	if got := digestsDiffer([]NodeDigest{a, b, c}); !strings.Contains(got, "applied indexes differ") || sameApplied([]NodeDigest{a, b, c}) {
		t.Fatalf("different indexes: %q", got)
	}
	if digestsDiffer(nil) == "" || sameApplied(nil) {
		t.Fatal("no digest passes")
	}
}

func TestKnown(t *testing.T) {
	for _, tt := range []struct {
		r    transferResult
		want bool
	}{
		{transferResult{kind: resCommitted}, true},
		{transferResult{kind: resAborted}, true},
		{transferResult{kind: resNotRun}, true},
		{transferResult{kind: resUnknown}, false},
		{transferResult{kind: resUnknown, outcome: pb.Outcome_COMMITTED}, true},
		{transferResult{kind: resUnknown, outcome: pb.Outcome_ABORTED}, true},
	} {
		if got := tt.r.known(); got != tt.want {
			t.Errorf("%+v known %v, want %v", tt.r, got, tt.want)
		}
	}
}
