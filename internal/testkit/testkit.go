// Package testkit is what the integration suites under test/ share: the
// development databases' settings from the environment (scripts/pg.sh env,
// scripts/surreal.sh env), the txcoord binary built once per suite, and
// loopback ports handed out once each. It has three things: Databases,
// Suite and FreePort.
package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Databases are the development databases' settings.
type Databases struct {
	PGDSN       string // TXCOORD_PG_DSN_A
	SurrealURL  string // TXCOORD_SURREAL_URL
	SurrealUser string // TXCOORD_SURREAL_USER, default root
	SurrealPass string // TXCOORD_SURREAL_PASS, default root
	SurrealNS   string // TXCOORD_SURREAL_NS, default txcoord
	SurrealDB   string // TXCOORD_SURREAL_DB, default test
}

// DatabasesFromEnv reads the settings; ok is false when the databases are
// not configured (TXCOORD_PG_DSN_A or TXCOORD_SURREAL_URL unset).
func DatabasesFromEnv() (d Databases, ok bool) {
	d = Databases{
		PGDSN: os.Getenv("TXCOORD_PG_DSN_A"), SurrealURL: os.Getenv("TXCOORD_SURREAL_URL"),
		SurrealUser: envOr("TXCOORD_SURREAL_USER", "root"), SurrealPass: envOr("TXCOORD_SURREAL_PASS", "root"),
		SurrealNS: envOr("TXCOORD_SURREAL_NS", "txcoord"), SurrealDB: envOr("TXCOORD_SURREAL_DB", "test"),
	}
	return d, d.PGDSN != "" && d.SurrealURL != ""
}

// NotConfigured is the reason a suite skips without the databases.
const NotConfigured = "TXCOORD_PG_DSN_A / TXCOORD_SURREAL_URL not set (run `make test`, which starts the databases, " +
	"or: set -a; eval \"$(scripts/pg.sh env)\"; eval \"$(scripts/surreal.sh env)\"; set +a)"

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Suite is one integration suite's set-up, made in its TestMain.
type Suite struct {
	Name    string // for messages: "e2e", "test/txctl"...
	DBs     Databases
	Binary  string // the txcoord binary; "" when the databases are not configured
	binDir  string
	skipped bool
}

// Setup reads the databases' settings and, when they are configured,
// builds cmd/txcoord into a temporary directory. Without them it prints
// "<name>: SKIP: ..." and the suite's tests skip (Need). A failed build is
// returned: the suite cannot run.
func Setup(name string) (*Suite, error) {
	s := &Suite{Name: name}
	var ok bool
	if s.DBs, ok = DatabasesFromEnv(); !ok {
		s.skipped = true
		fmt.Printf("%s: SKIP: %s\n", name, NotConfigured)
		return s, nil
	}
	dir, err := os.MkdirTemp("", "txcoord-testbin")
	if err != nil {
		return nil, err
	}
	s.binDir, s.Binary = dir, filepath.Join(dir, "txcoord")
	build := exec.Command("go", "build", "-o", s.Binary, "github.com/txcoord/txcoord/cmd/txcoord")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: building txcoord failed: %w", name, err)
	}
	return s, nil
}

// Main runs the suite's tests (m.Run) and removes the binary; its result
// is TestMain's exit code. A failed Setup exits 1.
func Main(m *testing.M, s *Suite, err error) int {
	if err != nil {
		fmt.Println(err)
		return 1
	}
	code := m.Run()
	if s.binDir != "" {
		os.RemoveAll(s.binDir)
	}
	return code
}

// Need skips t when the databases are not configured.
func (s *Suite) Need(t testing.TB) {
	t.Helper()
	if s == nil || s.skipped {
		t.Skip("databases not configured: " + NotConfigured)
	}
}

var (
	portsMu   sync.Mutex
	handedOut = map[string]bool{}
)

// FreePort returns a loopback address nobody listens on now and that no
// earlier call returned: a port closed by one call can come back from the
// next, and two processes (or one's gRPC and Raft listeners) must never be
// given the same one.
func FreePort(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handedOut[addr] {
			handedOut[addr] = true
			return addr
		}
	}
	t.Fatal("no unused loopback port after 100 tries")
	return ""
}
