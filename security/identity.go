package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// Server (peer) and client identities are kept apart by certificate:
//
//   - a peer certificate belongs to a cluster node: it carries the serverAuth
//     extended key usage (and clientAuth, since nodes dial each other's Raft
//     port); only peer certificates are accepted on the Raft transport;
//   - a client certificate carries clientAuth and not serverAuth (nor
//     "any"); only client certificates are accepted on the gRPC API, and
//     not one whose identity is a node's.
//
// So a stolen client certificate cannot join the Raft conversation, and a
// node's certificate cannot be used as a client of the API.

var (
	// ErrPeerCertAsClient: a node (server) certificate was presented to the
	// gRPC API as a client certificate.
	ErrPeerCertAsClient = errors.New("a server (peer) certificate is not a client certificate")
	// ErrNotClientCert: the certificate lacks the clientAuth extended key usage.
	ErrNotClientCert = errors.New("the certificate lacks the clientAuth extended key usage")
	// ErrNotPeerCert: a certificate without serverAuth on the Raft transport.
	ErrNotPeerCert = errors.New("only cluster node (peer) certificates, with the serverAuth extended key usage, may use the Raft transport")
)

// IsPeerCert reports whether cert is a node certificate (serverAuth or
// any extended key usage).
func IsPeerCert(cert *x509.Certificate) bool {
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// CheckClientCert is the gRPC API's rule for a verified client leaf
// certificate: clientAuth, not a peer certificate, and not claiming a node's
// identity (peerIDs).
func CheckClientCert(cert *x509.Certificate, peerIDs []string) error {
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("client %q: %w", Identity(cert), ErrNotClientCert)
	}
	if IsPeerCert(cert) {
		return fmt.Errorf("client %q: %w (issue client certificates with clientAuth only)", Identity(cert), ErrPeerCertAsClient)
	}
	if id := Identity(cert); slices.Contains(peerIDs, id) {
		return fmt.Errorf("client %q: %w: the identity is a cluster node's", id, ErrPeerCertAsClient)
	}
	return nil
}

func verifiedLeaf(cs tls.ConnectionState) *x509.Certificate {
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		return cs.VerifiedChains[0][0]
	}
	return nil
}

// APIServerConfig is ServerConfig for the gRPC API: the client certificate
// must also pass CheckClientCert. peerIDs returns the cluster's node
// identities at the time of the handshake (members come and go).
func (r *Reloader) APIServerConfig(peerIDs func() []string) *tls.Config {
	return r.serverConfig(func(cs tls.ConnectionState) error {
		leaf := verifiedLeaf(cs)
		if leaf == nil {
			return ErrNotClientCert
		}
		return CheckClientCert(leaf, peerIDs())
	})
}

// PeerServerConfig is ServerConfig for the Raft transport: the other side
// must present a peer certificate.
func (r *Reloader) PeerServerConfig() *tls.Config {
	return r.serverConfig(checkPeer)
}

func checkPeer(cs tls.ConnectionState) error {
	leaf := verifiedLeaf(cs)
	if leaf == nil || !IsPeerCert(leaf) {
		name := ""
		if leaf != nil {
			name = Identity(leaf)
		}
		return fmt.Errorf("%q: %w", name, ErrNotPeerCert)
	}
	return nil
}
