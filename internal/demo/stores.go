package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// checker reads the two stores directly, never through txcoord: what it
// reports is what the databases hold.
type checker struct {
	pg          *pgxpool.Pool
	surreal     SurrealParams
	sc          *SurrealConn // reconnected on error
	gidPrefix   string
	intentTable string
}

// OpenPG opens a small pgx pool with bounded statements and lock waits.
func OpenPG(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	pc.MaxConns = maxConns
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	// A demo statement that waits longer than this on a lock is stuck behind
	// a prepared transaction: fail clearly instead of hanging.
	pc.ConnConfig.RuntimeParams["lock_timeout"] = "10s"
	pc.ConnConfig.RuntimeParams["statement_timeout"] = "30s"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres %s: %w (is it up? make db-up)", pc.ConnConfig.Host, err)
	}
	return pool, nil
}

func (c *checker) conn(ctx context.Context) (*SurrealConn, error) {
	if c.sc != nil {
		return c.sc, nil
	}
	sc, err := DialSurreal(ctx, c.surreal)
	if err != nil {
		return nil, err
	}
	c.sc = sc
	return sc, nil
}

// surrealQuery runs one query, reconnecting once if the connection broke.
func (c *checker) surrealValue(ctx context.Context, sql string, vars map[string]any, dst any) error {
	for attempt := 0; ; attempt++ {
		sc, err := c.conn(ctx)
		if err != nil {
			return err
		}
		err = sc.QueryValue(ctx, sql, vars, dst)
		if err == nil || attempt == 1 {
			return err
		}
		sc.Close()
		c.sc = nil
	}
}

func (c *checker) close() {
	if c.sc != nil {
		c.sc.Close()
	}
}

// pgPrepared counts prepared transactions with the demo's GID prefix (in
// every database of the cluster: pg_prepared_xacts is cluster-wide).
func (c *checker) pgPrepared(ctx context.Context) (int, error) {
	var n int
	err := c.pg.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE starts_with(gid, $1)", c.gidPrefix).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pg_prepared_xacts: %w", err)
	}
	return n, nil
}

// surrealIntents counts the adapter's intents with the demo's GID prefix.
// Intents are keyed by GID (record id intent_table:⟨gid⟩).
func (c *checker) surrealIntents(ctx context.Context) (int, error) {
	sc, err := c.conn(ctx)
	if err != nil {
		return 0, err
	}
	ok, err := sc.TableExists(ctx, c.intentTable)
	if err != nil || !ok {
		return 0, err
	}
	var rows []struct {
		N int `cbor:"n"`
	}
	q := "SELECT count() AS n FROM type::table($tb) WHERE string::starts_with(<string> record::id(id), $prefix) GROUP ALL;"
	if err := c.surrealValue(ctx, q, map[string]any{"tb": c.intentTable, "prefix": c.gidPrefix}, &rows); err != nil {
		return 0, fmt.Errorf("count intents: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	return rows[0].N, nil
}

// inDoubt returns both counts.
func (c *checker) inDoubt(ctx context.Context) (pg, surreal int, err error) {
	if pg, err = c.pgPrepared(ctx); err != nil {
		return
	}
	surreal, err = c.surrealIntents(ctx)
	return
}

// inDoubtGIDs lists the GIDs with the demo's prefix that are prepared in
// PostgreSQL and that have a SurrealDB intent.
func (c *checker) inDoubtGIDs(ctx context.Context) (pg, surreal []string, err error) {
	rows, err := c.pg.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)", c.gidPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list pg_prepared_xacts: %w", err)
	}
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("list pg_prepared_xacts: %w", err)
		}
		pg = append(pg, g)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list pg_prepared_xacts: %w", err)
	}
	sc, err := c.conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	ok, err := sc.TableExists(ctx, c.intentTable)
	if err != nil || !ok {
		return pg, nil, err
	}
	q := "SELECT VALUE <string> record::id(id) FROM type::table($tb) WHERE string::starts_with(<string> record::id(id), $prefix);"
	if err := c.surrealValue(ctx, q, map[string]any{"tb": c.intentTable, "prefix": c.gidPrefix}, &surreal); err != nil {
		return nil, nil, fmt.Errorf("list intents: %w", err)
	}
	return pg, surreal, nil
}

// settle polls until nothing is in doubt or timeout passes; it returns the
// last counts and how long it waited.
func (c *checker) settle(ctx context.Context, timeout time.Duration) (pg, surreal int, waited time.Duration, err error) {
	t0 := time.Now()
	deadline := t0.Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		pg, surreal, err = c.inDoubt(cctx)
		cancel()
		if err == nil && pg == 0 && surreal == 0 {
			return pg, surreal, time.Since(t0), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return pg, surreal, time.Since(t0), err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// balances reads every account of both stores.
func (c *checker) balances(ctx context.Context) (pg, surreal map[string]int64, err error) {
	pg = map[string]int64{}
	rows, err := c.pg.Query(ctx, "SELECT id, balance FROM "+PGTable)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", PGTable, err)
	}
	for rows.Next() {
		var id string
		var b int64
		if err := rows.Scan(&id, &b); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read %s: %w", PGTable, err)
		}
		pg[id] = b
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", PGTable, err)
	}
	var recs []struct {
		ID      string `cbor:"id"`
		Balance any    `cbor:"balance"`
	}
	q := "SELECT record::id(id) AS id, balance FROM type::table($tb);"
	if err := c.surrealValue(ctx, q, map[string]any{"tb": SurrealTable}, &recs); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", SurrealTable, err)
	}
	surreal = map[string]int64{}
	for _, r := range recs {
		b, ok := Int64(r.Balance)
		if !ok {
			return nil, nil, fmt.Errorf("read %s:%s: balance %v (%T) is not an integer", SurrealTable, r.ID, r.Balance, r.Balance)
		}
		surreal[r.ID] = b
	}
	return pg, surreal, nil
}

func total(m map[string]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}
