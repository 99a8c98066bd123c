package drift

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5"
	"github.com/txcoord/txcoord/internal/demo"
)

// Postgres reads mappings from PostgreSQL over one connection.
type Postgres struct{ conn *pgx.Conn }

// Surreal reads mappings from SurrealDB over one connection.
type Surreal struct{ conn *demo.SurrealConn }

// secret reads a credential from an environment variable or a file's first
// line (what the config names), never from the config itself.
func secret(getenv func(string) string, env, file, what string) (string, error) {
	switch {
	case env != "":
		v := getenv(env)
		if v == "" {
			return "", fmt.Errorf("%s: environment variable %s is not set", what, env)
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r"), nil
	}
	return "", nil
}

// OpenPostgres connects as cfg.Postgres says. Errors never quote the DSN.
func OpenPostgres(ctx context.Context, cfg Config, getenv func(string) string) (*Postgres, error) {
	pc := cfg.Postgres
	dsn := pc.DSN
	if pc.DSNEnv != "" || pc.DSNFile != "" {
		var err error
		if dsn, err = secret(getenv, pc.DSNEnv, pc.DSNFile, "postgres dsn"); err != nil {
			return nil, err
		}
	}
	pw, err := secret(getenv, pc.PasswordEnv, pc.PasswordFile, "postgres password")
	if err != nil {
		return nil, err
	}
	pcfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: the DSN does not parse (not shown: it may hold a password)")
	}
	if pw != "" {
		pcfg.Password = pw
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect to %s:%d/%s as %s: %v", pcfg.Host, pcfg.Port, pcfg.Database, pcfg.User, redactURL(err.Error()))
	}
	return &Postgres{conn: conn}, nil
}

// userinfo matches a URL's user:password@ part.
var userinfo = regexp.MustCompile(`//[^/@\s]+@`)

// redactURL drops user info from anything that looks like a URL in s.
func redactURL(s string) string { return userinfo.ReplaceAllString(s, "//") }

// Close closes the connection.
func (p *Postgres) Close() { p.conn.Close(context.Background()) }

func pgIdent(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

func (p *Postgres) selectList(m Mapping) string {
	cols := make([]string, 0, len(m.Postgres.Key)+len(m.Fields))
	for _, k := range m.Postgres.Key {
		cols = append(cols, pgIdent(k))
	}
	for _, f := range m.Fields {
		cols = append(cols, pgIdent(f.Postgres))
	}
	return strings.Join(cols, ", ")
}

func keyTuple(m Mapping) string {
	ks := make([]string, len(m.Postgres.Key))
	for i, k := range m.Postgres.Key {
		ks[i] = pgIdent(k)
	}
	return "(" + strings.Join(ks, ", ") + ")"
}

func (p *Postgres) scan(rows pgx.Rows, m Mapping) ([]Row, error) {
	defer rows.Close()
	var out []Row
	nk := len(m.Postgres.Key)
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		out = append(out, Row{Key: vals[:nk:nk], Values: vals[nk:]})
	}
	return out, rows.Err()
}

