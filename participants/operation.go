package participants

import "fmt"

// OpKind is what an Operation does.
type OpKind int

const (
	// OpSQL runs one SQL statement with positional args ($1, $2, ...) on a
	// PostgreSQL participant.
	OpSQL OpKind = iota + 1
	// SurrealDB record operations, on one record id unless noted.
	OpRead   // read the record (committed data plus this branch's staged writes)
	OpQuery  // a read-only SurrealQL SELECT with Vars; result rows are not version-tracked writes
	OpCreate // create; fails (NO vote at latest) if the record exists
	OpUpsert // replace the whole record's content, creating it if absent
	OpMerge  // merge Content into the existing record (creates it if absent)
	OpDelete // delete the record (no-op if absent)
)

func (k OpKind) String() string {
	switch k {
	case OpSQL:
		return "SQL"
	case OpRead:
		return "READ"
	case OpQuery:
		return "QUERY"
	case OpCreate:
		return "CREATE"
	case OpUpsert:
		return "UPSERT"
	case OpMerge:
		return "MERGE"
	case OpDelete:
		return "DELETE"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Values used in Args, Vars, Content and Result rows are limited to:
// nil, bool, int64, float64, string, []byte, time.Time, []any and
// map[string]any (nested of the same). Adapters convert to and from their
// database's types.

// RecordID names a SurrealDB record: table plus id. ID is a string, int64,
// []any or map[string]any.
type RecordID struct {
	Table string
	ID    any
}

func (r RecordID) String() string { return fmt.Sprintf("%s:%v", r.Table, r.ID) }

// Operation is one statement in a branch.
type Operation struct {
	Kind OpKind
	// SQL and Args for OpSQL; SQL is also the SurrealQL text for OpQuery.
	SQL  string
	Args []any
	// Vars are named parameters for OpQuery.
	Vars map[string]any
	// Record for the record operations.
	Record RecordID
	// Content for OpCreate, OpUpsert, OpMerge.
	Content map[string]any
}

// Result is what an operation returned.
type Result struct {
	Columns      []string
	Rows         [][]any
	RowsAffected int64
}
