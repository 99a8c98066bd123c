package server

import (
	"context"

	"github.com/txcoord/txcoord/coordinator"
	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cluster is the part of coordinator.Coordinator the Admin service uses.
type Cluster interface {
	Status() (coordinator.ClusterStatus, error)
	AddVoter(id, raftAddr, grpcAddr string) error
	RemoveServer(id string) error
	TransferLeadership(id string) (string, error)
	Digest() (applied uint64, sum string, records int, err error)
}

// AdminServer implements pb.AdminServer.
type AdminServer struct {
	pb.UnimplementedAdminServer
	c Cluster
}

// NewAdmin wraps a cluster.
func NewAdmin(c Cluster) *AdminServer { return &AdminServer{c: c} }

func (s *AdminServer) ClusterStatus(ctx context.Context, _ *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	st, err := s.c.Status()
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &pb.ClusterStatusResponse{
		NodeId: st.NodeID, State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastLogIndex: st.LastLogIndex, LeaderId: st.LeaderID, LeaderGrpcAddress: st.LeaderGRPCAddress,
		Ready: st.Ready, LastSnapshotIndex: st.LastSnapshotIndex, Decisions: uint64(st.Decisions),
	}
	if !st.LastContact.IsZero() {
		resp.LastContact = timestamppb.New(st.LastContact)
	}
	for _, m := range st.Members {
		resp.Members = append(resp.Members, &pb.Member{Id: m.ID, RaftAddress: m.RaftAddress, GrpcAddress: m.GRPCAddress,
			Suffrage: m.Suffrage, Role: m.Role})
	}
	return resp, nil
}

func (s *AdminServer) AddVoter(ctx context.Context, req *pb.AddVoterRequest) (*pb.AddVoterResponse, error) {
	if err := s.c.AddVoter(req.GetId(), req.GetRaftAddress(), req.GetGrpcAddress()); err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.AddVoterResponse{}, nil
}

func (s *AdminServer) RemoveServer(ctx context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	if err := s.c.RemoveServer(req.GetId()); err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.RemoveServerResponse{}, nil
}

func (s *AdminServer) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	id, err := s.c.TransferLeadership(req.GetId())
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.TransferLeadershipResponse{NewLeaderId: id}, nil
}

func (s *AdminServer) StoreDigest(ctx context.Context, _ *pb.StoreDigestRequest) (*pb.StoreDigestResponse, error) {
	st, err := s.c.Status()
	if err != nil {
		return nil, toStatus(err, "")
	}
	applied, sum, n, err := s.c.Digest()
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &pb.StoreDigestResponse{NodeId: st.NodeID, AppliedIndex: applied, Sha256: sum, Records: uint64(n)}, nil
}
