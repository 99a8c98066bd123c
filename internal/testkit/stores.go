package testkit

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
	"github.com/surrealdb/surrealdb.go/pkg/connection/gorillaws"
)

// PGPool opens a pool on the development PostgreSQL database (closed when
// t ends) and runs ddl on it, if any (CREATE TABLE IF NOT EXISTS...: a
// parallel test's identical statement racing it is not an error).
func (d Databases) PGPool(t testing.TB, ddl string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), d.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if ddl != "" {
		if _, err := p.Exec(context.Background(), ddl); err != nil &&
			!strings.Contains(err.Error(), "duplicate key") && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
	}
	return p
}

// Surreal opens an SDK connection to the development SurrealDB database,
// signed in and on its namespace and database (closed when t ends):
// independent of the adapter under test.
func (d Databases) Surreal(t testing.TB) *surrealdb.DB {
	t.Helper()
	u, err := url.ParseRequestURI(d.SurrealURL)
	if err != nil {
		t.Fatal(err)
	}
	conf := connection.NewConfig(u)
	conf.Logger = nil
	conn := gorillaws.New(conf)
	conn.Timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := surrealdb.FromConnection(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignIn(ctx, surrealdb.Auth{Username: d.SurrealUser, Password: d.SurrealPass}); err != nil {
		t.Fatal(err)
	}
	if err := db.Use(ctx, d.SurrealNS, d.SurrealDB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return db
}

// Eventually polls cond every 20 ms until it holds, failing t with what
// when bound passes first; it returns how long it took.
func Eventually(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not true after %s", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
