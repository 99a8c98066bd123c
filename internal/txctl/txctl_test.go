package txctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/wal"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
)

// Unit tests: no cluster. Everything that needs txcoord and the databases
// is in test/txctl.

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "TXCOORD_ADDR" {
			return "127.0.0.1:1" // nothing listens: a usage error must not get this far
		}
		return ""
	}}
	code = Main(context.Background(), args, env)
	return out.String(), errb.String(), code
}

func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	o := &options{env: Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}}
	var walk func(c *cobra.Command, path []string)
	n := 0
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden || c.Name() == cobra.ShellCompRequestCmd || c.Name() == cobra.ShellCompNoDescRequestCmd {
			return
		}
		n++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("txctl %s: no examples in --help", strings.Join(path, " "))
		}
		out, _, code := runCLI(t, append(append([]string{}, path...), "--help")...)
		if code != ExitOK || !strings.Contains(out, "Examples:") {
			t.Errorf("txctl %s --help: exit %d, examples shown: %v", strings.Join(path, " "), code, strings.Contains(out, "Examples:"))
		}
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(o.rootCommand(), nil)
	if n < 20 {
		t.Fatalf("walked only %d commands", n)
	}
}

func TestUsageErrorsExit2WithoutContactingTheCluster(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nonsense"},
		{"tx"},
		{"tx", "show"},
		{"tx", "show", "a", "b"},
		{"tx", "list", "--state", "DONE"},
		{"tx", "list", "--sort", "size"},
		{"tx", "list", "--label", "novalue"},
		{"tx", "list", "--limit", "0"},
		{"resolve", "0190a1b2c3d4e5f60718", "--reason", "x"},
		{"resolve", "0190a1b2c3d4e5f60718", "--commit"},
		{"resolve", "0190a1b2c3d4e5f60718", "--commit", "--rollback", "--reason", "x"},
		{"resolve", "0190a1b2c3d4e5f60718", "--commit", "--reason", "  "},
		{"cluster", "add-voter", "n4"},
		{"inspect"},
		{"inspect", "--data-dir", "a", "--file", "b"},
		{"in-doubt", "--output", "yaml"},
		{"in-doubt", "--timeout", "0s"},
		{"in-doubt", "--bogus"},
		{"--tls-cert", "c.pem", "in-doubt"},
		{"--token", "t", "--token-file", "f", "in-doubt"},
		{"--token", "0123456789abcdef", "--addr", "10.0.0.1:7400", "in-doubt"},
	} {
		_, stderr, code := runCLI(t, args...)
		if code != ExitUsage {
			t.Errorf("txctl %v: exit %d, want %d (stderr %q)", args, code, ExitUsage, stderr)
		}
		if strings.Contains(stderr, "connection") {
			t.Errorf("txctl %v: a usage error reached the network: %s", args, stderr)
		}
	}
}

func TestUnreachableClusterExits1(t *testing.T) {
	_, stderr, code := runCLI(t, "--timeout", "2s", "in-doubt")
	if code != ExitFailure || !strings.Contains(stderr, "cannot reach a txcoord node at 127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestExitCodeOfServerAnswers(t *testing.T) {
	o := &options{ran: true}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&client.Error{Code: codes.FailedPrecondition, Message: "contradicts the logged decision"}, ExitRefused},
		{&client.Error{Code: codes.InvalidArgument, Message: "txid: bad"}, ExitUsage},
		{&client.Error{Code: codes.Unavailable}, ExitFailure},
		{&client.Error{Code: codes.NotFound}, ExitFailure},
		{&client.Error{Code: codes.PermissionDenied}, ExitFailure},
		{errors.New("boom"), ExitFailure},
		{quiet(ExitInDoubt), ExitInDoubt},
		{exitf(ExitDegraded, "x"), ExitDegraded},
	} {
		if got := o.exitCode(tc.err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
	}
	if got := (&options{}).exitCode(errors.New("unknown flag")); got != ExitUsage {
		t.Errorf("an error before the command ran must be a usage error, got %d", got)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, stderr, code := runCLI(t, "completion", sh)
		if code != ExitOK || !strings.Contains(out, "txctl") || len(out) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), stderr)
		}
	}
	// Flag values complete without a cluster.
	out, _, _ := runCLI(t, cobra.ShellCompRequestCmd, "tx", "list", "--state", "")
	if !strings.Contains(out, "COMMITTING") || !strings.Contains(out, "IN_DOUBT") {
		t.Errorf("--state completion: %q", out)
	}
}

