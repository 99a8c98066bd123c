package drift

import (
	"context"
	"fmt"
	"io"
)

// Row is one side's record: its key values (the PostgreSQL key columns in
// order, or the SurrealDB record id split the same way) and the compared
// values in Mapping.Fields order.
type Row struct {
	Key    []any
	Values []any
}

// Source reads one side of a mapping. Implementations must return pages
// in a stable order with no row twice, so that paging with the last key of
// the previous page visits every row once.
type Source interface {
	// Page returns up to n rows after the key after (nil: from the start).
	Page(ctx context.Context, m Mapping, after []any, n int) ([]Row, error)
	// Lookup returns the rows whose keys are among keys (absent ones are
	// left out), in any order.
	Lookup(ctx context.Context, m Mapping, keys [][]any) ([]Row, error)
}

// Problems an Item reports.
const (
	MissingInSurrealDB = "missing_in_surrealdb"
	MissingInPostgres  = "missing_in_postgres"
	Differs            = "differs"
)

// Item is one difference.
type Item struct {
	Key     string `json:"key"` // JSON of the key value (an array for composite keys)
	Problem string `json:"problem"`
	// For Differs: the field (PostgreSQL column ↔ SurrealDB field) and both
	// normalized values ("NULL" for null or absent).
	Field     string `json:"field,omitempty"`
	Postgres  string `json:"postgres,omitempty"`
	SurrealDB string `json:"surrealdb,omitempty"`
}

// MappingReport is the result for one mapping. Counts are complete; Items
// holds at most Config.MaxReported differences (Truncated says more exist).
type MappingReport struct {
	Name               string `json:"name"`
	PostgresRows       int64  `json:"postgres_rows"`
	SurrealDBRecords   int64  `json:"surrealdb_records"`
	MissingInSurrealDB int64  `json:"missing_in_surrealdb"`
	MissingInPostgres  int64  `json:"missing_in_postgres"`
	DifferingRows      int64  `json:"differing_rows"`
	DifferingFields    int64  `json:"differing_fields"`
	Items              []Item `json:"items"`
	Truncated          bool   `json:"truncated"`
}

// Drift reports whether anything differs.
func (m MappingReport) Drift() bool {
	return m.MissingInSurrealDB+m.MissingInPostgres+m.DifferingRows > 0
}

// Report is the result of a Check.
type Report struct {
	Mappings []MappingReport `json:"mappings"`
}

// Drift reports whether any mapping differs.
func (r Report) Drift() bool {
	for _, m := range r.Mappings {
		if m.Drift() {
			return true
		}
	}
	return false
}

// progressEvery is how many pages pass between progress lines.
const progressEvery = 20

// Check compares every mapping of cfg (or only the named one) in two
// passes: PostgreSQL pages looked up in SurrealDB (missing there, or
// differing), then SurrealDB pages looked up in PostgreSQL (missing there).
// Memory is bounded by the page size and MaxReported. Progress lines go to
// progress (nil: none). Rows written while the check runs may show as
// drift: run it again to confirm.
func Check(ctx context.Context, cfg Config, only string, pg, sur Source, progress io.Writer) (Report, error) {
	var rep Report
	found := only == ""
	for _, m := range cfg.Mappings {
		if only != "" && m.Name != only {
			continue
		}
		found = true
		mr, err := checkMapping(ctx, cfg, m, pg, sur, progress)
		if err != nil {
			return rep, fmt.Errorf("mapping %s: %w", m.Name, err)
		}
		rep.Mappings = append(rep.Mappings, mr)
	}
	if !found {
		return rep, fmt.Errorf("%w: no mapping named %q", ErrConfig, only)
	}
	return rep, nil
}

