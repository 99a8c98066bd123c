package client

import (
	"context"
	"errors"
	"io"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// ClusterStatus is a node's view of the cluster (members, roles, indexes).
type ClusterStatus = pb.ClusterStatusResponse

// ClusterStatus asks the node the client currently talks to (not
// necessarily the leader) for its view of the cluster.
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	_, _, admin, err := c.target()
	if err != nil {
		return nil, err
	}
	st, err := admin.ClusterStatus(ctx, &pb.ClusterStatusRequest{})
	return st, fromStatus(err, "", false)
}

// NodeStatus asks one specific node for its view, bypassing redirects.
func (c *Client) NodeStatus(ctx context.Context, addr string) (*ClusterStatus, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	st, err := pb.NewAdminClient(cc).ClusterStatus(ctx, &pb.ClusterStatusRequest{})
	return st, fromStatus(err, "", false)
}

// StoreDigest asks one specific node for the digest of its decision store.
func (c *Client) StoreDigest(ctx context.Context, addr string) (*pb.StoreDigestResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	d, err := pb.NewAdminClient(cc).StoreDigest(ctx, &pb.StoreDigestRequest{})
	return d, fromStatus(err, "", false)
}

// AddVoter adds a node to the cluster (on the leader; idempotent).
func (c *Client) AddVoter(ctx context.Context, id, raftAddr, grpcAddr string) error {
	return c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		_, err := admin.AddVoter(ctx, &pb.AddVoterRequest{Id: id, RaftAddress: raftAddr, GrpcAddress: grpcAddr})
		return fromStatus(err, "", false)
	})
}

// RemoveServer removes a node from the cluster (on the leader; idempotent).
func (c *Client) RemoveServer(ctx context.Context, id string) error {
	return c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		_, err := admin.RemoveServer(ctx, &pb.RemoveServerRequest{Id: id})
		return fromStatus(err, "", false)
	})
}

// TransferLeadership moves leadership to id (or any up-to-date voter when
// id is empty) and returns the new leader's id.
func (c *Client) TransferLeadership(ctx context.Context, id string) (string, error) {
	var out string
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		resp, err := admin.TransferLeadership(ctx, &pb.TransferLeadershipRequest{Id: id})
		if err == nil {
			out = resp.NewLeaderId
		}
		return fromStatus(err, "", false)
	})
	return out, err
}

// AddVoter dials addrs (comma-separated), asks the cluster to add a voter and
// closes the connection: what a joining node does at start-up.
func AddVoter(ctx context.Context, addrs, id, raftAddr, grpcAddr string, opts ...Option) error {
	c, err := Dial(ctx, addrs, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.AddVoter(ctx, id, raftAddr, grpcAddr)
}

// Operator calls (txctl). They run on the leader; the client follows
// redirects.

// ListTransactions lists transactions known to the leader.
func (c *Client) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	var out *pb.ListTransactionsResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.ListTransactions(ctx, req)
		return fromStatus(err, "", false)
	})
	return out, err
}

// InDoubt returns the diff between the decision log and every participant.
func (c *Client) InDoubt(ctx context.Context) (*pb.InDoubtResponse, error) {
	var out *pb.InDoubtResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.InDoubt(ctx, &pb.InDoubtRequest{})
		return fromStatus(err, "", false)
	})
	return out, err
}

// Recover runs one recovery pass (or plans it, with dryRun).
func (c *Client) Recover(ctx context.Context, dryRun bool) (*pb.RecoverResponse, error) {
	var out *pb.RecoverResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.Recover(ctx, &pb.RecoverRequest{DryRun: dryRun})
		return fromStatus(err, "", false)
	})
	return out, err
}

// Resolve records a heuristic decision (see the Admin service).
func (c *Client) Resolve(ctx context.Context, req *pb.ResolveRequest) (*pb.ResolveResponse, error) {
	var out *pb.ResolveResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.Resolve(ctx, req)
		return fromStatus(err, req.GetTxid(), false)
	})
	return out, err
}

// MarkDone closes a logged decision recovery cannot carry out (see the
// Admin service). Retrying it is safe: a done decision is returned as is.
func (c *Client) MarkDone(ctx context.Context, req *pb.MarkDoneRequest) (*pb.MarkDoneResponse, error) {
	var out *pb.MarkDoneResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.MarkDone(ctx, req)
		return fromStatus(err, req.GetTxid(), false)
	})
	return out, err
}

// ListAudit returns the audit entries req selects and the verification of
// the whole trail.
func (c *Client) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	var out *pb.ListAuditResponse
	err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		var err error
		out, err = admin.ListAudit(ctx, req)
		return fromStatus(err, "", false)
	})
	return out, err
}

// ReloadConfig asks the node it is connected to (not necessarily the
// leader: configuration is per node) to reload its configuration file.
func (c *Client) ReloadConfig(ctx context.Context) (*pb.ReloadConfigResponse, error) {
	_, _, admin, err := c.target()
	if err != nil {
		return nil, err
	}
	out, err := admin.ReloadConfig(ctx, &pb.ReloadConfigRequest{})
	return out, fromStatus(err, "", false)
}

// SaveSnapshot writes the current node's decision store to w.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	_, _, admin, err := c.target()
	if err != nil {
		return 0, err
	}
	stream, err := admin.SaveSnapshot(ctx, &pb.SaveSnapshotRequest{})
	if err != nil {
		return 0, fromStatus(err, "", false)
	}
	var n int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fromStatus(err, "", false)
		}
		k, err := w.Write(chunk.GetData())
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// RestoreSnapshot uploads a saved decision store to the leader, which
// installs it on the whole cluster. actor is recorded in the audit trail.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.Reader, actor string) (uint64, error) {
	// Find the leader first: a stream cannot be replayed after a redirect.
	if err := c.retry(ctx, func(_ string, _ pb.CoordinatorClient, admin pb.AdminClient) error {
		st, err := admin.ClusterStatus(ctx, &pb.ClusterStatusRequest{})
		if err != nil {
			return fromStatus(err, "", false)
		}
		if st.State != "Leader" {
			return &Error{Code: codes.Unavailable, Message: "not the leader", Leader: st.LeaderGrpcAddress, kind: ErrUnavailable}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	_, _, admin, err := c.target()
	if err != nil {
		return 0, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "txcoord-actor", actor)
	stream, err := admin.RestoreSnapshot(ctx)
	if err != nil {
		return 0, fromStatus(err, "", false)
	}
	buf := make([]byte, 64<<10)
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if err := stream.Send(&pb.SnapshotChunk{Data: append([]byte(nil), buf[:k]...)}); err != nil {
				_, err = stream.CloseAndRecv()
				return 0, fromStatus(err, "", false)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return 0, rerr
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, fromStatus(err, "", false)
	}
	return resp.GetDecisions(), nil
}
