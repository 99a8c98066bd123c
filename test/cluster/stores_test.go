package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	surrealdb "github.com/surrealdb/surrealdb.go"
)

// The tests write rows keyed by "<cluster id>-..." into cluster_kv in both
// stores, so each test's rows are its own and checks select by prefix.
// cluster_uniq has a deferred UNIQUE constraint: a transaction inserting a
// key that another open transaction inserted waits at PREPARE TRANSACTION
// until that one ends — the tests' way to hold a transaction prepared on one
// participant with its decision pending (see blocker).
const kvTable = "cluster_kv"

// stores is the test's own view of both databases, independent of the
// adapters under test.
type stores struct {
	t   *testing.T
	pg  *pgxpool.Pool
	sdb *surrealdb.DB
}

func openStores(t *testing.T) *stores {
	t.Helper()
	pool := suite.DBs.PGPool(t, `
		CREATE TABLE IF NOT EXISTS cluster_kv (k text PRIMARY KEY, v text NOT NULL);
		CREATE TABLE IF NOT EXISTS cluster_uniq (k text,
			CONSTRAINT cluster_uniq_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)`)
	return &stores{t: t, pg: pool, sdb: suite.DBs.Surreal(t)}
}

func (s *stores) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// surQuery runs a SurrealQL query with one statement and returns its result;
// a table that does not exist yet reads as empty.
func surQuery[T any](s *stores, q string, vars map[string]any) (T, error) {
	var zero T
	ctx, cancel := s.ctx()
	defer cancel()
	res, err := surrealdb.Query[T](ctx, s.sdb, q, vars)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return zero, nil
		}
		return zero, err
	}
	if len(*res) == 0 {
		return zero, nil
	}
	return (*res)[0].Result, nil
}

// pgPrepared lists the GIDs prepared in PostgreSQL under prefix.
func (s *stores) pgPrepared(prefix string) []string {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.pg.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE $1 ORDER BY gid", prefix+"%")
	if err != nil {
		s.t.Fatalf("pg_prepared_xacts: %v", err)
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.t.Fatalf("pg_prepared_xacts: %v", err)
	}
	return gids
}

// surrealHeld lists the GIDs of intents and locks left in SurrealDB under
// prefix (the adapter's default tables txc_intent and txc_lock; both carry
// the GID in field gid).
func (s *stores) surrealHeld(prefix string) []string {
	s.t.Helper()
	var out []string
	for _, table := range []string{"txc_intent", "txc_lock"} {
		gids, err := surQuery[[]string](s, fmt.Sprintf("SELECT VALUE gid FROM %s WHERE string::starts_with(gid, $p)", table),
			map[string]any{"p": prefix})
		if err != nil {
			s.t.Fatalf("%s: %v", table, err)
		}
		for _, g := range gids {
			out = append(out, table+":"+g)
		}
	}
	sort.Strings(out)
	return out
}

// inDoubt lists everything prepared under prefix in either database.
func (s *stores) inDoubt(prefix string) []string {
	return append(s.pgPrepared(prefix), s.surrealHeld(prefix)...)
}

// surIntent reports whether SurrealDB holds the intent of gid (the branch is
// prepared there).
func (s *stores) surIntent(gid string) bool {
	s.t.Helper()
	gids, err := surQuery[[]string](s, "SELECT VALUE gid FROM type::record('txc_intent', $g)", map[string]any{"g": gid})
	if err != nil {
		s.t.Fatalf("intent %s: %v", gid, err)
	}
	return len(gids) > 0
}

// pgIsPrepared reports whether gid is prepared in PostgreSQL.
func (s *stores) pgIsPrepared(gid string) bool {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	var n int
	if err := s.pg.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n > 0
}

