package txctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/internal/txctl"
)

// driftRun runs txctl in-process with env as its whole environment (the
// mapping's credentials come from there, never from the file).
func driftRun(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := txctl.Main(context.Background(), args, txctl.Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	r := result{args: args, stdout: out.String(), stderr: errb.String(), code: code}
	t.Logf("\n$ txctl %s\n%s%s(exit %d)\n", shellQuote(args), r.stdout, r.stderr, r.code)
	return r
}

// squeeze collapses runs of spaces (table padding) so rows compare exactly.
func squeeze(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

// TestDriftReportsPlantedDifferences: accounts written to a PostgreSQL table
// and a SurrealDB table, with drift planted: a row missing on each side, a
// differing balance, a differing owner, and a difference of case only that the
// "lower" transform ignores. txctl drift reports exactly the planted drift in
// table and JSON output with exit 1, reads with a page size smaller than the
// tables (paging on both sides), exits 0 once the sides agree, and 2 on a bad
// mapping or a missing credential.
func TestDriftReportsPlantedDifferences(t *testing.T) {
	if suite.DBs.PGDSN == "" || suite.DBs.SurrealURL == "" {
		t.Skip("needs TXCOORD_PG_DSN_A and TXCOORD_SURREAL_URL (make db-up)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	table := fmt.Sprintf("drift_acct_%d", time.Now().UnixNano()%1_000_000_000)

	pg, err := pgx.Connect(ctx, suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	if _, err := pg.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, owner text, balance numeric(12,2), note text)", table)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	sur, err := demo.DialSurreal(ctx, demo.SurrealParams{URL: suite.DBs.SurrealURL, User: suite.DBs.SurrealUser, Pass: suite.DBs.SurrealPass, Namespace: suite.DBs.SurrealNS, Database: suite.DBs.SurrealDB})
	if err != nil {
		t.Fatal(err)
	}
	defer sur.Close()
	t.Cleanup(func() { sur.Query(context.Background(), "REMOVE TABLE IF EXISTS "+table+";", nil) })

	// Ids 1..7 on both sides, except: 2 only in PostgreSQL, 9 only in
	// SurrealDB; 3's balance differs (100.50 vs 100.05); 5's owner differs
	// ("erin" vs "eric"); 6's owner differs in case only ("Frank" vs "frank").
	for id := 1; id <= 7; id++ {
		owner, bal := fmt.Sprintf("owner%d", id), fmt.Sprintf("%d.50", id*100)
		pgOwner := map[int]string{5: "erin", 6: "Frank"}[id]
		if pgOwner == "" {
			pgOwner = owner
		}
		if _, err := pg.Exec(ctx, fmt.Sprintf("INSERT INTO %s VALUES ($1, $2, $3, 'x')", table), id, pgOwner, bal); err != nil {
			t.Fatal(err)
		}
		if id == 2 {
			continue
		}
		sOwner, sBal := owner, any(float64(id*100)+0.5)
		switch id {
		case 3:
			sBal = 100.05
		case 5:
			sOwner = "eric"
		case 6:
			sOwner = "frank"
		}
		if _, err := sur.Query(ctx, "CREATE type::record($t, $id) SET owner = $o, balance = $b;", map[string]any{"t": table, "id": id, "o": sOwner, "b": sBal}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sur.Query(ctx, "CREATE type::record($t, 9) SET owner = 'ghost', balance = 1;", map[string]any{"t": table}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	mapping := filepath.Join(dir, "drift.yaml")
	writeMapping := func(extra string) {
		os.WriteFile(mapping, []byte(fmt.Sprintf(`postgres: {dsn_env: DRIFT_PG_DSN}
surrealdb: {url: %q, namespace: %q, database: %q, username: %q, password_env: DRIFT_SURREAL_PASS}
page_size: 2
mappings:
  - name: accounts
    postgres: {table: %s, key: [id]}
    surrealdb: {table: %s}
    fields:
      - {postgres: balance, surrealdb: balance}
      - {postgres: owner, surrealdb: owner, transform: lower}
%s`, suite.DBs.SurrealURL, suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser, table, table, extra)), 0o600)
	}
	writeMapping("")
	env := map[string]string{"DRIFT_PG_DSN": suite.DBs.PGDSN, "DRIFT_SURREAL_PASS": suite.DBs.SurrealPass}

	r := driftRun(t, env, "drift", "--config", mapping)
	if r.code != txctl.DriftFound {
		t.Fatalf("exit %d, want %d (drift found)", r.code, txctl.DriftFound)
	}
	want := `MAPPING KEY PROBLEM FIELD POSTGRES SURREALDB
accounts 2 missing_in_surrealdb - - -
accounts 3 differs balance ↔ balance 300.5 100.05
accounts 5 differs owner ↔ owner erin eric
accounts 9 missing_in_postgres - - -
accounts: DRIFT: 7 postgres rows, 7 surrealdb records; 1 missing in surrealdb, 1 missing in postgres, 2 rows differ (2 fields)`
	if got := squeeze(r.stdout); got != want {
		t.Errorf("table report:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(r.stderr, "drift: accounts: postgres "+table) {
		t.Errorf("no progress on stderr: %q", r.stderr)
	}

	r = driftRun(t, env, "drift", "--config", mapping, "-o", "json")
	if r.code != txctl.DriftFound {
		t.Fatalf("json: exit %d", r.code)
	}
	var js struct {
		Drift    bool
		Mappings []struct {
			Name                                                 string
			PostgresRows                                         int `json:"postgres_rows"`
			SurrealDBRecords                                     int `json:"surrealdb_records"`
			MissingInSurrealDB, MissingInPostgres, DifferingRows int
			Items                                                []map[string]string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	items, _ := json.Marshal(js.Mappings[0].Items)
	wantItems := `[{"key":"2","problem":"missing_in_surrealdb"},` +
		`{"field":"balance ↔ balance","key":"3","postgres":"300.5","problem":"differs","surrealdb":"100.05"},` +
		`{"field":"owner ↔ owner","key":"5","postgres":"erin","problem":"differs","surrealdb":"eric"},` +
		`{"key":"9","problem":"missing_in_postgres"}]`
	if !js.Drift || len(js.Mappings) != 1 || js.Mappings[0].PostgresRows != 7 || js.Mappings[0].SurrealDBRecords != 7 || string(items) != wantItems {
		t.Errorf("json report: %s\nitems %s\nwant  %s", r.stdout, items, wantItems)
	}

	// Repair the drift: both sides agree, exit 0.
	if _, err := sur.Query(ctx, "CREATE type::record($t, 2) SET owner = 'owner2', balance = 200.5; UPDATE type::record($t, 3) SET balance = 300.5; UPDATE type::record($t, 5) SET owner = 'ERIN'; DELETE type::record($t, 9);", map[string]any{"t": table}); err != nil {
		t.Fatal(err)
	}
	r = driftRun(t, env, "drift", "--config", mapping)
	if r.code != txctl.DriftNone || !strings.Contains(r.stdout, "accounts: no drift: 7 postgres rows, 7 surrealdb records") {
		t.Errorf("after repair: exit %d\n%s", r.code, r.stdout)
	}

	// Errors exit 2: a missing credential (named, never shown), a bad mapping.
	r = driftRun(t, map[string]string{"DRIFT_PG_DSN": suite.DBs.PGDSN}, "drift", "--config", mapping)
	if r.code != txctl.DriftError || !strings.Contains(r.stderr, "DRIFT_SURREAL_PASS is not set") {
		t.Errorf("missing password: exit %d, %s", r.code, r.stderr)
	}
	writeMapping("      - {postgres: owner, surrealdb: owner, transform: upper}\n")
	r = driftRun(t, env, "drift", "--config", mapping)
	if r.code != txctl.DriftError || !strings.Contains(r.stderr, "mappings[0].fields[2].transform") {
		t.Errorf("bad mapping: exit %d, %s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, suite.DBs.SurrealPass) && suite.DBs.SurrealPass != "root" {
		t.Error("the SurrealDB password appears in the output")
	}
}

// TestDriftCompositeKey: a two-column key maps to an array record id
// (['eu', 1]); paging both sides with page_size 1 still finds the one
// record missing in PostgreSQL, the one row missing in SurrealDB and a
// differing field, and keys print as JSON arrays.
func TestDriftCompositeKey(t *testing.T) {
	if suite.DBs.PGDSN == "" || suite.DBs.SurrealURL == "" {
		t.Skip("needs TXCOORD_PG_DSN_A and TXCOORD_SURREAL_URL (make db-up)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	table := fmt.Sprintf("drift_ord_%d", time.Now().UnixNano()%1_000_000_000)
	pg, err := pgx.Connect(ctx, suite.DBs.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	if _, err := pg.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (region text, id bigint, total int, PRIMARY KEY (region, id))", table)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	sur, err := demo.DialSurreal(ctx, demo.SurrealParams{URL: suite.DBs.SurrealURL, User: suite.DBs.SurrealUser, Pass: suite.DBs.SurrealPass, Namespace: suite.DBs.SurrealNS, Database: suite.DBs.SurrealDB})
	if err != nil {
		t.Fatal(err)
	}
	defer sur.Close()
	t.Cleanup(func() { sur.Query(context.Background(), "REMOVE TABLE IF EXISTS "+table+";", nil) })
	for _, r := range []struct {
		region     string
		id, total  int
		inPG, inSu bool
		suTotal    int
	}{
		{"eu", 1, 10, true, true, 10},
		{"eu", 2, 20, true, true, 21},  // differs
		{"us", 1, 30, true, false, 0},  // missing in surrealdb
		{"us", 2, 40, false, true, 40}, // missing in postgres
		{"us", 3, 50, true, true, 50},
	} {
		if r.inPG {
			if _, err := pg.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2, $3)", r.region, r.id, r.total); err != nil {
				t.Fatal(err)
			}
		}
		if r.inSu {
			if _, err := sur.Query(ctx, "CREATE type::record($t, [$r, $i]) SET total = $v;", map[string]any{"t": table, "r": r.region, "i": r.id, "v": r.suTotal}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mapping := filepath.Join(t.TempDir(), "drift.yaml")
	os.WriteFile(mapping, []byte(fmt.Sprintf(`postgres: {dsn_env: DRIFT_PG_DSN}
surrealdb: {url: %q, namespace: %q, database: %q, username: %q, password_env: DRIFT_SURREAL_PASS}
page_size: 1
mappings:
  - name: orders
    postgres: {table: %s, key: [region, id]}
    surrealdb: {table: %s}
    fields: [{postgres: total, surrealdb: total}]
`, suite.DBs.SurrealURL, suite.DBs.SurrealNS, suite.DBs.SurrealDB, suite.DBs.SurrealUser, table, table)), 0o600)
	r := driftRun(t, map[string]string{"DRIFT_PG_DSN": suite.DBs.PGDSN, "DRIFT_SURREAL_PASS": suite.DBs.SurrealPass}, "drift", "--config", mapping, "-o", "json")
	if r.code != txctl.DriftFound {
		t.Fatalf("exit %d, want 1", r.code)
	}
	var js struct {
		Mappings []struct {
			Items []map[string]string
		}
	}
	json.Unmarshal([]byte(r.stdout), &js)
	items, _ := json.Marshal(js.Mappings[0].Items)
	want := `[{"field":"total ↔ total","key":"[\"eu\",2]","postgres":"20","problem":"differs","surrealdb":"21"},` +
		`{"key":"[\"us\",1]","problem":"missing_in_surrealdb"},{"key":"[\"us\",2]","problem":"missing_in_postgres"}]`
	if string(items) != want {
		t.Errorf("items:\n%s\nwant\n%s", items, want)
	}
}
