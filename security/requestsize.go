package security

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// RequestSize bounds the encoded size of unary requests (max_request_bytes)
// and names the limit when it refuses one (ResourceExhausted). The limit can
// change at run time (config reload). gRPC's own MaxRecvMsgSize stays set,
// at a ceiling above the limit, so that nothing far larger is ever read into
// memory; requests above that ceiling get gRPC's own ResourceExhausted.
type RequestSize struct {
	max atomic.Int64
}

// NewRequestSize starts with limit max bytes.
func NewRequestSize(max int) *RequestSize {
	r := &RequestSize{}
	r.Set(max)
	return r
}

// Set changes the limit for calls from now on. Safe for concurrent use.
func (r *RequestSize) Set(max int) { r.max.Store(int64(max)) }

// Max is the limit in force.
func (r *RequestSize) Max() int { return int(r.max.Load()) }

// Unary is the unary server interceptor.
func (r *RequestSize) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if n, max := proto.Size(m), r.max.Load(); int64(n) > max {
			return nil, status.Errorf(codes.ResourceExhausted, "request is %d bytes; the limit is %d (coordinator.max_request_bytes)", n, max)
		}
	}
	return handler(ctx, req)
}
