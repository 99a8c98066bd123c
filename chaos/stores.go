package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	surrealdb "github.com/surrealdb/surrealdb.go"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
	"github.com/surrealdb/surrealdb.go/pkg/connection/gorillaws"
)

// Participant names the run configures on every node.
const (
	PartPG      = "pg"      // PostgreSQL database txcoord_a
	PartPGB     = "pg-b"    // PostgreSQL database txcoord_b
	PartSurreal = "surreal" // SurrealDB namespace txcoord, database chaos
)

// SurrealDB coordinates of the run (the dev server's root user).
const (
	surrealNS   = "txcoord"
	surrealDB   = "chaos"
	surrealUser = "root"
	surrealPass = "root"
)

// The adapter's own SurrealDB tables (participants/surrealdb defaults).
const (
	surrealIntentTable = "txc_intent"
	surrealLockTable   = "txc_lock"
	surrealMarkerTable = "txc_done"
)

// Stores reads and prepares the databases directly, bypassing the
// coordinator and the proxies: schema and opening balances before the run,
// the final state and what is left in doubt after it.
type Stores struct {
	pg         map[string]*pgxpool.Pool // participant → pool (pg, pg-b)
	surrealURL string
}

// OpenStores connects to PostgreSQL at pgAddr (databases txcoord_a and
// txcoord_b) and remembers SurrealDB's address (connections to it are made
// per call: the server is restarted during the run).
func OpenStores(ctx context.Context, pgAddr, surrealAddr string) (*Stores, error) {
	s := &Stores{pg: map[string]*pgxpool.Pool{}, surrealURL: "ws://" + surrealAddr + "/rpc"}
	for part, db := range map[string]string{PartPG: "txcoord_a", PartPGB: "txcoord_b"} {
		cfg, err := pgxpool.ParseConfig(PGDSN(pgAddr, db))
		if err != nil {
			s.Close()
			return nil, err
		}
		cfg.MaxConns = 4
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("connect %s: %w", db, err)
		}
		s.pg[part] = p
	}
	return s, nil
}

// Close closes the pools.
func (s *Stores) Close() {
	for _, p := range s.pg {
		p.Close()
	}
}

// surreal opens a signed-in connection; the caller closes it.
func (s *Stores) surreal(ctx context.Context) (*surrealdb.DB, error) {
	u, err := url.ParseRequestURI(s.surrealURL)
	if err != nil {
		return nil, err
	}
	conf := connection.NewConfig(u)
	conf.Logger = nil
	conn := gorillaws.New(conf)
	conn.Timeout = 10 * time.Second
	db, err := surrealdb.FromConnection(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("surrealdb %s: %w", s.surrealURL, err)
	}
	if _, err := db.SignIn(ctx, surrealdb.Auth{Username: surrealUser, Password: surrealPass}); err != nil {
		db.Close(context.Background())
		return nil, fmt.Errorf("surrealdb sign in: %w", err)
	}
	if err := db.Use(ctx, surrealNS, surrealDB); err != nil {
		db.Close(context.Background())
		return nil, fmt.Errorf("surrealdb use: %w", err)
	}
	return db, nil
}

// surrealRows runs one query and returns the rows of its last statement.
func (s *Stores) surrealRows(ctx context.Context, q string, vars map[string]any) ([]map[string]any, error) {
	db, err := s.surreal(ctx)
	if err != nil {
		return nil, err
	}
	defer db.Close(context.Background())
	res, err := surrealdb.Query[[]map[string]any](ctx, db, q, vars)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, nil // a table never written
		}
		return nil, fmt.Errorf("surrealdb %q: %w", q, err)
	}
	if res == nil || len(*res) == 0 {
		return nil, nil
	}
	return (*res)[len(*res)-1].Result, nil
}

var pgSchema = `
DROP TABLE IF EXISTS chaos_bank, chaos_bank_log, chaos_list, chaos_idem, chaos_probe;
CREATE TABLE chaos_bank (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
-- No unique key on purpose: a transfer applied twice must show up as two rows.
CREATE TABLE chaos_bank_log (uid text NOT NULL, account text NOT NULL, delta bigint NOT NULL);
CREATE TABLE chaos_list (id text PRIMARY KEY, elems text[] NOT NULL DEFAULT '{}');
CREATE TABLE chaos_idem (key text NOT NULL, attempt int NOT NULL);
CREATE TABLE chaos_probe (id text PRIMARY KEY, n bigint NOT NULL);
INSERT INTO chaos_probe VALUES ('p', 0);
`

