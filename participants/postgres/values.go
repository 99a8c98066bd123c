package postgres

import (
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/txcoord/txcoord/participants"
)

// resultValue converts a value decoded by pgx into the participant value set
// (participants/operation.go): nil, bool, int64, float64, string, []byte,
// time.Time, []any and map[string]any.
//
// Conversions:
//   - smallint, integer, bigint → int64; real, double precision → float64;
//   - numeric → string in PostgreSQL's own text form ("12.50", "NaN",
//     "Infinity"), never float64: numeric is exact and a float would round
//     money and keys silently;
//   - uuid → string in the canonical 8-4-4-4-12 lower-case form;
//   - date, timestamp, timestamptz → time.Time (timestamp without time zone
//     comes back as UTC); infinite dates and timestamps → "infinity" or
//     "-infinity" strings;
//   - json, jsonb → the decoded document (objects map[string]any, arrays
//     []any, numbers float64);
//   - arrays → []any of converted elements;
//   - bytea → []byte (a copy);
//   - everything else (interval, time, inet, ranges, enums, user types) →
//     its PostgreSQL text form as a string.
func resultValue(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case bool, int64, float64, string:
		return x
	case time.Time:
		return x
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x > math.MaxInt64 {
			return fmt.Sprint(x)
		}
		return int64(x)
	case float32:
		return float64(x)
	case []byte:
		return append([]byte(nil), x...)
	case [16]byte:
		return uuidString(x)
	case pgtype.Numeric:
		s, err := x.Value()
		if err != nil || s == nil {
			return nil
		}
		return s
	case pgtype.Date:
		if !x.Valid {
			return nil
		}
		return infinityOr(x.InfinityModifier, x.Time)
	case pgtype.Timestamp:
		if !x.Valid {
			return nil
		}
		return infinityOr(x.InfinityModifier, x.Time)
	case pgtype.Timestamptz:
		if !x.Valid {
			return nil
		}
		return infinityOr(x.InfinityModifier, x.Time)
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = resultValue(x[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = resultValue(e)
		}
		return out
	case driver.Valuer:
		dv, err := x.Value()
		if err != nil {
			return fmt.Sprint(v)
		}
		if _, again := dv.(driver.Valuer); again {
			return fmt.Sprint(dv)
		}
		return resultValue(dv)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func infinityOr(m pgtype.InfinityModifier, t time.Time) any {
	switch m {
	case pgtype.Infinity:
		return "infinity"
	case pgtype.NegativeInfinity:
		return "-infinity"
	}
	return t
}

func uuidString(u [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], u[10:])
	return string(buf[:])
}

// argValue converts an argument from the participant value set into what
// pgx encodes well when the server infers parameter types (the statements
// run in QueryExecModeExec: text-format parameters of unspecified type).
//
//   - nil, bool, int64, float64, string, []byte, time.Time pass unchanged
//     (other Go integer and float types are accepted too);
//   - []any becomes a PostgreSQL array: the elements must all be of one
//     scalar kind (all int64, all float64, all string, all bool); nil
//     elements become NULL. For a JSON array argument pass a string (or a
//     map) and cast: $1::jsonb;
//   - map[string]any becomes JSON text (cast with $1::jsonb where the type
//     is not evident).
//
// Other types return an error wrapping participants.ErrBadOperation.
func argValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, []byte, time.Time,
		int, int8, int16, int32, uint8, uint16, uint32, float32:
		return x, nil
	case map[string]any:
		b, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("map argument is not JSON-encodable: %v: %w", err, participants.ErrBadOperation)
		}
		return string(b), nil
	case []any:
		return arrayArg(x)
	}
	return nil, fmt.Errorf("argument of type %T is not in the participant value set: %w", v, participants.ErrBadOperation)
}

func arrayArg(xs []any) (any, error) {
	kind := ""
	for _, e := range xs {
		k := ""
		switch e.(type) {
		case nil:
			continue
		case int64, int, int32:
			k = "int"
		case float64:
			k = "float"
		case string:
			k = "string"
		case bool:
			k = "bool"
		default:
			return nil, fmt.Errorf("array argument element of type %T: only arrays of one scalar kind are supported (pass JSON as a string): %w", e, participants.ErrBadOperation)
		}
		if kind != "" && k != kind {
			return nil, fmt.Errorf("array argument mixes %s and %s elements: %w", kind, k, participants.ErrBadOperation)
		}
		kind = k
	}
	switch kind {
	case "int":
		out := make([]*int64, len(xs))
		for i, e := range xs {
			switch n := e.(type) {
			case int64:
				out[i] = &n
			case int:
				m := int64(n)
				out[i] = &m
			case int32:
				m := int64(n)
				out[i] = &m
			}
		}
		return out, nil
	case "float":
		out := make([]*float64, len(xs))
		for i, e := range xs {
			if f, ok := e.(float64); ok {
				out[i] = &f
			}
		}
		return out, nil
	case "bool":
		out := make([]*bool, len(xs))
		for i, e := range xs {
			if b, ok := e.(bool); ok {
				out[i] = &b
			}
		}
		return out, nil
	default: // strings, or all nil / empty: a text array the server can cast
		out := make([]*string, len(xs))
		for i, e := range xs {
			if s, ok := e.(string); ok {
				out[i] = &s
			}
		}
		return out, nil
	}
}