// makeStore writes a decision store the way the Raft FSM does: a commit
// decision, a member, a forced heuristic resolution with its audit entry.
func makeStore(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "decisions.db")
	s, err := wal.Open(path, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC).UnixMilli()
	entries := []wal.Command{
		{Type: wal.CmdMember, NodeID: "n1", Addr: "127.0.0.1:7400"},
		{Type: wal.CmdDecide, Decision: &wal.Record{TxID: "01a21536a5c5cbef7b05", Outcome: wal.OutcomeCommit, Participants: []string{"pg", "surreal"}, CreatedMs: now, DecidedMs: now}},
		{Type: wal.CmdDecide, Decision: &wal.Record{TxID: "01a21536a5c5cbef7b06", Outcome: wal.OutcomeCommit, Participants: []string{"pg"}, CreatedMs: now, DecidedMs: now}},
		{Type: wal.CmdDone, TxIDs: []string{"01a21536a5c5cbef7b06"}, AtMs: now},
		{Type: wal.CmdResolve, Force: true,
			Decision: &wal.Record{TxID: "01a21536a5c5cbef7b05", Outcome: wal.OutcomeAbort, Reason: "restored from backup", DecidedMs: now},
			Audit:    &wal.AuditEntry{AtMs: now, Actor: "ops@host", Action: "RESOLVE", TxID: "01a21536a5c5cbef7b05", Reason: "restored from backup", Detail: "heuristic ABORT"}},
		{Type: wal.CmdAudit, Audit: &wal.AuditEntry{AtMs: now, Actor: "admin-api", Action: "MEMBER_ADD", Detail: "voter n2"}},
	}
	var batch []wal.Entry
	for i, c := range entries {
		batch = append(batch, wal.Entry{Index: uint64(i + 1), Term: 1, Data: c.Encode()})
	}
	for _, r := range s.ApplyBatch(batch) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestInspectIsReadOnlyAndDetectsAnEditedAuditEntry(t *testing.T) {
	dir := t.TempDir()
	path := makeStore(t, dir)
	before := sha(t, path)

	out, stderr, code := runCLI(t, "inspect", "--data-dir", dir)
	if code != ExitOK {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"opened read-only", "raft index 6", "2 (1 not done)", "01a21536a5c5cbef7b05", "ABORT", "restored from backup",
		"n1", "127.0.0.1:7400", "ops@host", "MEMBER_ADD", "audit chain: verified (4 entries"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runCLI(t, "inspect", "--file", path, "--pending", "-o", "json")
	var j struct {
		Records []struct {
			TxID      string `json:"txid"`
			Heuristic bool   `json:"heuristic"`
			Done      bool   `json:"done"`
		} `json:"records"`
		Audit struct {
			Verdict verdictJSON `json:"verdict"`
		} `json:"audit"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != ExitOK {
		t.Fatalf("inspect -o json: exit %d, %v:\n%s", code, err, out)
	}
	if len(j.Records) != 1 || !j.Records[0].Heuristic || j.Records[0].Done || !j.Audit.Verdict.Verified || j.Audit.Verdict.Entries != 4 { // two DECISION entries, RESOLVE, MEMBER_ADD
		t.Fatalf("inspect --pending -o json: %+v", j)
	}
	if after := sha(t, path); after != before {
		t.Fatal("inspect modified the store file")
	}

	// Edit the RESOLVE entry's reason (seq 3, after the two decisions) in
	// place, as a tamperer would.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], 3)
		var e map[string]any
		if err := json.Unmarshal(tx.Bucket([]byte("audit")).Get(k[:]), &e); err != nil {
			return err
		}
		e["reason"] = "routine"
		v, _ := json.Marshal(e)
		return tx.Bucket([]byte("audit")).Put(k[:], v)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, _, code = runCLI(t, "inspect", "--data-dir", dir)
	if code != ExitInDoubt || !strings.Contains(out, "BROKEN at seq 3: entry content does not match its hash") || !strings.Contains(out, "3 <-- BROKEN") {
		t.Fatalf("inspect after the edit: exit %d:\n%s", code, out)
	}
	out, _, code = runCLI(t, "audit", "verify", "--data-dir", dir)
	if code != ExitInDoubt || !strings.Contains(out, "seq 3") || !strings.Contains(out, `reason "routine"`) {
		t.Fatalf("audit verify after the edit: exit %d:\n%s", code, out)
	}
}

func TestInspectRefusesWhatIsNotAStore(t *testing.T) {
	dir := t.TempDir()
	if _, _, code := runCLI(t, "inspect", "--data-dir", dir); code != ExitFailure {
		t.Errorf("a dir without decisions.db: exit %d", code)
	}
	bad := filepath.Join(dir, "decisions.db")
	os.WriteFile(bad, bytes.Repeat([]byte("not a bbolt file "), 512), 0o600)
	_, stderr, code := runCLI(t, "inspect", "--data-dir", dir)
	if code != ExitFailure || !strings.Contains(stderr, "corrupt") {
		t.Errorf("a garbage decisions.db: exit %d, %s", code, stderr)
	}
}

func TestSnapshotRestoreChecksTheFileFirst(t *testing.T) {
	dir := t.TempDir()
	path := makeStore(t, dir)
	// Without --yes: the file is summarized and nothing is sent (the
	// address has no listener; reaching it would be exit 1).
	out, stderr, code := runCLI(t, "snapshot", "restore", path)
	if code != ExitUsage || !strings.Contains(stderr, "add --yes") || !strings.Contains(out, "2 (1 not done)") {
		t.Fatalf("restore without --yes: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := runCLI(t, "snapshot", "restore", filepath.Join(dir, "missing.snap"), "--yes"); code != ExitFailure {
		t.Fatalf("restore of a missing file: exit %d %s", code, stderr)
	}
}

func TestAgeFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond: "850ms", 12300 * time.Millisecond: "12.3s", 245 * time.Second: "4m05s",
		200 * time.Minute: "3h20m", 52 * time.Hour: "2d4h", -time.Second: "-",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}