// Setup resets the run's tables and data: leftovers of an earlier run are
// rolled back (prepared branches of any txcoord cluster: these databases
// belong to the chaos run alone), tables recreated, accounts opened with
// spec.Initial, lists created empty.
func (s *Stores) Setup(ctx context.Context, spec BankSpec, lists []string) error {
	for part, p := range s.pg {
		rows, err := p.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'txc:%' AND database = current_database()")
		if err != nil {
			return fmt.Errorf("%s: list prepared: %w", part, err)
		}
		gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, g := range gids {
			if _, err := p.Exec(ctx, "ROLLBACK PREPARED '"+strings.ReplaceAll(g, "'", "''")+"'"); err != nil {
				return fmt.Errorf("%s: roll back leftover %s: %w", part, g, err)
			}
		}
		if _, err := p.Exec(ctx, pgSchema); err != nil {
			return fmt.Errorf("%s: schema: %w", part, err)
		}
		for _, a := range spec.Accounts {
			ap, id := splitAccount(a)
			if ap == part {
				if _, err := p.Exec(ctx, "INSERT INTO chaos_bank (id, balance) VALUES ($1, $2)", id, spec.Initial); err != nil {
					return fmt.Errorf("%s: open account %s: %w", part, id, err)
				}
			}
		}
		for _, l := range lists {
			if _, err := p.Exec(ctx, "INSERT INTO chaos_list (id) VALUES ($1)", l); err != nil {
				return fmt.Errorf("%s: list %s: %w", part, l, err)
			}
		}
	}
	var b strings.Builder
	for _, t := range []string{"chaos_bank", "chaos_bank_log", "chaos_list", "chaos_idem", "chaos_probe",
		surrealIntentTable, surrealLockTable, surrealMarkerTable} {
		fmt.Fprintf(&b, "REMOVE TABLE IF EXISTS %s;\n", t)
	}
	b.WriteString("DEFINE TABLE chaos_bank SCHEMALESS;\n")
	// A constraint makes the adapter validate every bank branch with its
	// dry-run at prepare (the path that keeps COMMIT from failing).
	b.WriteString("DEFINE FIELD balance ON chaos_bank TYPE int ASSERT $value >= 0;\n")
	for _, t := range []string{"chaos_bank_log", "chaos_list", "chaos_idem", "chaos_probe"} {
		fmt.Fprintf(&b, "DEFINE TABLE %s SCHEMALESS;\n", t)
	}
	for _, a := range spec.Accounts {
		if ap, id := splitAccount(a); ap == PartSurreal {
			fmt.Fprintf(&b, "CREATE type::record('chaos_bank', '%s') CONTENT { balance: %d };\n", id, spec.Initial)
		}
	}
	for _, l := range lists {
		fmt.Fprintf(&b, "CREATE type::record('chaos_list', '%s') CONTENT { elems: [] };\n", l)
	}
	db, err := s.surreal(ctx)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	res, err := surrealdb.Query[any](ctx, db, b.String(), nil)
	if err != nil {
		return fmt.Errorf("surrealdb setup: %w", err)
	}
	for i, r := range *res {
		if r.Status != "OK" {
			return fmt.Errorf("surrealdb setup statement %d: %v", i, r.Error)
		}
	}
	return nil
}

func splitAccount(key string) (participant, id string) {
	participant, id, _ = strings.Cut(key, "/")
	return participant, id
}

