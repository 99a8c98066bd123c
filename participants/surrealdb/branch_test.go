package surrealdb

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participants"
)

// offlineParticipant has a pool that was never dialled: enough for what
// happens before any I/O.
func offlineParticipant(t *testing.T, now time.Time) *Participant {
	cfg := validConfig()
	cfg.URL = "ws://127.0.0.1:1/rpc"
	cfg.Knobs = &TestingKnobs{Now: func() time.Time { return now }}
	em, err := newEncMode()
	if err != nil {
		t.Fatal(err)
	}
	return &Participant{cfg: cfg, tbl: cfg.tables(), logger: slog.New(slog.DiscardHandler),
		pool: newPool(cfg, em, slog.New(slog.DiscardHandler)), schemas: newSchemaCache(time.Minute, cfg.now)}
}

func TestBranchDeadlineAndValidation(t *testing.T) {
	now := time.Now()
	p := offlineParticipant(t, now)
	ctx := context.Background()
	if _, err := p.Begin(ctx, "", participants.BranchOptions{}); !errors.Is(err, participants.ErrBadOperation) {
		t.Fatalf("empty GID: %v", err)
	}
	if _, err := p.Begin(ctx, string(make([]byte, 201)), participants.BranchOptions{}); !errors.Is(err, participants.ErrBadOperation) {
		t.Fatalf("long GID: %v", err)
	}
	b, err := p.Begin(ctx, "g:1", participants.BranchOptions{Deadline: now.Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Execute(ctx, participants.Operation{Kind: participants.OpRead, Record: participants.RecordID{Table: "t", ID: "a"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("execute past the deadline = %v", err)
	}
	if v, err := b.Prepare(ctx); v != participants.VoteNo || !errors.Is(err, participants.ErrVoteNo) {
		t.Fatalf("prepare of a failed branch = %v, %v", v, err)
	}
	if err := b.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}

	// Operations refused before any I/O.
	for name, op := range map[string]participants.Operation{
		"sql":          {Kind: participants.OpSQL, SQL: "SELECT 1"},
		"no table":     {Kind: participants.OpRead, Record: participants.RecordID{ID: "a"}},
		"own table":    {Kind: participants.OpUpsert, Record: participants.RecordID{Table: p.tbl.lock, ID: "a"}},
		"content id":   {Kind: participants.OpUpsert, Record: participants.RecordID{Table: "t", ID: "a"}, Content: map[string]any{"id": 1}},
		"version":      {Kind: participants.OpUpsert, Record: participants.RecordID{Table: "t", ID: "a"}, Content: map[string]any{p.cfg.VersionField: "x"}},
		"write query":  {Kind: participants.OpQuery, SQL: "DELETE t"},
		"reserved var": {Kind: participants.OpQuery, SQL: "SELECT * FROM t WHERE a = $txc_0", Vars: map[string]any{"txc_0": 1}},
		"unknown kind": {Kind: participants.OpKind(99)},
	} {
		b, _ := p.Begin(ctx, "g:2", participants.BranchOptions{})
		_, err := b.Execute(ctx, op)
		if !errors.Is(err, participants.ErrBadOperation) && !errors.Is(err, participants.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrBadOperation or ErrUnsupported", name, err)
		}
		if _, err := b.Execute(ctx, op); !errors.Is(err, participants.ErrBranchFailed) {
			t.Errorf("%s: second execute = %v, want ErrBranchFailed", name, err)
		}
	}
}
