package demo

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txcoord/txcoord/client"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// seedBatch bounds the records written per seeding transaction (the
// coordinator's max_statements default is 1000).
const seedBatch = 500

// setup recreates the accounts: the PostgreSQL table directly; the SurrealDB
// records deleted directly, then written through txcoord (one-participant
// transactions), so they carry whatever bookkeeping the adapter keeps.
func setup(ctx context.Context, cfg Config, pool *pgxpool.Pool, chk *checker, c *client.Client) error {
	ddl := fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s;
CREATE TABLE %[1]s (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));`, PGTable)
	if _, err := pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("recreate %s in PostgreSQL: %w", PGTable, err)
	}
	ids := make([]string, cfg.Accounts)
	for i := range ids {
		ids[i] = pgAccountID(i)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO "+PGTable+" (id, balance) SELECT unnest($1::text[]), $2",
		ids, cfg.InitialBalance); err != nil {
		return fmt.Errorf("create the %s rows: %w", PGTable, err)
	}

	sc, err := chk.conn(ctx)
	if err != nil {
		return err
	}
	exists, err := sc.TableExists(ctx, SurrealTable)
	if err != nil {
		return err
	}
	if exists {
		if _, err := sc.Query(ctx, "DELETE "+SurrealTable+" RETURN NONE;", nil); err != nil {
			return fmt.Errorf("delete old %s records: %w", SurrealTable, err)
		}
	}
	for lo := 0; lo < cfg.Accounts; lo += seedBatch {
		hi := min(lo+seedBatch, cfg.Accounts)
		if err := seedSurreal(ctx, cfg, c, lo, hi); err != nil {
			return err
		}
	}
	return nil
}

func seedSurreal(ctx context.Context, cfg Config, c *client.Client, lo, hi int) error {
	tctx, cancel := context.WithTimeout(ctx, cfg.CommitTimeout)
	defer cancel()
	tx, err := c.Begin(tctx, client.TxOptions{Timeout: cfg.CommitTimeout, Labels: map[string]string{"app": "txdemo-setup"}})
	if err != nil {
		return fmt.Errorf("seed %s: begin: %w", SurrealTable, err)
	}
	for i := lo; i < hi; i++ {
		id := surrealAccountID(i)
		if _, err := tx.Do(tctx, SurrealParticipant, client.Upsert(SurrealTable, id, map[string]any{"balance": cfg.InitialBalance})); err != nil {
			tx.Rollback(tctx) //nolint:errcheck // best effort
			return fmt.Errorf("seed %s:%s through txcoord: %w", SurrealTable, id, err)
		}
	}
	err = tx.Commit(tctx)
	if errors.Is(err, client.ErrOutcomeUnknown) {
		out, werr := c.WaitOutcome(tctx, tx.ID())
		if werr == nil && out == pb.Outcome_COMMITTED {
			return nil
		}
		return fmt.Errorf("seed %s: commit outcome unknown, then %s %v", SurrealTable, out, werr)
	}
	if err != nil {
		return fmt.Errorf("seed %s: commit: %w", SurrealTable, err)
	}
	return nil
}