// Page reads rows ordered by key (keyset pagination on the key columns).
func (p *Postgres) Page(ctx context.Context, m Mapping, after []any, n int) ([]Row, error) {
	kt := keyTuple(m)
	q := fmt.Sprintf("SELECT %s FROM %s", p.selectList(m), pgIdent(m.Postgres.Table))
	args := []any{}
	if after != nil {
		ph := make([]string, len(after))
		for i := range after {
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		q += fmt.Sprintf(" WHERE %s > (%s)", kt, strings.Join(ph, ", "))
		args = append(args, after...)
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d", strings.Trim(kt, "()"), n)
	rows, err := p.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return p.scan(rows, m)
}

// Lookup reads the rows with the given keys.
func (p *Postgres) Lookup(ctx context.Context, m Mapping, keys [][]any) ([]Row, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var tuples []string
	var args []any
	for _, k := range keys {
		if len(k) != len(m.Postgres.Key) {
			// A SurrealDB id shaped unlike the key (a string id for a
			// two-column key): it has no row here.
			continue
		}
		ph := make([]string, len(k))
		for i, v := range k {
			args = append(args, v)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		tuples = append(tuples, "("+strings.Join(ph, ", ")+")")
	}
	if len(tuples) == 0 {
		return nil, nil
	}
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s IN (%s)", p.selectList(m), pgIdent(m.Postgres.Table), keyTuple(m), strings.Join(tuples, ", "))
	rows, err := p.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return p.scan(rows, m)
}

// OpenSurreal connects, signs in and selects the namespace and database.
func OpenSurreal(ctx context.Context, cfg Config, getenv func(string) string) (*Surreal, error) {
	sc := cfg.SurrealDB
	pw, err := secret(getenv, sc.PasswordEnv, sc.PasswordFile, "surrealdb password")
	if err != nil {
		return nil, err
	}
	conn, err := demo.DialSurreal(ctx, demo.SurrealParams{URL: sc.URL, User: sc.Username, Pass: pw, Namespace: sc.Namespace, Database: sc.Database})
	if err != nil {
		return nil, err
	}
	return &Surreal{conn: conn}, nil
}

// Close closes the connection.
func (s *Surreal) Close() { s.conn.Close() }

func (s *Surreal) selectList(m Mapping) string {
	cols := []string{"id"}
	for i, f := range m.Fields {
		cols = append(cols, fmt.Sprintf("%s AS f%d", f.SurrealDB, i))
	}
	return strings.Join(cols, ", ")
}

// idValue is the record id's value for a key: the value itself for one key
// column, an array for several.
func idValue(k []any) any {
	if len(k) == 1 {
		return k[0]
	}
	return k
}

// keyOf splits a record id's value into key parts.
func keyOf(m Mapping, id any) []any {
	if a, ok := id.([]any); ok && len(m.Postgres.Key) > 1 {
		return a
	}
	return []any{id}
}

func (s *Surreal) decode(m Mapping, raw []cbor.RawMessage) ([]Row, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var recs []map[string]any
	if err := cbor.Unmarshal(raw[len(raw)-1], &recs); err != nil {
		return nil, fmt.Errorf("decode records: %w", err)
	}
	out := make([]Row, 0, len(recs))
	for _, r := range recs {
		tag, ok := r["id"].(cbor.Tag)
		parts, ok2 := tag.Content.([]any)
		if !ok || !ok2 || tag.Number != tagRecordID || len(parts) != 2 {
			return nil, fmt.Errorf("record without a record id: %v", r["id"])
		}
		vals := make([]any, len(m.Fields))
		for i := range m.Fields {
			vals[i] = r[fmt.Sprintf("f%d", i)]
		}
		out = append(out, Row{Key: keyOf(m, parts[1]), Values: vals})
	}
	return out, nil
}

// Page reads records in record-id order, from the one after the key after
// (a record-id range scan: no full scan per page).
func (s *Surreal) Page(ctx context.Context, m Mapping, after []any, n int) ([]Row, error) {
	from := m.SurrealDB.Table
	vars := map[string]any{"t": m.SurrealDB.Table}
	if after != nil {
		from = "type::record($t, $after>..)"
		vars["after"] = idValue(after)
	}
	raw, err := s.conn.Query(ctx, fmt.Sprintf("SELECT %s FROM %s LIMIT %d;", s.selectList(m), from, n), vars)
	if err != nil {
		return nil, err
	}
	return s.decode(m, raw)
}

// Lookup reads the records with the given keys.
func (s *Surreal) Lookup(ctx context.Context, m Mapping, keys [][]any) ([]Row, error) {
	ids := make([]any, len(keys))
	for i, k := range keys {
		ids[i] = cbor.Tag{Number: tagRecordID, Content: []any{m.SurrealDB.Table, idValue(k)}}
	}
	raw, err := s.conn.Query(ctx, fmt.Sprintf("SELECT %s FROM $ids WHERE id != NONE;", s.selectList(m)), map[string]any{"ids": ids})
	if err != nil {
		return nil, err
	}
	return s.decode(m, raw)
}
