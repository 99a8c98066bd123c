package surrealdb

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// tableSchema is what prepare needs to know about a table, introspected
// with INFO FOR DB/TABLE ... STRUCTURE and cached for Config.SchemaCacheTTL.
type tableSchema struct {
	exists bool
	// constrained: a write can fail for reasons the version check and the
	// locks do not cover (SCHEMAFULL, a defined field with a type, ASSERT or
	// VALUE, a UNIQUE index, an event, a relation or view table). Only then
	// does prepare run the dry-run.
	constrained bool
	// guarded: the table has the adapter's guard event.
	guarded bool
	// unique lists the UNIQUE indexes: prepare locks every value a branch
	// writes into one, so that no other branch can take it before commit.
	unique  []uniqueIndex
	fetched time.Time
}

type uniqueIndex struct {
	name string
	cols []string
	// lockable: every column is a plain (dotted) field path whose value
	// the adapter can compute from an after-image. Indexes on array
	// elements (tags[*]) are left to the dry-run alone.
	lockable bool
}

// guardEventName is the adapter's event on guarded tables; it is not a
// constraint (it only refuses writes while a lock exists, and a held lock
// already fails prepare).
const guardEventName = "txc_guard"

// schemaCache caches table schemas. Safe for concurrent use.
type schemaCache struct {
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	tables map[string]*tableSchema
}

func newSchemaCache(ttl time.Duration, now func() time.Time) *schemaCache {
	return &schemaCache{ttl: ttl, now: now, tables: map[string]*tableSchema{}}
}

// get returns the schemas of tables, introspecting the stale ones in one query.
func (s *schemaCache) get(ctx context.Context, p *pool, tables []string) (map[string]*tableSchema, error) {
	out := make(map[string]*tableSchema, len(tables))
	var stale []string
	now := s.now()
	s.mu.Lock()
	for _, t := range tables {
		if ts, ok := s.tables[t]; ok && now.Sub(ts.fetched) < s.ttl {
			out[t] = ts
		} else {
			stale = append(stale, t)
		}
	}
	s.mu.Unlock()
	if len(stale) == 0 {
		return out, nil
	}
	fetched, err := introspect(ctx, p, stale)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for t, ts := range fetched {
		ts.fetched = now
		s.tables[t] = ts
		out[t] = ts
	}
	s.mu.Unlock()
	return out, nil
}

// forget drops a table's cached schema (after the adapter changed it).
func (s *schemaCache) forget(table string) {
	s.mu.Lock()
	delete(s.tables, table)
	s.mu.Unlock()
}

// quoteIdent quotes a table name for the few statements that cannot take it
// as a parameter (INFO, DEFINE): backticks, with ` and \ escaped.
func quoteIdent(name string) string {
	r := strings.NewReplacer("\\", "\\\\", "`", "\\`")
	return "`" + r.Replace(name) + "`"
}

// dbTable and tableStructure are the parts of INFO ... STRUCTURE used.
type dbTable struct {
	Name       string         `json:"name"`
	Schemafull bool           `json:"schemafull"`
	Kind       map[string]any `json:"kind"` // {kind: ANY | NORMAL | RELATION, ...}
	View       any            `json:"view"` // set for AS SELECT tables
}

type tableStructure struct {
	Fields  []map[string]any `json:"fields"`
	Indexes []struct {
		Name  string   `json:"name"`
		Cols  []string `json:"cols"`
		Index any      `json:"index"`
	} `json:"indexes"`
	Events []struct {
		Name string `json:"name"`
	} `json:"events"`
}

func introspect(ctx context.Context, p *pool, tables []string) (map[string]*tableSchema, error) {
	var sb strings.Builder
	// Only the tables asked for: a database may have thousands.
	sb.WriteString("RETURN (INFO FOR DB STRUCTURE).tables[WHERE name IN $txc_tables];\n")
	for _, t := range tables {
		fmt.Fprintf(&sb, "INFO FOR TABLE %s STRUCTURE;\n", quoteIdent(t))
	}
	q, err := p.query(ctx, sb.String(), map[string]any{"txc_tables": tables})
	if err != nil {
		return nil, fmt.Errorf("introspect tables: %w", err)
	}
	if errs := q.errors(); len(errs) > 0 {
		return nil, fmt.Errorf("introspect tables: %w", errs[0])
	}
	if len(q.stmts) != len(tables)+1 {
		return nil, fmt.Errorf("introspect tables: %d results for %d statements", len(q.stmts), len(tables)+1)
	}
	var dbTables []dbTable
	if err := q.dec.Unmarshal(q.stmts[0].Result, &dbTables); err != nil {
		return nil, fmt.Errorf("introspect tables: decode INFO FOR DB: %w", err)
	}
	out := make(map[string]*tableSchema, len(tables))
	for i, t := range tables {
		var ts tableStructure
		if err := q.dec.Unmarshal(q.stmts[i+1].Result, &ts); err != nil {
			return nil, fmt.Errorf("introspect table %s: %w", t, err)
		}
		s := &tableSchema{}
		for _, dt := range dbTables {
			if dt.Name != t {
				continue
			}
			s.exists = true
			kind, _ := dt.Kind["kind"].(string)
			if dt.Schemafull || strings.EqualFold(kind, "RELATION") || dt.View != nil {
				s.constrained = true
			}
		}
		if len(ts.Fields) > 0 {
			s.constrained = true
		}
		for _, ev := range ts.Events {
			if ev.Name == guardEventName {
				s.guarded = true
			} else {
				s.constrained = true
			}
		}
		for _, ix := range ts.Indexes {
			if kind, _ := ix.Index.(string); !strings.EqualFold(kind, "UNIQUE") {
				continue
			}
			s.constrained = true
			u := uniqueIndex{name: ix.Name, cols: ix.Cols, lockable: len(ix.Cols) > 0}
			for _, c := range ix.Cols {
				if strings.ContainsAny(c, "[]*`⟨⟩ ") {
					u.lockable = false
				}
			}
			s.unique = append(s.unique, u)
		}
		out[t] = s
	}
	return out, nil
}
