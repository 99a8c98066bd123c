// Package wire converts between txcoord.v1 wire values and the participant
// value set, and names the error reasons both sides of the API share.
package wire

import (
	"fmt"
	"math"
	"math/big"
	"time"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxValueDepth bounds nesting of list/map values (a hostile payload must
// not exhaust the stack).
const maxValueDepth = 32

// FromProto converts a wire value to the participant value set
// (nil, bool, int64, float64, string, []byte, time.Time, []any, map[string]any).
func FromProto(v *pb.Value) (any, error) { return fromProto(v, 0) }

func fromProto(v *pb.Value, depth int) (any, error) {
	if depth > maxValueDepth {
		return nil, fmt.Errorf("values nest deeper than %d levels", maxValueDepth)
	}
	if v == nil {
		return nil, nil
	}
	switch k := v.Kind.(type) {
	case nil, *pb.Value_NullValue:
		return nil, nil
	case *pb.Value_BoolValue:
		return k.BoolValue, nil
	case *pb.Value_IntValue:
		return k.IntValue, nil
	case *pb.Value_FloatValue:
		return k.FloatValue, nil
	case *pb.Value_StringValue:
		return k.StringValue, nil
	case *pb.Value_BytesValue:
		return k.BytesValue, nil
	case *pb.Value_TimeValue:
		if err := k.TimeValue.CheckValid(); err != nil {
			return nil, err
		}
		return k.TimeValue.AsTime(), nil
	case *pb.Value_ListValue:
		out := make([]any, 0, len(k.ListValue.GetValues()))
		for _, e := range k.ListValue.GetValues() {
			x, err := fromProto(e, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		return out, nil
	case *pb.Value_MapValue:
		return mapFromProto(k.MapValue, depth+1)
	}
	return nil, fmt.Errorf("unknown value kind %T", v.Kind)
}

// MapFromProto converts a wire map.
func MapFromProto(m *pb.MapValue) (map[string]any, error) { return mapFromProto(m, 0) }

func mapFromProto(m *pb.MapValue, depth int) (map[string]any, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string]any, len(m.Fields))
	for key, e := range m.Fields {
		x, err := fromProto(e, depth)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out[key] = x
	}
	return out, nil
}

// ToProto converts a participant value to its wire form. Values outside the
// documented set are converted where it is lossless enough (other integer
// widths, big numbers as strings) and otherwise rendered with %v.
func ToProto(x any) *pb.Value {
	switch v := x.(type) {
	case nil:
		return &pb.Value{Kind: &pb.Value_NullValue{NullValue: true}}
	case bool:
		return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: v}}
	case int64:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: v}}
	case int:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
	case int32:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
	case int16:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
	case int8:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
	case uint64:
		if v <= math.MaxInt64 {
			return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
		}
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: fmt.Sprint(v)}}
	case uint32:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(v)}}
	case float64:
		return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: v}}
	case float32:
		return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: float64(v)}}
	case string:
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: v}}
	case []byte:
		return &pb.Value{Kind: &pb.Value_BytesValue{BytesValue: v}}
	case time.Time:
		return &pb.Value{Kind: &pb.Value_TimeValue{TimeValue: timestamppb.New(v)}}
	case *big.Int:
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: v.String()}}
	case []any:
		l := &pb.ListValue{Values: make([]*pb.Value, 0, len(v))}
		for _, e := range v {
			l.Values = append(l.Values, ToProto(e))
		}
		return &pb.Value{Kind: &pb.Value_ListValue{ListValue: l}}
	case map[string]any:
		return &pb.Value{Kind: &pb.Value_MapValue{MapValue: MapToProto(v)}}
	}
	return &pb.Value{Kind: &pb.Value_StringValue{StringValue: fmt.Sprint(x)}}
}

// MapToProto converts a participant map to its wire form.
func MapToProto(m map[string]any) *pb.MapValue {
	out := &pb.MapValue{Fields: make(map[string]*pb.Value, len(m))}
	for k, e := range m {
		out.Fields[k] = ToProto(e)
	}
	return out
}

// TxIDHeader is the gRPC response header in which Run announces the
// transaction's id as soon as it has one, before any statement runs: a
// client whose call then fails in transport or times out still knows which
// transaction to ask about (GetTransaction) instead of facing an outcome it
// cannot resolve.
const TxIDHeader = "txcoord-txid"

// Error reasons in google.rpc.ErrorInfo details (domain "txcoord").
const (
	Domain               = "txcoord"
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
	ReasonAborted        = "ABORTED"
	ReasonInvalid        = "INVALID_ARGUMENT"
	ReasonUnavailable    = "UNAVAILABLE"
	ReasonNotActive      = "NOT_ACTIVE"
	// ReasonDecisionConflict: a heuristic resolution would contradict a
	// logged decision (or cannot be applied atomically any more).
	ReasonDecisionConflict = "DECISION_CONFLICT"
)
