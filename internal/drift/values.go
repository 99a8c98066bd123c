package drift

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5/pgtype"
)

// Null is how a null or absent value shows in a report.
const Null = "NULL"

// CBOR tags of the SurrealDB protocol that carry values compared here.
const (
	tagNone       = 6  // NONE (an absent field)
	tagRecordID   = 8  // [table, id]
	tagDecimal    = 10 // decimal as a string
	tagDatetime   = 12 // [seconds, nanoseconds]
	tagDatetimeS  = 0  // RFC 3339 string
	tagUUIDString = 9  // uuid as a string
	tagUUID       = 37 // uuid as 16 bytes
)

// normalize turns a value from either side into the string compared and
// shown: numbers by value (5 = 5.0 = numeric 5.00), times in UTC RFC 3339,
// null and absent as Null; then the field's transform.
func normalize(v any, transform string) string {
	s := canon(v)
	if s == Null {
		return s
	}
	switch transform {
	case "lower":
		return strings.ToLower(s)
	case "trim":
		return strings.TrimSpace(s)
	case "number":
		if r, ok := new(big.Rat).SetString(strings.TrimSpace(s)); ok {
			return ratString(r)
		}
	}
	return s
}

// canon is a value's canonical text.
func canon(v any) string {
	switch x := v.(type) {
	case nil:
		return Null
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.FormatInt(int64(x), 10)
	case int8:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint8:
		return strconv.FormatUint(uint64(x), 10)
	case uint16:
		return strconv.FormatUint(uint64(x), 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return floatString(float64(x))
	case float64:
		return floatString(x)
	case *big.Int:
		return x.String()
	case big.Int:
		return x.String()
	case pgtype.Numeric:
		if !x.Valid {
			return Null
		}
		if x.NaN {
			return "NaN"
		}
		if x.Int == nil {
			return "0"
		}
		r := new(big.Rat).SetInt(x.Int)
		exp := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs32(x.Exp))), nil)
		if x.Exp >= 0 {
			r.Mul(r, new(big.Rat).SetInt(exp))
		} else {
			r.Quo(r, new(big.Rat).SetInt(exp))
		}
		return ratString(r)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return hex.EncodeToString(x)
	case [16]byte: // pgx uuid
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
	case cbor.Tag:
		return canonTag(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = jsonValue(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[any]any, map[string]any:
		b, err := json.Marshal(jsonable(x))
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

func canonTag(t cbor.Tag) string {
	switch t.Number {
	case tagNone:
		return Null
	case tagDecimal:
		if s, ok := t.Content.(string); ok {
			if r, ok := new(big.Rat).SetString(s); ok {
				return ratString(r)
			}
			return s
		}
	case tagDatetime:
		if a, ok := t.Content.([]any); ok && len(a) >= 1 {
			secs, _ := toInt64(a[0])
			var nanos int64
			if len(a) > 1 {
				nanos, _ = toInt64(a[1])
			}
			return time.Unix(secs, nanos).UTC().Format(time.RFC3339Nano)
		}
	case tagDatetimeS:
		if s, ok := t.Content.(string); ok {
			if tm, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return tm.UTC().Format(time.RFC3339Nano)
			}
			return s
		}
	case tagUUIDString:
		if s, ok := t.Content.(string); ok {
			return s
		}
	case tagUUID:
		if b, ok := t.Content.([]byte); ok && len(b) == 16 {
			return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
		}
	case tagRecordID:
		if a, ok := t.Content.([]any); ok && len(a) == 2 {
			return fmt.Sprintf("%v:%s", a[0], jsonValue(a[1]))
		}
	}
	return fmt.Sprint(t.Content)
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	}
	return 0, false
}

func abs32(n int32) int32 {
	if n < 0 {
		return -n
	}
	return n
}

// floatString writes an integral float as an integer (so 5.0 = 5) and
// anything else exactly.
func floatString(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e18 {
		return strconv.FormatInt(int64(f), 10)
	}
	if r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64)); ok {
		return ratString(r)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// ratString writes a rational as an integer or a decimal without trailing
// zeros (12.50 → 12.5).
func ratString(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	s := r.FloatString(30)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// jsonValue is a key part's text: strings quoted, numbers bare, so that the
// key 7 and the key "7" stay apart.
func jsonValue(v any) string {
	switch v.(type) {
	case string:
		b, _ := json.Marshal(v)
		return string(b)
	case nil:
		return "null"
	}
	return canon(v)
}

// keyString is a key's text in reports: the value for one key column, an
// array for several.
func keyString(k []any) string {
	if len(k) == 1 {
		return jsonValue(k[0])
	}
	parts := make([]string, len(k))
	for i, p := range k {
		parts[i] = jsonValue(p)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// jsonable converts CBOR-decoded maps (map[any]any) for encoding/json.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = jsonable(e)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case cbor.Tag:
		return canonTag(x)
	}
	return v
}
