package surrealdb

import (
	"errors"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/participants"
)

func TestCheckReadOnly(t *testing.T) {
	accept := map[string]string{
		"SELECT * FROM acct":                                  "SELECT * FROM acct",
		"select name FROM acct WHERE n > $min;":               "select name FROM acct WHERE n > $min",
		"SELECT * FROM acct;;  \n":                            "SELECT * FROM acct",
		"  SELECT count() FROM acct GROUP ALL":                "  SELECT count() FROM acct GROUP ALL",
		"SELECT * FROM acct WHERE note = 'DELETE me; now'":    "SELECT * FROM acct WHERE note = 'DELETE me; now'",
		"SELECT * FROM acct WHERE note = \"it's; CREATE\"":    "SELECT * FROM acct WHERE note = \"it's; CREATE\"",
		"SELECT string::lowercase(name) FROM acct":            "SELECT string::lowercase(name) FROM acct",
		"SELECT * FROM type::table($t) LIMIT 10":              "SELECT * FROM type::table($t) LIMIT 10",
		"SELECT * FROM acct -- UPDATE in a comment\n":         "SELECT * FROM acct", // trailing comments go: the adapter appends statements
		"SELECT * FROM acct /* DELETE */ WHERE a = 1":         "SELECT * FROM acct /* DELETE */ WHERE a = 1",
		"SELECT * FROM `weird;table` WHERE x = 1":             "SELECT * FROM `weird;table` WHERE x = 1",
		"SELECT * FROM ⟨odd;name⟩":                            "SELECT * FROM ⟨odd;name⟩",
		"SELECT * FROM acct WHERE id = r'acct:1'":             "SELECT * FROM acct WHERE id = r'acct:1'",
		"SELECT ->knows->person AS friends FROM person:alice": "SELECT ->knows->person AS friends FROM person:alice",
		"SELECT * FROM acct WHERE s = 'a\\'; DELETE acct'":    "SELECT * FROM acct WHERE s = 'a\\'; DELETE acct'",
	}
	for in, want := range accept {
		got, err := checkReadOnly(in)
		if err != nil || got != want {
			t.Errorf("checkReadOnly(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	refuse := []string{
		"",
		";",
		"UPDATE acct SET n = 1",
		"DELETE acct",
		"SELECT * FROM acct; DELETE acct",
		"SELECT * FROM (UPDATE acct SET n = 1)",
		"SELECT * FROM (CREATE x:1)",
		"SELECT * FROM { UPSERT x:1 }",
		"SELECT *, (RELATE a:1->b->c:1) FROM x",
		"SELECT * FROM x WHERE (INSERT INTO y {a: 1})",
		"SELECT fn::transfer() FROM x",
		"SELECT http::post('http://x') FROM x",
		"SELECT sequence::nextval('s') FROM x",
		"SELECT * FROM x WHERE f'bucket:/a'.put('b')",
		"LET $a = 1; SELECT * FROM x",
		"LIVE SELECT * FROM x",
		"SELECT * FROM x; SELECT * FROM y",
		"RETURN 1",
		"INFO FOR DB",
		"SELECT * FROM x WHERE a = 'unterminated",
		"SELECT * FROM x /* unterminated",
		"SELECT update FROM x", // conservative: a field named like a statement is refused
	}
	for _, in := range refuse {
		if got, err := checkReadOnly(in); !errors.Is(err, participants.ErrUnsupported) {
			t.Errorf("checkReadOnly(%q) = %q, %v; want ErrUnsupported", in, got, err)
		}
	}
	if _, err := checkReadOnly("SELECT '" + strings.Repeat("x", maxQueryText) + "'"); !errors.Is(err, participants.ErrBadOperation) {
		t.Errorf("an oversized query = %v, want ErrBadOperation", err)
	}
}
