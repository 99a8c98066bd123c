package surrealdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/surrealdb/surrealdb.go/pkg/connection"
)

// stmtResult is one statement's entry in the reply to the `query` RPC. The
// SDK's QueryResult keeps only the message of a failed statement; SurrealDB
// 3 also sends a structured kind and details, which classification needs.
type stmtResult struct {
	Status string          `json:"status"`
	Result cbor.RawMessage `json:"result"`
	// Kind and Details are set when Status is "ERR": kind is the error class
	// (AlreadyExists, Thrown, Internal, Query...), details a nested
	// {kind, details} object (for AlreadyExists: {kind: Record, details: {id}}).
	Kind    string         `json:"kind"`
	Details map[string]any `json:"details"`
}

// Error kinds and detail kinds sent by SurrealDB 3 (measured on 3.0.2).
const (
	kindAlreadyExists = "AlreadyExists"
	kindThrown        = "Thrown"
	kindInternal      = "Internal"
	kindQuery         = "Query"

	detailNotExecuted = "NotExecuted" // echo: the statement ran, its transaction failed later
	detailCancelled   = "Cancelled"   // echo: the statement never ran, an earlier one failed
)

// stmtError is one failed statement: a real error, not an echo of another.
type stmtError struct {
	Kind    string
	Detail  string // details.kind
	Message string
	// RecordID is details.details.id when the server names a record
	// (AlreadyExists), in SurrealQL text form.
	RecordID string
}

func (e *stmtError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s/%s: %s", e.Kind, e.Detail, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Kind, e.Message)
}

// isEcho reports whether a failed statement only echoes the failure of
// another statement of its transaction (it was rolled back or never ran).
func (r *stmtResult) isEcho() bool {
	if r.Kind != kindQuery {
		return false
	}
	d, _ := r.Details["kind"].(string)
	return d == detailNotExecuted || d == detailCancelled
}

// queryReply is the decoded reply of one `query` RPC.
type queryReply struct {
	stmts []stmtResult
	dec   interface {
		Unmarshal(data []byte, dst any) error
	}
}

// errors returns the real statement errors in statement order, echoes
// skipped. A text transaction that fails has one real error (the statement
// that failed), except for a commit-time conflict, which SurrealDB reports
// on every statement of the transaction.
func (q *queryReply) errors() []*stmtError {
	var out []*stmtError
	for i := range q.stmts {
		r := &q.stmts[i]
		if r.Status == "OK" || r.isEcho() {
			continue
		}
		out = append(out, q.errorAt(i))
	}
	return out
}

// errorAt decodes the failed statement i.
func (q *queryReply) errorAt(i int) *stmtError {
	r := &q.stmts[i]
	e := &stmtError{Kind: r.Kind}
	if r.Kind == "" {
		e.Kind = "Unknown"
	}
	e.Detail, _ = r.Details["kind"].(string)
	if inner, ok := r.Details["details"].(map[string]any); ok {
		e.RecordID, _ = inner["id"].(string)
	}
	var msg any
	if err := q.dec.Unmarshal(r.Result, &msg); err == nil {
		e.Message = fmt.Sprint(msg)
	}
	return e
}

// last decodes the result of the last statement into dst. The last
// statement of every query the adapter builds is a plain top-level RETURN or
// SELECT, so its result is present whatever happened in the transactions
// before it (a failed transaction sends no result for its COMMIT, so
// positions inside a query are not stable; the last one is).
func (q *queryReply) last(dst any) error {
	if len(q.stmts) == 0 {
		return errors.New("empty query reply")
	}
	r := &q.stmts[len(q.stmts)-1]
	if r.Status != "OK" {
		return fmt.Errorf("last statement failed: %w", q.errorAt(len(q.stmts)-1))
	}
	return q.dec.Unmarshal(r.Result, dst)
}

// runQuery sends one `query` RPC on c. A transport failure returns an error
// from the connection (the caller discards the connection); an RPC-level
// failure returns *rpcError; statement failures are in the reply.
func runQuery(ctx context.Context, c *wsConn, sql string, vars map[string]any) (*queryReply, error) {
	if vars == nil {
		vars = map[string]any{}
	}
	raw, err := c.call(ctx, &connection.RPCRequest{Method: "query", Params: []any{sql, vars}})
	if err != nil {
		return nil, err
	}
	q := &queryReply{dec: c.dec}
	if err := c.dec.Unmarshal(raw.Result, &q.stmts); err != nil {
		return nil, fmt.Errorf("decode query reply: %w", err)
	}
	return q, nil
}

// hasMarker reports whether e is a THROW of the adapter's marker m. THROW
// carries no structured payload in 3.0.2 (kind Thrown, message "An error
// occurred: <value>"), so the adapter's own marker text is what identifies
// it; markers are prefixed so user THROWs cannot collide by accident. A
// THROW inside an event (the guard) comes back as kind Internal, "Error
// while processing event <name>: An error occurred: <value>".
func (e *stmtError) hasMarker(m string) bool {
	return (e.Kind == kindThrown || e.Kind == kindInternal) && strings.Contains(e.Message, m)
}
