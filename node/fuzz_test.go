package node

import (
	"testing"
)

// FuzzConfig: any bytes given as a configuration file are parsed and
// validated without panicking, and a config that validates names loopback
// listeners or TLS.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("participants: [{name: a, kind: postgres, dsn: x}]"))
	f.Add([]byte("listen: 0.0.0.0:1\ntls: {cert_file: a}\n"))
	f.Add([]byte("raft: {peers: [{id: n1, raft: 'x', grpc: 'y'}]}\n"))
	f.Add([]byte("coordinator: {default_timeout: 1h, max_timeout: 1s}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if c.Validate() == nil && !c.TLS.Enabled() && !isLoopback(c.Listen) {
			t.Fatalf("validated a non-loopback listener without TLS: %q", c.Listen)
		}
	})
}