func checkMapping(ctx context.Context, cfg Config, m Mapping, pg, sur Source, progress io.Writer) (MappingReport, error) {
	mr := MappingReport{Name: m.Name, Items: []Item{}}
	report := func(it Item) {
		if len(mr.Items) < cfg.MaxReported {
			mr.Items = append(mr.Items, it)
		} else {
			mr.Truncated = true
		}
	}
	say := func(format string, args ...any) {
		if progress != nil {
			fmt.Fprintf(progress, "drift: %s: "+format+"\n", append([]any{m.Name}, args...)...)
		}
	}
	// Pass 1: every PostgreSQL row, looked up in SurrealDB.
	var after []any
	for page := 1; ; page++ {
		rows, err := pg.Page(ctx, m, after, cfg.PageSize)
		if err != nil {
			return mr, fmt.Errorf("read postgres %s: %w", m.Postgres.Table, err)
		}
		if len(rows) == 0 {
			break
		}
		keys := make([][]any, len(rows))
		for i, r := range rows {
			keys[i] = r.Key
		}
		other, err := sur.Lookup(ctx, m, keys)
		if err != nil {
			return mr, fmt.Errorf("look up surrealdb %s: %w", m.SurrealDB.Table, err)
		}
		byKey := make(map[string]Row, len(other))
		for _, o := range other {
			byKey[keyString(o.Key)] = o
		}
		for _, r := range rows {
			mr.PostgresRows++
			k := keyString(r.Key)
			o, ok := byKey[k]
			if !ok {
				mr.MissingInSurrealDB++
				report(Item{Key: k, Problem: MissingInSurrealDB})
				continue
			}
			differs := false
			for i, f := range m.Fields {
				pv, sv := normalize(r.Values[i], f.Transform), normalize(o.Values[i], f.Transform)
				if pv != sv {
					differs = true
					mr.DifferingFields++
					report(Item{Key: k, Problem: Differs, Field: f.Postgres + " ↔ " + f.SurrealDB, Postgres: pv, SurrealDB: sv})
				}
			}
			if differs {
				mr.DifferingRows++
			}
		}
		after = rows[len(rows)-1].Key
		if page%progressEvery == 0 {
			say("postgres %s → surrealdb %s: %d rows checked", m.Postgres.Table, m.SurrealDB.Table, mr.PostgresRows)
		}
		if len(rows) < cfg.PageSize {
			break
		}
	}
	say("postgres %s → surrealdb %s: %d rows checked, %d missing in surrealdb, %d differing",
		m.Postgres.Table, m.SurrealDB.Table, mr.PostgresRows, mr.MissingInSurrealDB, mr.DifferingRows)
	// Pass 2: every SurrealDB record, looked up in PostgreSQL.
	after = nil
	for page := 1; ; page++ {
		recs, err := sur.Page(ctx, m, after, cfg.PageSize)
		if err != nil {
			return mr, fmt.Errorf("read surrealdb %s: %w", m.SurrealDB.Table, err)
		}
		if len(recs) == 0 {
			break
		}
		keys := make([][]any, len(recs))
		for i, r := range recs {
			keys[i] = r.Key
		}
		other, err := pg.Lookup(ctx, m, keys)
		if err != nil {
			return mr, fmt.Errorf("look up postgres %s: %w", m.Postgres.Table, err)
		}
		have := make(map[string]bool, len(other))
		for _, o := range other {
			have[keyString(o.Key)] = true
		}
		for _, r := range recs {
			mr.SurrealDBRecords++
			if k := keyString(r.Key); !have[k] {
				mr.MissingInPostgres++
				report(Item{Key: k, Problem: MissingInPostgres})
			}
		}
		after = recs[len(recs)-1].Key
		if page%progressEvery == 0 {
			say("surrealdb %s → postgres %s: %d records checked", m.SurrealDB.Table, m.Postgres.Table, mr.SurrealDBRecords)
		}
		if len(recs) < cfg.PageSize {
			break
		}
	}
	say("surrealdb %s → postgres %s: %d records checked, %d missing in postgres",
		m.SurrealDB.Table, m.Postgres.Table, mr.SurrealDBRecords, mr.MissingInPostgres)
	return mr, nil
}