// Observe reads the final state of every table the workloads write.
func (s *Stores) Observe(ctx context.Context) (Observed, error) {
	obs := Observed{Tags: map[string]map[string]int{}, Balances: map[string]int64{}, LogSums: map[string]int64{},
		Lists: map[string]map[string][]string{}}
	addTag := func(part, tag string, n int) {
		if obs.Tags[part] == nil {
			obs.Tags[part] = map[string]int{}
		}
		obs.Tags[part][tag] += n
	}
	addList := func(list, part string, elems []string) {
		if obs.Lists[list] == nil {
			obs.Lists[list] = map[string][]string{}
		}
		obs.Lists[list][part] = elems
		for _, e := range elems {
			addTag(part, e, 1)
		}
	}
	for part, p := range s.pg {
		obs.Tags[part] = map[string]int{}
		err := s.pgRows(ctx, p, "SELECT id, balance FROM chaos_bank", func(r pgx.Rows) error {
			var id string
			var bal int64
			err := r.Scan(&id, &bal)
			obs.Balances[part+"/"+id] = bal
			return err
		})
		if err == nil {
			err = s.pgRows(ctx, p, "SELECT uid, account, delta FROM chaos_bank_log", func(r pgx.Rows) error {
				var uid, acct string
				var delta int64
				err := r.Scan(&uid, &acct, &delta)
				addTag(part, uid, 1)
				obs.LogSums[part+"/"+acct] += delta
				return err
			})
		}
		if err == nil {
			err = s.pgRows(ctx, p, "SELECT id, elems FROM chaos_list", func(r pgx.Rows) error {
				var id string
				var elems []string
				err := r.Scan(&id, &elems)
				addList(id, part, elems)
				return err
			})
		}
		if err == nil {
			err = s.pgRows(ctx, p, "SELECT key FROM chaos_idem", func(r pgx.Rows) error {
				var key string
				err := r.Scan(&key)
				addTag(part, key, 1)
				return err
			})
		}
		if err != nil {
			return obs, fmt.Errorf("%s: %w", part, err)
		}
	}
	obs.Tags[PartSurreal] = map[string]int{}
	rows, err := s.surrealRows(ctx, "SELECT record::id(id) AS id, balance FROM chaos_bank", nil)
	if err != nil {
		return obs, err
	}
	for _, r := range rows {
		bal, _ := toInt64(r["balance"])
		obs.Balances[PartSurreal+"/"+fmt.Sprint(r["id"])] = bal
	}
	rows, err = s.surrealRows(ctx, "SELECT uid, account, delta FROM chaos_bank_log", nil)
	if err != nil {
		return obs, err
	}
	for _, r := range rows {
		d, _ := toInt64(r["delta"])
		addTag(PartSurreal, fmt.Sprint(r["uid"]), 1)
		obs.LogSums[PartSurreal+"/"+fmt.Sprint(r["account"])] += d
	}
	rows, err = s.surrealRows(ctx, "SELECT record::id(id) AS id, elems FROM chaos_list", nil)
	if err != nil {
		return obs, err
	}
	for _, r := range rows {
		var elems []string
		if l, ok := r["elems"].([]any); ok {
			for _, e := range l {
				elems = append(elems, fmt.Sprint(e))
			}
		}
		addList(fmt.Sprint(r["id"]), PartSurreal, elems)
	}
	rows, err = s.surrealRows(ctx, "SELECT key FROM chaos_idem", nil)
	if err != nil {
		return obs, err
	}
	for _, r := range rows {
		addTag(PartSurreal, fmt.Sprint(r["key"]), 1)
	}
	return obs, nil
}

func (s *Stores) pgRows(ctx context.Context, p *pgxpool.Pool, q string, each func(pgx.Rows) error) error {
	rows, err := p.Query(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PreparedGIDs lists prepared PostgreSQL transactions whose GID starts with
// prefix, in every database of the cluster.
func (s *Stores) PreparedGIDs(ctx context.Context, prefix string) ([]string, error) {
	rows, err := s.pg[PartPG].Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1) ORDER BY prepared", prefix)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SurrealInDoubt lists the GIDs of intents and locks with prefix.
func (s *Stores) SurrealInDoubt(ctx context.Context, prefix string) (intents, locks []string, err error) {
	for _, t := range []struct {
		table string
		out   *[]string
	}{{surrealIntentTable, &intents}, {surrealLockTable, &locks}} {
		rows, err := s.surrealRows(ctx, fmt.Sprintf("SELECT gid FROM %s WHERE string::starts_with(gid, $p)", t.table), map[string]any{"p": prefix})
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rows {
			*t.out = append(*t.out, fmt.Sprint(r["gid"]))
		}
	}
	return intents, locks, nil
}

// RogueRollback rolls back one prepared PostgreSQL branch with prefix behind
// the coordinator's back: a stand-in for a broken coordinator that presumes
// abort without reading its log. Only --inject uses it, to prove the
// checkers catch such a bug. It returns the GID, or "" if none was prepared.
func (s *Stores) RogueRollback(ctx context.Context, prefix string) (string, error) {
	gids, err := s.PreparedGIDs(ctx, prefix)
	if err != nil || len(gids) == 0 {
		return "", err
	}
	g := gids[len(gids)-1]
	part := PartPG
	if strings.HasSuffix(g, ":"+PartPGB) {
		part = PartPGB
	}
	_, err = s.pg[part].Exec(ctx, "ROLLBACK PREPARED '"+strings.ReplaceAll(g, "'", "''")+"'")
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42704" {
		return "", nil // committed or rolled back meanwhile
	}
	return g, err
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		return int64(x), true
	case uint32:
		return int64(x), true
	case float64:
		return int64(x), true
	case float32:
		return int64(x), true
	}
	return 0, false
}
