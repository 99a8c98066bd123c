// Package drift compares records written through txcoord on their two sides:
// a PostgreSQL table and a SurrealDB table holding the same entities, under
// a configured mapping (which key, which columns ↔ which fields). It reads
// both sides in pages, so memory is bounded by the page size and the number
// of differences reported, and returns a Report: rows missing on either side
// and fields whose values differ.
//
// Few types: Config (the YAML mapping file), Report, and Check, which runs
// the comparison over two Sources.
package drift

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the mapping file. Credentials never appear in it: the
// PostgreSQL DSN comes from an environment variable or a file (a DSN written
// in the file must not carry a password), the SurrealDB password likewise.
type Config struct {
	Postgres struct {
		// DSN without a password (host, port, database, user), or DSNEnv /
		// DSNFile naming where the full DSN is.
		DSN     string `yaml:"dsn"`
		DSNEnv  string `yaml:"dsn_env"`
		DSNFile string `yaml:"dsn_file"`
		// PasswordEnv / PasswordFile supply the password separately.
		PasswordEnv  string `yaml:"password_env"`
		PasswordFile string `yaml:"password_file"`
	} `yaml:"postgres"`
	SurrealDB struct {
		URL          string `yaml:"url"`
		Namespace    string `yaml:"namespace"`
		Database     string `yaml:"database"`
		Username     string `yaml:"username"`
		PasswordEnv  string `yaml:"password_env"`
		PasswordFile string `yaml:"password_file"`
	} `yaml:"surrealdb"`
	// PageSize is rows (and records) read per query; default 500.
	PageSize int `yaml:"page_size"`
	// MaxReported bounds the differences listed per mapping (counts are
	// always complete); default 1000.
	MaxReported int       `yaml:"max_reported"`
	Mappings    []Mapping `yaml:"mappings"`
}

// Mapping pairs a PostgreSQL table with a SurrealDB table. A row's key
// columns, in order, are the SurrealDB record's id: one key column maps to
// the id's value (accounts.id = 7 ↔ account:7), several to an array id
// (['eu', 7]).
type Mapping struct {
	Name     string `yaml:"name"`
	Postgres struct {
		Table string   `yaml:"table"`
		Key   []string `yaml:"key"`
	} `yaml:"postgres"`
	SurrealDB struct {
		Table string `yaml:"table"`
	} `yaml:"surrealdb"`
	Fields []Field `yaml:"fields"`
}

// Field is one compared value: a PostgreSQL column and a SurrealDB field
// (a plain name or a dotted path), with an optional transform applied to
// both sides before comparing.
type Field struct {
	Postgres  string `yaml:"postgres"`
	SurrealDB string `yaml:"surrealdb"`
	// Transform: "" (exact, numbers compared by value: 5 = 5.0),
	// "lower", "trim", "number" (both sides as decimal numbers: "12.50" = 12.5).
	Transform string `yaml:"transform"`
}

// Transforms are the known Field.Transform values.
var Transforms = []string{"", "lower", "trim", "number"}

const (
	DefaultPageSize    = 500
	maxPageSize        = 10000 // one query's result must stay small
	DefaultMaxReported = 1000
	maxConfigBytes     = 1 << 20
)

var (
	// identRE: table, column and field names are interpolated into queries,
	// so only plain identifiers (and dotted paths for SurrealDB fields).
	identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	pathRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62}){0,7}$`)
	// pgTableRE allows a schema: public.accounts.
	pgTableRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$`)

	// ErrConfig: the mapping file is invalid (the message names the field).
	ErrConfig = errors.New("invalid drift configuration")
)