// prepareWaiting reports whether a PREPARE TRANSACTION of gid is running in
// PostgreSQL and waiting on a lock (held back by a blocker).
func (s *stores) prepareWaiting(gid string) bool {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	var n int
	err := s.pg.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE query LIKE 'PREPARE TRANSACTION%' AND strpos(query, $1) > 0 AND wait_event_type = 'Lock'`, gid).Scan(&n)
	if err != nil {
		s.t.Fatal(err)
	}
	return n > 0
}

// pgKV returns cluster_kv's rows whose key starts with prefix.
func (s *stores) pgKV(prefix string) map[string]string {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.pg.Query(ctx, "SELECT k, v FROM cluster_kv WHERE starts_with(k, $1)", prefix)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			s.t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// surKV returns SurrealDB's cluster_kv records whose id starts with prefix.
func (s *stores) surKV(prefix string) map[string]string {
	s.t.Helper()
	type row struct {
		K any `json:"k"`
		V any `json:"v"`
	}
	rows, err := surQuery[[]row](s, "SELECT record::id(id) AS k, v FROM type::table($t) WHERE string::starts_with(<string> record::id(id), $p)",
		map[string]any{"t": kvTable, "p": prefix})
	if err != nil {
		s.t.Fatalf("surreal %s: %v", kvTable, err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[fmt.Sprint(r.K)] = fmt.Sprint(r.V)
	}
	return out
}

// kvBoth returns a key's value in each store ("" and false when absent).
func (s *stores) kvBoth(key string) (pgV string, inPG bool, surV string, inSur bool) {
	pgm, surm := s.pgKV(key), s.surKV(key)
	pgV, inPG = pgm[key]
	surV, inSur = surm[key]
	return
}

// blocker holds an uncommitted insert of a cluster_uniq key: a coordinator
// branch inserting the same key (with a long lock_timeout) then waits in
// PREPARE TRANSACTION until release, so its transaction stays with one
// participant prepared and its decision pending.
type blocker struct {
	s    *stores
	key  string
	conn *pgxpool.Conn
	tx   pgx.Tx
	done bool
}

func (s *stores) block(key string) *blocker {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	conn, err := s.pg.Acquire(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		s.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO cluster_uniq (k) VALUES ($1)", key); err != nil {
		tx.Rollback(ctx)
		conn.Release()
		s.t.Fatal(err)
	}
	b := &blocker{s: s, key: key, conn: conn, tx: tx}
	s.t.Cleanup(b.release)
	return b
}

// release rolls the blocking insert back (the waiting PREPARE proceeds).
func (b *blocker) release() {
	if b.done {
		return
	}
	b.done = true
	ctx, cancel := b.s.ctx()
	defer cancel()
	b.tx.Rollback(ctx)
	b.conn.Release()
}

// cleanup removes what a test left under its cluster id: prepared branches
// (only if a failed run left them; a passing run leaves none), SurrealDB
// intents and locks, and the test's rows in both stores.
func (s *stores) cleanup(clusterID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := "txc:" + clusterID + ":"
	var errs []error
	if rows, err := s.pg.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE $1", prefix+"%"); err == nil {
		gids, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, g := range gids {
			if _, err := s.pg.Exec(ctx, "ROLLBACK PREPARED "+quote(g)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, q := range []string{"DELETE FROM cluster_kv WHERE starts_with(k, $1)", "DELETE FROM cluster_uniq WHERE starts_with(k, $1)"} {
		if _, err := s.pg.Exec(ctx, q, clusterID); err != nil {
			errs = append(errs, err)
		}
	}
	for _, q := range []string{
		"DELETE txc_intent WHERE string::starts_with(gid, $p)",
		"DELETE txc_lock WHERE string::starts_with(gid, $p)",
		"DELETE type::table($t) WHERE string::starts_with(<string> record::id(id), $k)",
	} {
		if _, err := surrealdb.Query[any](ctx, s.sdb, q, map[string]any{"p": prefix, "t": kvTable, "k": clusterID}); err != nil &&
			!strings.Contains(err.Error(), "does not exist") {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.t.Logf("cleanup of %s: %v", clusterID, err)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// assertNothingInDoubt waits (bounded) until nothing of this cluster is
// prepared in PostgreSQL and no intent or lock is left in SurrealDB.
func (c *cluster) assertNothingInDoubt(s *stores) {
	c.t.Helper()
	var left []string
	start := time.Now()
	for {
		left = s.inDoubt(c.prefix())
		if len(left) == 0 {
			c.t.Logf("nothing in doubt for %s (checked after %s)", c.prefix(), ms(time.Since(start)))
			return
		}
		if time.Since(start) > 20*time.Second {
			c.t.Fatalf("still in doubt after 20s: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
