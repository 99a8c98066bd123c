package server

import (
	"context"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ConfigReloader reloads the node's configuration (node.reloader). Every
// error it returns is a refusal: the old configuration stays in force.
type ConfigReloader interface {
	ReloadConfig(ctx context.Context, actor string) (changed []string, digest string, err error)
}

// SetReloader enables the ReloadConfig RPC. Call before serving.
func (s *AdminServer) SetReloader(r ConfigReloader) { s.reloader = r }

// ReloadConfig reloads this node's configuration. A refused reload is
// FAILED_PRECONDITION with the reason; nothing changed.
func (s *AdminServer) ReloadConfig(ctx context.Context, _ *pb.ReloadConfigRequest) (*pb.ReloadConfigResponse, error) {
	if s.reloader == nil {
		return nil, status.Error(codes.Unimplemented, "this node was started without a configuration file to reload")
	}
	changed, digest, err := s.reloader.ReloadConfig(ctx, actorOf(ctx, ""))
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &pb.ReloadConfigResponse{Changed: changed, Digest: digest}, nil
}
