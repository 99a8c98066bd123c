package drift

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5/pgtype"
)

const validYAML = `postgres: {dsn_env: PG}
surrealdb: {url: ws://127.0.0.1:8000/rpc, namespace: n, database: d, username: root, password_env: SP}
mappings:
  - name: orders
    postgres: {table: public.orders, key: [region, id]}
    surrealdb: {table: order}
    fields:
      - {postgres: total, surrealdb: total, transform: number}
      - {postgres: city, surrealdb: address.city}
`

func TestParseDefaultsAndValidation(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.PageSize != DefaultPageSize || c.MaxReported != DefaultMaxReported {
		t.Errorf("defaults: %+v", c)
	}
	for _, tc := range []struct{ edit, want string }{
		{"dsn_env: PG", "dsn: postgres://u:secret@h/db"},
		{"transform: number", "transform: upper"},
		{"table: public.orders", "table: orders; DROP"},
		{"surrealdb: address.city", "surrealdb: id"},
		{"key: [region, id]", "key: []"},
		{"password_env: SP}", "password_env: SP}\nbogus: 1"},
	} {
		bad := strings.Replace(validYAML, tc.edit, tc.want, 1)
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q accepted", tc.want)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error quotes the password: %v", err)
		}
	}
}

func TestNormalize(t *testing.T) {
	num := pgtype.Numeric{Int: big.NewInt(1250), Exp: -2, Valid: true}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		a, b      any
		transform string
		equal     bool
	}{
		{int32(5), uint64(5), "", true},
		{int64(5), 5.0, "", true},
		{num, 12.5, "", true},
		{num, cbor.Tag{Number: tagDecimal, Content: "12.500"}, "", true},
		{"12.50", 12.5, "number", true},
		{"12.50", 12.5, "", false},
		{"Ann", "ann", "lower", true},
		{"Ann", "ann", "", false},
		{" a ", "a", "trim", true},
		{nil, cbor.Tag{Number: tagNone}, "", true},
		{nil, "", "", false},
		{at, cbor.Tag{Number: tagDatetime, Content: []any{uint64(at.Unix()), uint64(6000)}}, "", true},
		{true, "true", "", true},
	} {
		if got := normalize(tc.a, tc.transform) == normalize(tc.b, tc.transform); got != tc.equal {
			t.Errorf("%#v vs %#v (%s): equal=%v, want %v (%q %q)", tc.a, tc.b, tc.transform, got, tc.equal,
				normalize(tc.a, tc.transform), normalize(tc.b, tc.transform))
		}
	}
	if keyString([]any{int64(7)}) == keyString([]any{"7"}) {
		t.Error("key 7 and key \"7\" must differ")
	}
	if got := keyString([]any{"eu", uint64(7)}); got != `["eu",7]` {
		t.Errorf("composite key: %s", got)
	}
}

// FuzzParse: the mapping file decoder never panics, and what it accepts
// validates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte("mappings: [{name: a}]"))
	f.Add([]byte("page_size: -1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && c.Validate() != nil {
			t.Fatalf("accepted an invalid config: %s", data)
		}
	})
}
