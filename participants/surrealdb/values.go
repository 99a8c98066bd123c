package surrealdb

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/surrealdb/surrealdb.go/pkg/models"

	"github.com/txcoord/txcoord/participants"
)

// toRecordID converts a contract record id to the SDK's, checking the id's
// type. Ids always travel as models.RecordID parameters, never as text:
// `misc:k-1` written into a query parses as a subtraction.
func toRecordID(r participants.RecordID) (models.RecordID, error) {
	if r.Table == "" {
		return models.RecordID{}, fmt.Errorf("%w: record id without a table", participants.ErrBadOperation)
	}
	if r.ID == nil {
		return models.RecordID{}, fmt.Errorf("%w: record id %q without an id", participants.ErrBadOperation, r.Table)
	}
	id, err := toSurreal(r.ID)
	if err != nil {
		return models.RecordID{}, fmt.Errorf("%w: record id %s: %v", participants.ErrBadOperation, r, err)
	}
	switch id.(type) {
	case string, int64, []any, map[string]any:
	default:
		return models.RecordID{}, fmt.Errorf("%w: record id %s: id must be a string, int64, array or object, not %T",
			participants.ErrBadOperation, r, r.ID)
	}
	return models.NewRecordID(r.Table, id), nil
}

// toSurreal converts a contract value (nil, bool, integers, floats, string,
// []byte, time.Time, []any, map[string]any, participants.RecordID) into what
// the CBOR encoder sends. Values already in SDK types (read back from the
// database and written again) pass through unchanged.
func toSurreal(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, []byte, int64, uint64, float64, time.Time:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return nil, fmt.Errorf("integer %d overflows int64", x)
		}
		return int64(x), nil
	case float32:
		return float64(x), nil
	case participants.RecordID:
		return toRecordID(x)
	case models.RecordID, models.CustomDateTime, models.UUID, models.DecimalString, models.CustomDuration,
		models.Table, models.GeometryPoint:
		return x, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := toSurreal(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := toSurreal(e)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", k, err)
			}
			out[k] = c
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported value type %T", v)
}

// fromSurreal converts a decoded database value into the contract's value
// types for Result rows: record ids and other SurrealDB-specific values
// become their text form, datetimes time.Time, integers int64.
func fromSurreal(v any) any {
	switch x := v.(type) {
	case nil, bool, string, []byte, int64, float64, time.Time:
		return x
	case uint64:
		if x > math.MaxInt64 {
			return float64(x)
		}
		return int64(x)
	case int:
		return int64(x)
	case float32:
		return float64(x)
	case models.CustomDateTime:
		return x.Time
	case *models.CustomDateTime:
		if x == nil {
			return nil
		}
		return x.Time
	case models.RecordID:
		return recordText(x)
	case *models.RecordID:
		if x == nil {
			return nil
		}
		return recordText(*x)
	case models.CustomNil:
		return nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromSurreal(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = fromSurreal(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = fromSurreal(e)
		}
		return out
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// recordText is a record id's display form (table:id, ⟨⟩-escaped where the
// SDK escapes); for results and logs only, never parsed back.
func recordText(r models.RecordID) string { return r.String() }

// recordKey is a canonical map key for a record id: the table and a typed
// encoding of the id, so that acct:123 and acct:⟨123⟩ stay apart and object
// ids with the same fields in another order are the same key.
func recordKey(r models.RecordID) string {
	var b strings.Builder
	b.WriteString(strconv.Quote(r.Table))
	b.WriteByte(':')
	writeKeyValue(&b, r.ID)
	return b.String()
}

func writeKeyValue(b *strings.Builder, v any) {
	switch x := v.(type) {
	case string:
		b.WriteString("s")
		b.WriteString(strconv.Quote(x))
	case int64:
		b.WriteString("i")
		b.WriteString(strconv.FormatInt(x, 10))
	case uint64:
		if x <= math.MaxInt64 {
			b.WriteString("i")
			b.WriteString(strconv.FormatInt(int64(x), 10))
			return
		}
		b.WriteString("u")
		b.WriteString(strconv.FormatUint(x, 10))
	case []any:
		b.WriteString("[")
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeKeyValue(b, e)
		}
		b.WriteString("]")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			writeKeyValue(b, x[k])
		}
		b.WriteString("}")
	case models.RecordID:
		b.WriteString("r")
		b.WriteString(recordKey(x))
	default:
		fmt.Fprintf(b, "%T(%v)", v, v)
	}
}

// newVersion returns a ULID (48-bit millisecond time, 80 random bits, in
// Crockford base32): the version the branch's after-images carry. A version
// is never reused, unlike an integer counter, which delete + re-create would
// bring back to a value a concurrent reader has already seen.
func newVersion(now time.Time) string {
	var raw [16]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint64(raw[0:8], ms<<16)
	if _, err := rand.Read(raw[6:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	hi := binary.BigEndian.Uint64(raw[0:8])
	lo := binary.BigEndian.Uint64(raw[8:16])
	var out [26]byte
	// 128 bits as 26 base32 digits, most significant first (the first digit holds 3 bits).
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// deepMerge returns base with patch merged in, as SurrealDB's MERGE does:
// nested objects merge field by field, any other value (arrays included)
// replaces. Neither input is modified.
func deepMerge(base, patch map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(patch))
	for k, v := range base {
		out[k] = v
	}
	for k, pv := range patch {
		if pm, ok := pv.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = deepMerge(bm, pm)
				continue
			}
		}
		out[k] = pv
	}
	return out
}

// fieldPath walks a dotted field path (a.b.c) through nested objects. It
// returns false if the path cannot be followed; indexes and wildcards
// (tags[0], tags.*) are not supported and report false.
func fieldPath(doc map[string]any, path string) (any, bool) {
	if strings.ContainsAny(path, "[]*`⟨⟩ ") {
		return nil, false
	}
	var cur any = doc
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, true // missing along the way: NONE
		}
		cur = m[part]
	}
	return cur, true
}
