package security

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/txcoord/txcoord/internal/devcerts"
)

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The dev CA issues distinct peer and client certificates, and the rules
// tell them apart: a peer certificate, or a client one claiming a node's
// identity, is no API client; a client certificate is no Raft peer.
func TestPeerAndClientCertificatesAreDistinct(t *testing.T) {
	ca, err := devcerts.NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	peerPEM, _, _ := ca.IssuePeer("n1")
	clientPEM, _, _ := ca.IssueClient("app")
	fakePEM, _, _ := ca.IssueClient("n2")
	peer, cl, fake := parse(t, peerPEM), parse(t, clientPEM), parse(t, fakePEM)
	nodes := []string{"n1", "n2", "n3"}
	if !IsPeerCert(peer) || IsPeerCert(cl) {
		t.Fatalf("IsPeerCert: peer %v client %v", IsPeerCert(peer), IsPeerCert(cl))
	}
	if err := CheckClientCert(cl, nodes); err != nil {
		t.Errorf("client certificate refused: %v", err)
	}
	if err := CheckClientCert(peer, nodes); !errors.Is(err, ErrPeerCertAsClient) {
		t.Errorf("peer certificate as client: %v", err)
	}
	if err := CheckClientCert(fake, nodes); !errors.Is(err, ErrPeerCertAsClient) {
		t.Errorf("client certificate named like a node: %v", err)
	}
	noEKU := *cl
	noEKU.ExtKeyUsage = nil
	if err := CheckClientCert(&noEKU, nodes); !errors.Is(err, ErrNotClientCert) {
		t.Errorf("certificate without clientAuth: %v", err)
	}
}
