package surrealdb

import (
	"context"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
	"github.com/txcoord/txcoord/participants/conformance"
)

// harness maps the conformance suite's keys onto records of one schemaless
// table, and its constraint violations onto a table with an ASSERT.
type harness struct {
	cfg     Config
	reader  *Participant // for Committed: one shared participant, not one per call
	kv      string       // key/value table: kv:<key> = { v: <value> }
	checked string       // constrained table: n must be a non-negative int
}

func (h *harness) Open(t testing.TB) participants.Participant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Open(ctx, h.cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func (h *harness) rid(key string) participants.RecordID {
	return participants.RecordID{Table: h.kv, ID: key}
}

func (h *harness) Write(key, value string) participants.Operation {
	return participants.Operation{Kind: participants.OpUpsert, Record: h.rid(key), Content: map[string]any{"v": value}}
}

func (h *harness) Read(key string) participants.Operation {
	return participants.Operation{Kind: participants.OpRead, Record: h.rid(key)}
}

func (h *harness) Value(t testing.TB, res participants.Result) (string, bool) {
	t.Helper()
	if len(res.Rows) == 0 {
		return "", false
	}
	for i, c := range res.Columns {
		if c == "v" {
			s, _ := res.Rows[0][i].(string)
			return s, true
		}
	}
	t.Fatalf("read result without a v column: %v", res.Columns)
	return "", false
}

// Violation writes n = -1 into a table whose field n must be >= 0: the
// dry-run at prepare (or the one-phase commit) catches it.
func (h *harness) Violation(key string) participants.Operation {
	return participants.Operation{Kind: participants.OpUpsert,
		Record: participants.RecordID{Table: h.checked, ID: key}, Content: map[string]any{"n": int64(-1)}}
}

func (h *harness) Committed(t testing.TB, key string) (string, bool) {
	t.Helper()
	v := readField(t, h.reader, h.rid(key), "v")
	if v == nil {
		return "", false
	}
	s, _ := v.(string)
	return s, true
}

func TestConformance(t *testing.T) {
	cfg := integrationConfig(t)
	p := openTest(t, cfg)
	h := &harness{cfg: cfg, kv: "cf_kv", checked: "cf_checked", reader: p}
	raw(t, p, "DEFINE TABLE IF NOT EXISTS cf_kv SCHEMALESS;"+
		"DEFINE TABLE IF NOT EXISTS cf_checked SCHEMALESS;"+
		"DEFINE FIELD IF NOT EXISTS n ON cf_checked TYPE int ASSERT $value >= 0;", nil)
	conformance.Run(t, h)
}
