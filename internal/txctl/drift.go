package txctl

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"github.com/txcoord/txcoord/internal/drift"
)

// Exit codes of txctl drift (its own, as diff and cmp have them).
const (
	DriftNone  = 0 // both sides agree
	DriftFound = 1 // differences reported
	DriftError = 2 // the check could not run (configuration, connection, query)
)

func (o *options) driftCommand() *cobra.Command {
	var configPath, only string
	c := &cobra.Command{
		Use:   "drift --config MAPPING.yaml",
		Short: "Compare records on their PostgreSQL and SurrealDB sides; exit 1 when they differ",
		Long: `For entities written through txcoord to both stores (a row in a PostgreSQL
table, a record in a SurrealDB table), reads both sides and reports:

  missing_in_surrealdb  a PostgreSQL row whose record does not exist
  missing_in_postgres   a SurrealDB record whose row does not exist
  differs               a compared field whose values differ

The mapping file names, per mapping, the PostgreSQL table and key column(s)
(their values are the SurrealDB record id: one column ↔ table:value, several
↔ table:[v1, v2]), the SurrealDB table, and the compared column ↔ field
pairs, with an optional transform (lower, trim, number). Numbers compare by
value (5 = 5.0), null and an absent field are the same.

Both sides are read in pages (page_size rows per query), so memory stays
bounded; progress goes to stderr on long runs. Credentials come only from
the environment or files (postgres.dsn_env / dsn_file / password_env /
password_file, surrealdb.password_env / password_file). It talks to the
databases directly; --addr is not used.

Rows written while the check runs can show as drift: run it again to confirm.

Exit 0: no drift. 1: drift found. 2: error (bad mapping file, a database not
reachable, a query failing).

Mapping file:

  postgres:  {dsn_env: ORDERS_PG_DSN}
  surrealdb: {url: ws://127.0.0.1:8000/rpc, namespace: shop, database: main,
              username: root, password_env: SURREAL_PASS}
  page_size: 500
  mappings:
    - name: orders
      postgres:  {table: orders, key: [id]}
      surrealdb: {table: order}
      fields:
        - {postgres: total,  surrealdb: total, transform: number}
        - {postgres: status, surrealdb: state}`,
		Example: `  txctl drift --config drift.yaml
  txctl drift --config drift.yaml --mapping orders -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if configPath == "" {
				return exitf(DriftError, "--config is required: the mapping file (see txctl drift --help)")
			}
			cfg, err := drift.Load(configPath)
			if err != nil {
				return exitf(DriftError, "%v", err)
			}
			pg, err := drift.OpenPostgres(ctx, cfg, o.env.Getenv)
			if err != nil {
				return exitf(DriftError, "%v", err)
			}
			defer pg.Close()
			sur, err := drift.OpenSurreal(ctx, cfg, o.env.Getenv)
			if err != nil {
				return exitf(DriftError, "%v", err)
			}
			defer sur.Close()
			rep, err := drift.Check(ctx, cfg, only, pg, sur, o.env.Stderr)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return exitf(DriftError, "%v (raise --timeout for large tables)", err)
				}
				return exitf(DriftError, "%v", err)
			}
			if o.json() {
				if err := o.printJSON(map[string]any{"drift": rep.Drift(), "mappings": rep.Mappings}); err != nil {
					return exitf(DriftError, "%v", err)
				}
			} else {
				o.printDrift(rep)
			}
			if rep.Drift() {
				return quiet(DriftFound)
			}
			return nil
		}),
	}
	c.Flags().StringVar(&configPath, "config", "", "mapping file (YAML; see the help above)")
	c.Flags().StringVar(&only, "mapping", "", "check only the mapping with this name")
	_ = c.MarkFlagFilename("config", "yaml", "yml")
	return c
}

func (o *options) printDrift(rep drift.Report) {
	shown := 0
	t := o.table("MAPPING", "KEY", "PROBLEM", "FIELD", "POSTGRES", "SURREALDB")
	for _, m := range rep.Mappings {
		for _, it := range m.Items {
			t.row(m.Name, it.Key, it.Problem, it.Field, it.Postgres, it.SurrealDB)
			shown++
		}
	}
	if shown > 0 {
		t.flush()
	}
	for _, m := range rep.Mappings {
		verdict := "no drift"
		if m.Drift() {
			verdict = "DRIFT"
		}
		o.printf("%s: %s: %d postgres rows, %d surrealdb records; %d missing in surrealdb, %d missing in postgres, %d rows differ (%d fields)\n",
			m.Name, verdict, m.PostgresRows, m.SurrealDBRecords, m.MissingInSurrealDB, m.MissingInPostgres, m.DifferingRows, m.DifferingFields)
		if m.Truncated {
			o.printf("%s: only the first %d differences are listed (max_reported)\n", m.Name, len(m.Items))
		}
	}
}
