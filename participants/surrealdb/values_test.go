package surrealdb

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/surrealdb/surrealdb.go/pkg/models"

	"github.com/txcoord/txcoord/participants"
)

func TestRecordKeyKeepsIDsApart(t *testing.T) {
	ids := []models.RecordID{
		models.NewRecordID("acct", int64(123)),
		models.NewRecordID("acct", "123"),
		models.NewRecordID("acct", uint64(124)),
		models.NewRecordID("acct", "k-1"),
		models.NewRecordID("acct", []any{"a", int64(1)}),
		models.NewRecordID("acct", []any{"a", "1"}),
		models.NewRecordID("acct", map[string]any{"x": int64(1)}),
		models.NewRecordID("acct2", int64(123)),
		models.NewRecordID("acct", []any{models.NewRecordID("x", int64(1))}),
		models.NewRecordID("acct", []any{models.NewRecordID("x", "1")}),
	}
	seen := map[string]int{}
	for i, id := range ids {
		k := recordKey(id)
		if j, dup := seen[k]; dup {
			t.Fatalf("ids %d and %d share the key %q", j, i, k)
		}
		seen[k] = i
	}
	// Same id, other representation: same key.
	a := recordKey(models.NewRecordID("t", map[string]any{"x": int64(1), "y": "z"}))
	b := recordKey(models.NewRecordID("t", map[string]any{"y": "z", "x": uint64(1)}))
	if a != b {
		t.Fatalf("object ids with the same fields differ: %q vs %q", a, b)
	}
}

func TestToRecordID(t *testing.T) {
	for _, tc := range []struct {
		in      participants.RecordID
		wantErr bool
	}{
		{participants.RecordID{Table: "t", ID: "a"}, false},
		{participants.RecordID{Table: "t", ID: 5}, false}, // int converts to int64
		{participants.RecordID{Table: "t", ID: int64(5)}, false},
		{participants.RecordID{Table: "t", ID: []any{"a", 1}}, false},
		{participants.RecordID{Table: "t", ID: map[string]any{"a": 1}}, false},
		{participants.RecordID{Table: "", ID: "a"}, true},
		{participants.RecordID{Table: "t", ID: nil}, true},
		{participants.RecordID{Table: "t", ID: 1.5}, true},
		{participants.RecordID{Table: "t", ID: true}, true},
		{participants.RecordID{Table: "t", ID: struct{}{}}, true},
	} {
		got, err := toRecordID(tc.in)
		if tc.wantErr {
			if !errors.Is(err, participants.ErrBadOperation) {
				t.Errorf("toRecordID(%#v) = %v, %v; want ErrBadOperation", tc.in, got, err)
			}
			continue
		}
		if err != nil || got.Table != tc.in.Table {
			t.Errorf("toRecordID(%#v) = %v, %v", tc.in, got, err)
		}
	}
	got, _ := toRecordID(participants.RecordID{Table: "t", ID: 5})
	if _, ok := got.ID.(int64); !ok {
		t.Fatalf("int id became %T, want int64", got.ID)
	}
}

func TestValueConversions(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	in := map[string]any{
		"i": 1, "i8": int8(2), "u": uint(3), "f": float32(1.5), "s": "x", "b": []byte("y"), "t": when,
		"n": nil, "l": []any{1, "a"}, "m": map[string]any{"k": int16(4)},
		"link": participants.RecordID{Table: "o", ID: "p"},
	}
	out, err := toSurreal(in)
	if err != nil {
		t.Fatal(err)
	}
	m := out.(map[string]any)
	if m["i"] != int64(1) || m["i8"] != int64(2) || m["u"] != int64(3) || m["f"] != float64(1.5) {
		t.Fatalf("numbers: %#v", m)
	}
	if m["link"] != models.NewRecordID("o", "p") {
		t.Fatalf("link: %#v", m["link"])
	}
	if fmt.Sprint(m["l"]) != "[1 a]" || m["m"].(map[string]any)["k"] != int64(4) {
		t.Fatalf("nested: %#v", m)
	}
	if _, err := toSurreal(map[string]any{"c": make(chan int)}); err == nil {
		t.Fatal("a channel converted")
	}

	back := fromSurreal(map[string]any{
		"u": uint64(7), "dt": models.CustomDateTime{Time: when}, "rid": models.NewRecordID("a", int64(1)),
		"l": []any{uint64(1)}, "none": models.CustomNil{}, "dec": models.DecimalString("1.10"),
	}).(map[string]any)
	if back["u"] != int64(7) || back["dt"] != when || back["rid"] != "a:1" || back["none"] != nil {
		t.Fatalf("fromSurreal: %#v", back)
	}
	if back["l"].([]any)[0] != int64(1) || back["dec"] != "1.10" {
		t.Fatalf("fromSurreal nested/decimal: %#v", back)
	}
}

func TestDeepMerge(t *testing.T) {
	base := map[string]any{"a": int64(1), "o": map[string]any{"x": int64(1), "y": int64(2)}, "l": []any{"p"}}
	patch := map[string]any{"b": int64(2), "o": map[string]any{"y": int64(3), "z": int64(4)}, "l": []any{"q"}}
	got := deepMerge(base, patch)
	want := "map[a:1 b:2 l:[q] o:map[x:1 y:3 z:4]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("deepMerge = %v, want %v", got, want)
	}
	if fmt.Sprint(base) != "map[a:1 l:[p] o:map[x:1 y:2]]" {
		t.Fatalf("deepMerge modified its input: %v", base)
	}
	// A non-object replaces an object and the other way round.
	if got := deepMerge(map[string]any{"o": map[string]any{"x": 1}}, map[string]any{"o": "flat"}); got["o"] != "flat" {
		t.Fatalf("scalar over object: %v", got)
	}
}

func TestFieldPath(t *testing.T) {
	doc := map[string]any{"a": map[string]any{"b": "v"}, "s": "x"}
	for _, tc := range []struct {
		path string
		want any
		ok   bool
	}{
		{"s", "x", true},
		{"a.b", "v", true},
		{"a.c", nil, true},
		{"s.b", nil, true}, // not an object: NONE
		{"missing", nil, true},
		{"tags[*]", nil, false},
		{"tags.*", nil, false},
	} {
		got, ok := fieldPath(doc, tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("fieldPath(%q) = %v, %v; want %v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewVersion(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 1000; i++ {
		v := newVersion(t0.Add(time.Duration(i) * time.Millisecond))
		if len(v) != 26 || strings.Trim(v, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") != "" {
			t.Fatalf("not a ULID: %q", v)
		}
		if seen[v] {
			t.Fatalf("version repeated: %s", v)
		}
		seen[v] = true
		if v[:10] < prev {
			t.Fatalf("time prefix not ordered: %s after %s", v[:10], prev)
		}
		prev = v[:10]
	}
	// Same millisecond: still unique (80 random bits).
	if newVersion(t0) == newVersion(t0) {
		t.Fatal("two versions in the same millisecond are equal")
	}
	// The time prefix encodes the milliseconds (checked independently: 1_700_000_000_000 in Crockford base32).
	if got := newVersion(t0)[:10]; got != "01HF7YAT00" {
		t.Fatalf("time prefix %s, want 01HF7YAT00", got)
	}
}
