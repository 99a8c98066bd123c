package bench

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/txcoord/txcoord/client"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participants"
)

// workload is one benchmark: its setup, one transaction through txcoord,
// the same writes done directly (the baseline), and the same transaction
// committed through the adapters without a coordinator (the floor, see
// floor.go).
type workload struct {
	// onePhase: a one-participant transaction, committed in one phase (no
	// decision to acknowledge early, no phases to sample).
	onePhase bool
	setup    func(ctx context.Context, e *env) error
	txcoord  func(ctx context.Context, e *env, opts client.TxOptions, rnd *rand.Rand) (outcome, error)
	baseline func(ctx context.Context, e *env, worker int, rnd *rand.Rand) (outcome, error)
	floor    func(ctx context.Context, f *floorEnv, rnd *rand.Rand) (outcome, error)
}

const (
	sqlDebit  = "UPDATE " + pgTable + " SET balance = balance - 1 WHERE id = $1"
	sqlCredit = "UPDATE " + pgTable + " SET balance = balance + 1 WHERE id = $1"
	// surqlCredit is the baseline's SurrealDB write: one autocommit statement.
	surqlCredit = "UPDATE type::record($tb, $id) SET balance += 1 RETURN NONE;"
)

var workloads = map[string]workload{
	// pg-surreal: move 1 from a PostgreSQL row to a SurrealDB record, as an
	// interactive transaction (the record's new balance needs a read: the
	// record API has no increment). Baseline: the UPDATE in PostgreSQL, then
	// an UPDATE ... += 1 in SurrealDB, each autocommit.
	"pg-surreal": {
		setup: func(ctx context.Context, e *env) error {
			if err := setupPG(ctx, e.pgA, e.cfg.Accounts); err != nil {
				return err
			}
			return seedSurreal(ctx, e, e.cfg.Accounts)
		},
		txcoord: func(ctx context.Context, e *env, opts client.TxOptions, rnd *rand.Rand) (outcome, error) {
			pid, sid := rnd.Int64N(int64(e.cfg.Accounts)), rnd.Int64N(int64(e.cfg.Accounts))
			tx, err := e.c.Begin(ctx, opts)
			if err != nil {
				return outError, err
			}
			fail := func(err error) (outcome, error) {
				rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				tx.Rollback(rctx) //nolint:errcheck // best effort; the statement error decides
				cancel()
				return classify(err)
			}
			if _, err := tx.Exec(ctx, e.cfg.PGA, sqlDebit, pid); err != nil {
				return fail(err)
			}
			res, err := tx.Do(ctx, e.cfg.Surreal, client.Read(surrealTable, sid))
			if err != nil {
				return fail(err)
			}
			bal, err := demo.IntField(res, "balance")
			if err != nil {
				return fail(err)
			}
			if _, err := tx.Do(ctx, e.cfg.Surreal, client.Merge(surrealTable, sid, map[string]any{"balance": bal + 1})); err != nil {
				return fail(err)
			}
			if err := tx.Commit(ctx); err != nil {
				return classify(err)
			}
			e.committed.add(tx.ID())
			return outOK, nil
		},
		floor: func(ctx context.Context, f *floorEnv, rnd *rand.Rand) (outcome, error) {
			pid, sid := rnd.Int64N(int64(f.accounts)), rnd.Int64N(int64(f.accounts))
			t := f.begin(ctx)
			if _, err := t.exec(f.pgA, participants.Operation{Kind: participants.OpSQL, SQL: sqlDebit, Args: []any{pid}}); err != nil {
				return t.fail(err)
			}
			rid := participants.RecordID{Table: surrealTable, ID: sid}
			res, err := t.exec(f.surreal, participants.Operation{Kind: participants.OpRead, Record: rid})
			if err != nil {
				return t.fail(err)
			}
			bal, err := floorBalance(res)
			if err != nil {
				return t.fail(err)
			}
			if _, err := t.exec(f.surreal, participants.Operation{Kind: participants.OpMerge, Record: rid, Content: map[string]any{"balance": bal + 1}}); err != nil {
				return t.fail(err)
			}
			return t.commit()
		},
		baseline: func(ctx context.Context, e *env, worker int, rnd *rand.Rand) (outcome, error) {
			pid, sid := rnd.Int64N(int64(e.cfg.Accounts)), rnd.Int64N(int64(e.cfg.Accounts))
			if _, err := e.pgA.Exec(ctx, sqlDebit, pid); err != nil {
				return outError, err
			}
			sc, err := e.surrealConn(ctx, worker)
			if err != nil {
				return outError, err
			}
			if _, err := sc.Query(ctx, surqlCredit, map[string]any{"tb": surrealTable, "id": sid}); err != nil {
				return outError, err
			}
			return outOK, nil
		},
	},
	// pg-pg: move 1 between rows of two PostgreSQL databases, one Run call
	// (statements and commit in one round trip). Baseline: two autocommit UPDATEs.
	"pg-pg": {
		setup: func(ctx context.Context, e *env) error {
			if err := setupPG(ctx, e.pgA, e.cfg.Accounts); err != nil {
				return err
			}
			return setupPG(ctx, e.pgB, e.cfg.Accounts)
		},
		txcoord: func(ctx context.Context, e *env, opts client.TxOptions, rnd *rand.Rand) (outcome, error) {
			a, b := rnd.Int64N(int64(e.cfg.Accounts)), rnd.Int64N(int64(e.cfg.Accounts))
			txid, _, err := e.c.Run(ctx, opts,
				client.On(e.cfg.PGA, client.SQL(sqlDebit, a)),
				client.On(e.cfg.PGB, client.SQL(sqlCredit, b)))
			if err != nil {
				return classify(err)
			}
			e.committed.add(txid)
			return outOK, nil
		},
		floor: func(ctx context.Context, f *floorEnv, rnd *rand.Rand) (outcome, error) {
			a, b := rnd.Int64N(int64(f.accounts)), rnd.Int64N(int64(f.accounts))
			t := f.begin(ctx)
			if err := t.queue(f.pgA, participants.Operation{Kind: participants.OpSQL, SQL: sqlDebit, Args: []any{a}}); err != nil {
				return t.fail(err)
			}
			if err := t.queue(f.pgB, participants.Operation{Kind: participants.OpSQL, SQL: sqlCredit, Args: []any{b}}); err != nil {
				return t.fail(err)
			}
			return t.commit()
		},
		baseline: func(ctx context.Context, e *env, _ int, rnd *rand.Rand) (outcome, error) {
			a, b := rnd.Int64N(int64(e.cfg.Accounts)), rnd.Int64N(int64(e.cfg.Accounts))
			if _, err := e.pgA.Exec(ctx, sqlDebit, a); err != nil {
				return outError, err
			}
			if _, err := e.pgB.Exec(ctx, sqlCredit, b); err != nil {
				return outError, err
			}
			return outOK, nil
		},
	},
	// single: one UPDATE through txcoord (one participant: one-phase
	// commit). Baseline: the same UPDATE, autocommit.
	"single": {
		onePhase: true,
		setup:    func(ctx context.Context, e *env) error { return setupPG(ctx, e.pgA, e.cfg.Accounts) },
		txcoord: func(ctx context.Context, e *env, opts client.TxOptions, rnd *rand.Rand) (outcome, error) {
			_, _, err := e.c.Run(ctx, opts,
				client.On(e.cfg.PGA, client.SQL(sqlCredit, rnd.Int64N(int64(e.cfg.Accounts)))))
			return classify(err)
		},
		floor: func(ctx context.Context, f *floorEnv, rnd *rand.Rand) (outcome, error) {
			t := f.begin(ctx)
			if err := t.queue(f.pgA, participants.Operation{Kind: participants.OpSQL, SQL: sqlCredit, Args: []any{rnd.Int64N(int64(f.accounts))}}); err != nil {
				return t.fail(err)
			}
			return t.commit()
		},
		baseline: func(ctx context.Context, e *env, _ int, rnd *rand.Rand) (outcome, error) {
			if _, err := e.pgA.Exec(ctx, sqlCredit, rnd.Int64N(int64(e.cfg.Accounts))); err != nil {
				return outError, err
			}
			return outOK, nil
		},
	},
}
