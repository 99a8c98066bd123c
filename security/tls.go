// Package security holds txcoord's transport security and access control:
// TLS configurations whose certificates reload from disk without a restart
// (tls.go), the Raft transport over mutual TLS (raftstream.go), bearer
// tokens and the per-client policy (policy.go), and the gRPC interceptors
// that authenticate, authorize and rate-limit every call (interceptors.go).
package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSFiles names PEM files. CertFile/KeyFile are this side's identity;
// CAFile verifies the other side.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

// Validate checks that the files are given together and readable.
func (f TLSFiles) Validate(field string) error {
	if !f.Enabled() {
		return nil
	}
	var errs []error
	for name, path := range map[string]string{"cert_file": f.CertFile, "key_file": f.KeyFile, "ca_file": f.CAFile} {
		if path == "" {
			errs = append(errs, fmt.Errorf("%s.%s is empty: TLS needs cert_file, key_file and ca_file", field, name))
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", field, name, err))
		}
	}
	return errors.Join(errs...)
}

// reloadCheck bounds how often the files' modification times are checked.
const reloadCheck = time.Second

// Reloader serves a certificate and CA pool read from files, re-reading
// them when they change (checked at most once a second), so certificates
// rotate without a restart. A failed reload keeps the previous ones.
type Reloader struct {
	files TLSFiles

	mu        sync.Mutex
	checked   time.Time
	certMod   time.Time
	keyMod    time.Time
	caMod     time.Time
	cert      *tls.Certificate
	pool      *x509.CertPool
	lastError error
}

// NewReloader loads the files once; an error here is fatal at start-up.
func NewReloader(files TLSFiles) (*Reloader, error) {
	r := &Reloader{files: files}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

func (r *Reloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s / %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	caPEM, err := os.ReadFile(r.files.CAFile)
	if err != nil {
		return fmt.Errorf("tls: read ca %s: %w", r.files.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("tls: %s holds no PEM certificate", r.files.CAFile)
	}
	r.cert, r.pool = &cert, pool
	r.certMod, r.keyMod, r.caMod = modTime(r.files.CertFile), modTime(r.files.KeyFile), modTime(r.files.CAFile)
	return nil
}

// current returns the certificate and pool, reloading changed files.
func (r *Reloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= reloadCheck {
		r.checked = time.Now()
		if !modTime(r.files.CertFile).Equal(r.certMod) || !modTime(r.files.KeyFile).Equal(r.keyMod) || !modTime(r.files.CAFile).Equal(r.caMod) {
			r.lastError = r.load()
		}
	}
	return r.cert, r.pool
}

// ServerConfig requires and verifies client certificates against the CA
// (mutual TLS), with certificates reloaded on change.
func (r *Reloader) ServerConfig() *tls.Config { return r.serverConfig(nil) }

// serverConfig is ServerConfig with an extra check of the verified
// connection (nil: none).
func (r *Reloader) serverConfig(verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert, // verified below against the current pool
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := r.current()
			return &tls.Config{
				MinVersion:       tls.VersionTLS12,
				Certificates:     []tls.Certificate{*cert},
				ClientAuth:       tls.RequireAndVerifyClientCert,
				ClientCAs:        pool,
				VerifyConnection: verify,
			}, nil
		},
	}
}

// ServerConfigOptionalClientCert verifies a client certificate against the
// CA when the client presents one, and accepts clients without one (the web
// console, where a browser may sign in with a bearer token instead).
// Certificates reload on change, as with ServerConfig.
func (r *Reloader) ServerConfigOptionalClientCert() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := r.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
			}, nil
		},
	}
}

// ClientConfig presents this side's certificate and verifies the server
// against the CA (serverName: the name in the server's certificate; empty
// uses the dialled host).
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	_, pool := r.current()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := r.current()
			return cert, nil
		},
	}
}

// Identity is the authenticated name in a verified peer certificate: the
// first DNS SAN starting "client:" stripped of it, else the Common Name.
func Identity(cert *x509.Certificate) string {
	for _, n := range cert.DNSNames {
		if len(n) > 7 && n[:7] == "client:" {
			return n[7:]
		}
	}
	return cert.Subject.CommonName
}
