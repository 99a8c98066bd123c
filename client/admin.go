package client

import (
	"context"

	pb "github.com/txcoord/txcoord/proto/txcoord/v1"
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
func AddVoter(ctx context.Context, addrs, id, raftAddr, grpcAddr string) error {
	c, err := Dial(ctx, addrs)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.AddVoter(ctx, id, raftAddr, grpcAddr)
}
