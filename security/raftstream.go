package security

import (
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftStream is a raft.StreamLayer over mutual TLS: every node presents its
// certificate and verifies its peer's against the cluster CA, in both
// directions, and accepts only peer (node) certificates (see identity.go),
// so a client certificate of the same CA cannot join the Raft conversation.
type RaftStream struct {
	lis       net.Listener
	advertise net.Addr
	r         *Reloader
}

// NewRaftStream listens on bind with TLS. advertise is the address peers
// dial (nil: the listener's).
func NewRaftStream(bind string, advertise net.Addr, r *Reloader) (*RaftStream, error) {
	lis, err := tls.Listen("tcp", bind, r.PeerServerConfig())
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = lis.Addr()
	}
	return &RaftStream{lis: lis, advertise: advertise, r: r}, nil
}

// Accept waits for the next peer connection (the handshake runs on first use).
func (s *RaftStream) Accept() (net.Conn, error) { return s.lis.Accept() }

// Close stops listening.
func (s *RaftStream) Close() error { return s.lis.Close() }

// Addr is the advertised address.
func (s *RaftStream) Addr() net.Addr { return s.advertise }

// Dial connects to a peer and completes the TLS handshake within timeout.
func (s *RaftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: timeout}
	cfg := s.r.ClientConfig(host)
	cfg.VerifyConnection = checkPeer // the listener must be a node too
	conn, err := tls.DialWithDialer(d, "tcp", string(address), cfg)
	if err != nil {
		var rec tls.RecordHeaderError
		if errors.As(err, &rec) {
			return nil, errors.New("raft peer does not speak TLS: " + err.Error())
		}
		return nil, err
	}
	return conn, nil
}

var _ raft.StreamLayer = (*RaftStream)(nil)