// Load reads and validates a mapping file.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := Parse(b)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads YAML (unknown keys are errors) and validates it.
func Parse(data []byte) (Config, error) {
	var c Config
	if len(data) > maxConfigBytes {
		return c, fmt.Errorf("%w: %d bytes; at most %d", ErrConfig, len(data), maxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.MaxReported == 0 {
		c.MaxReported = DefaultMaxReported
	}
	return c, c.Validate()
}

// Validate names the field at fault and how to fix it.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	pg := c.Postgres
	switch n := btoi(pg.DSN != "") + btoi(pg.DSNEnv != "") + btoi(pg.DSNFile != ""); {
	case n == 0:
		add("postgres: set dsn_env (an environment variable holding the DSN), dsn_file, or dsn (without a password)")
	case n > 1:
		add("postgres: set one of dsn, dsn_env, dsn_file")
	}
	if pg.DSN != "" && dsnHasPassword(pg.DSN) {
		add("postgres.dsn carries a password: credentials come only from the environment or files (dsn_env, dsn_file, password_env, password_file)")
	}
	if pg.PasswordEnv != "" && pg.PasswordFile != "" {
		add("postgres: set password_env or password_file, not both")
	}
	s := c.SurrealDB
	if !strings.HasPrefix(s.URL, "ws://") && !strings.HasPrefix(s.URL, "wss://") {
		add("surrealdb.url %q: want ws://host:port/rpc or wss://...", s.URL)
	}
	if s.Namespace == "" || s.Database == "" {
		add("surrealdb: namespace and database are required")
	}
	if s.PasswordEnv != "" && s.PasswordFile != "" {
		add("surrealdb: set password_env or password_file, not both")
	}
	if c.PageSize < 1 || c.PageSize > maxPageSize {
		add("page_size %d: use 1 to %d", c.PageSize, maxPageSize)
	}
	if c.MaxReported < 1 {
		add("max_reported %d: must be at least 1", c.MaxReported)
	}
	if len(c.Mappings) == 0 {
		add("mappings: none; add at least one (name, postgres.table/key, surrealdb.table, fields)")
	}
	names := map[string]bool{}
	for i, m := range c.Mappings {
		f := fmt.Sprintf("mappings[%d]", i)
		if !identRE.MatchString(m.Name) {
			add("%s.name %q: use letters, digits and _", f, m.Name)
		}
		if names[m.Name] {
			add("%s.name %q is used twice", f, m.Name)
		}
		names[m.Name] = true
		if !pgTableRE.MatchString(m.Postgres.Table) {
			add("%s.postgres.table %q: want a table name (optionally schema.table)", f, m.Postgres.Table)
		}
		if len(m.Postgres.Key) == 0 {
			add("%s.postgres.key: name the key column(s) whose values are the SurrealDB record id", f)
		}
		for j, k := range m.Postgres.Key {
			if !identRE.MatchString(k) {
				add("%s.postgres.key[%d] %q: want a column name", f, j, k)
			}
		}
		if !identRE.MatchString(m.SurrealDB.Table) {
			add("%s.surrealdb.table %q: want a table name", f, m.SurrealDB.Table)
		}
		if len(m.Fields) == 0 {
			add("%s.fields: none; list the compared postgres column ↔ surrealdb field pairs", f)
		}
		for j, fl := range m.Fields {
			ff := fmt.Sprintf("%s.fields[%d]", f, j)
			if !identRE.MatchString(fl.Postgres) {
				add("%s.postgres %q: want a column name", ff, fl.Postgres)
			}
			if !pathRE.MatchString(fl.SurrealDB) || fl.SurrealDB == "id" {
				add("%s.surrealdb %q: want a field name or dotted path (not id: the id is the key)", ff, fl.SurrealDB)
			}
			known := false
			for _, t := range Transforms {
				known = known || t == fl.Transform
			}
			if !known {
				add("%s.transform %q: use lower, trim, number or leave it out", ff, fl.Transform)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrConfig, errors.Join(errs...))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dsnHasPassword reports a password in a URL DSN (user:pass@) or a
// key=value DSN (password=).
func dsnHasPassword(dsn string) bool {
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			return strings.Contains(rest[:at], ":")
		}
		return strings.Contains(rest, "password=")
	}
	for _, kv := range strings.Fields(dsn) {
		if strings.HasPrefix(kv, "password=") {
			return true
		}
	}
	return false
}
