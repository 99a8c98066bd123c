package surrealdb

import (
	"fmt"
	"strings"
)

// stmtRole says what a statement of a generated script is for, so that a
// failed statement can be classified by what it did.
type stmtRole uint8

const (
	roleOther     stmtRole = iota
	roleBegin              // BEGIN of a text transaction
	roleCommit             // COMMIT: a failed transaction sends no result for it
	roleCheck              // status / version check (THROWs a marker)
	roleLock               // CREATE of a lock
	roleApply              // UPSERT/DELETE of a user record
	roleIntent             // CREATE of the intent
	roleDryRunEnd          // the dry-run's final THROW
	roleDDL                // DEFINE outside any transaction; its failure alone is harmless
)

// script builds one `query` RPC: SurrealQL text with parameters. Values
// always travel as parameters; only identifiers validated by Config (the
// adapter's table names, the version field) and quoted table names for DDL
// are written into the text.
type script struct {
	sb    strings.Builder
	vars  map[string]any
	roles []stmtRole
	recs  []int // record index per statement, -1 if none
	n     int
}

func newScript() *script { return &script{vars: map[string]any{}} }

// param binds v to a fresh parameter and returns its $name. The txc_ prefix
// keeps them apart from user variables (OpQuery rejects that prefix).
func (s *script) param(v any) string {
	name := fmt.Sprintf("txc_%d", s.n)
	s.n++
	s.vars[name] = v
	return "$" + name
}

// stmt appends one statement with its role and record index (-1: none).
func (s *script) stmt(role stmtRole, rec int, format string, args ...any) {
	fmt.Fprintf(&s.sb, format, args...)
	s.sb.WriteString(";\n")
	s.roles = append(s.roles, role)
	s.recs = append(s.recs, rec)
}

func (s *script) begin()  { s.stmt(roleBegin, -1, "BEGIN TRANSACTION") }
func (s *script) commit() { s.stmt(roleCommit, -1, "COMMIT TRANSACTION") }

func (s *script) text() string { return s.sb.String() }

// failure is the first real error of a reply, located in its script.
type failure struct {
	err  *stmtError
	role stmtRole
	rec  int
}

// locate maps the reply's results back to the script's statements and
// returns the real errors in order, each with the role of the statement
// that raised it. Results line up with statements except that a failed
// transaction sends no result for its COMMIT. If the shapes do not match
// (a server that answers differently), roles are reported as roleOther.
func (s *script) locate(q *queryReply) []failure {
	type located struct {
		role stmtRole
		rec  int
	}
	var at []located
	ri := 0
	txFailed := false
	ok := true
	for si, role := range s.roles {
		switch role {
		case roleBegin:
			txFailed = false
		case roleCommit:
			if txFailed {
				continue // no result
			}
		}
		if ri >= len(q.stmts) {
			ok = false
			break
		}
		if q.stmts[ri].Status != "OK" {
			txFailed = true
		}
		at = append(at, located{role, s.recs[si]})
		ri++
	}
	if ri != len(q.stmts) {
		ok = false
	}
	var out []failure
	for i := range q.stmts {
		r := &q.stmts[i]
		if r.Status == "OK" || r.isEcho() {
			continue
		}
		f := failure{err: q.errorAt(i), role: roleOther, rec: -1}
		if ok {
			f.role, f.rec = at[i].role, at[i].rec
		}
		if f.role == roleDDL {
			// A DEFINE ... IF NOT EXISTS that lost a race: the table exists.
			// If it does not, the statements that need it fail on their own.
			continue
		}
		out = append(out, f)
	}
	return out
}
