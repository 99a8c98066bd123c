package client

import (
	"fmt"

	"github.com/txcoord/txcoord/internal/wire"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
)

// Statement is one operation; build it with SQL or a record constructor.
type Statement struct {
	sql  *pb.SqlStatement
	rec  *pb.RecordOperation
	args []any
	id   any
	body map[string]any
	vars map[string]any
}

// SQL is a PostgreSQL statement with positional args bound to $1, $2...
// Args may be nil, bool, any integer, float, string, []byte, time.Time,
// []any or map[string]any.
func SQL(sql string, args ...any) Statement {
	return Statement{sql: &pb.SqlStatement{Sql: sql}, args: args}
}

func record(kind pb.RecordOperation_Kind, table string, id any, content map[string]any) Statement {
	return Statement{rec: &pb.RecordOperation{Kind: kind, Record: &pb.RecordId{Table: table}}, id: id, body: content}
}

// Read reads a SurrealDB record (committed data plus this transaction's writes).
func Read(table string, id any) Statement { return record(pb.RecordOperation_READ, table, id, nil) }

// Create creates a record; the transaction aborts if it exists.
func Create(table string, id any, content map[string]any) Statement {
	return record(pb.RecordOperation_CREATE, table, id, content)
}

// Upsert replaces a record's content, creating it if absent.
func Upsert(table string, id any, content map[string]any) Statement {
	return record(pb.RecordOperation_UPSERT, table, id, content)
}

// Merge merges fields into a record, creating it if absent.
func Merge(table string, id any, content map[string]any) Statement {
	return record(pb.RecordOperation_MERGE, table, id, content)
}

// Delete deletes a record.
func Delete(table string, id any) Statement { return record(pb.RecordOperation_DELETE, table, id, nil) }

// Query runs a read-only SurrealQL SELECT with named vars.
func Query(surrealql string, vars map[string]any) Statement {
	return Statement{rec: &pb.RecordOperation{Kind: pb.RecordOperation_QUERY, Query: surrealql}, vars: vars}
}

func (s Statement) proto(participant string) (*pb.Statement, error) {
	out := &pb.Statement{Participant: participant}
	switch {
	case s.sql != nil:
		q := &pb.SqlStatement{Sql: s.sql.Sql}
		for i, a := range s.args {
			v, err := toValue(a)
			if err != nil {
				return nil, fmt.Errorf("txcoord: argument $%d: %w", i+1, err)
			}
			q.Args = append(q.Args, v)
		}
		out.Op = &pb.Statement_Sql{Sql: q}
	case s.rec != nil:
		r := &pb.RecordOperation{Kind: s.rec.Kind, Query: s.rec.Query}
		if s.rec.Record != nil {
			id, err := toValue(s.id)
			if err != nil {
				return nil, fmt.Errorf("txcoord: record id: %w", err)
			}
			r.Record = &pb.RecordId{Table: s.rec.Record.Table, Id: id}
		}
		if s.body != nil {
			m, err := toMap(s.body)
			if err != nil {
				return nil, fmt.Errorf("txcoord: content: %w", err)
			}
			r.Content = m
		}
		if len(s.vars) > 0 {
			r.Vars = map[string]*pb.Value{}
			for k, v := range s.vars {
				pv, err := toValue(v)
				if err != nil {
					return nil, fmt.Errorf("txcoord: var %s: %w", k, err)
				}
				r.Vars[k] = pv
			}
		}
		out.Op = &pb.Statement_Record{Record: r}
	default:
		return nil, fmt.Errorf("txcoord: empty statement: build it with SQL, Read, Create, Upsert, Merge, Delete or Query")
	}
	return out, nil
}

func toValue(x any) (*pb.Value, error) {
	switch v := x.(type) {
	case uint:
		return wire.ToProto(uint64(v)), nil
	case uint16:
		return wire.ToProto(uint32(v)), nil
	case uint8:
		return wire.ToProto(uint32(v)), nil
	case []any:
		l := &pb.ListValue{}
		for _, e := range v {
			pv, err := toValue(e)
			if err != nil {
				return nil, err
			}
			l.Values = append(l.Values, pv)
		}
		return &pb.Value{Kind: &pb.Value_ListValue{ListValue: l}}, nil
	case map[string]any:
		m, err := toMap(v)
		if err != nil {
			return nil, err
		}
		return &pb.Value{Kind: &pb.Value_MapValue{MapValue: m}}, nil
	case nil, bool, int, int8, int16, int32, int64, uint32, uint64, float32, float64, string, []byte:
		return wire.ToProto(v), nil
	}
	return wire.ToProto(x), nil
}

func toMap(m map[string]any) (*pb.MapValue, error) {
	out := &pb.MapValue{Fields: map[string]*pb.Value{}}
	for k, v := range m {
		pv, err := toValue(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out.Fields[k] = pv
	}
	return out, nil
}

// Result is what a statement returned.
type Result struct {
	Columns      []string
	Rows         [][]any
	RowsAffected int64
}

func resultFromProto(r *pb.StatementResult) *Result {
	out := &Result{Columns: r.GetColumns(), RowsAffected: r.GetRowsAffected()}
	for _, row := range r.GetRows() {
		vals := make([]any, len(row.Values))
		for i, v := range row.Values {
			vals[i], _ = wire.FromProto(v)
		}
		out.Rows = append(out.Rows, vals)
	}
	return out
}
