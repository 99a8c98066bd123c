package txctl_test

import (
	"testing"

	"github.com/txcoord/txcoord/chaos"
)

// proxy is a TCP forwarder between txcoord and one participant's database
// (chaos.Proxy). Cut makes the database unreachable for txcoord: open
// connections are reset and new ones are accepted and reset at once. Heal
// lets new connections through again (the adapters reconnect).
type proxy struct{ *chaos.Proxy }

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p, err := chaos.NewProxy("db", "127.0.0.1:0", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &proxy{p}
}

// addr is what the node dials instead of the database.
func (p *proxy) addr() string { return p.Addr() }
