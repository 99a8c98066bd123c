package cluster

import "github.com/txcoord/txcoord/chaos"

// proxy is a TCP forwarder in front of one Raft link (chaos.Proxy). While
// cut (Blackhole) it is a black hole: every open connection is reset and
// every new one is accepted and reset at once, so no byte passes either
// way; Heal lets new connections through again (Raft redials).
type proxy struct{ *chaos.Proxy }

// newProxy listens on a loopback port and forwards to target.
func newProxy(target string) (*proxy, error) {
	p, err := chaos.NewProxy("raft", "127.0.0.1:0", target, nil)
	if err != nil {
		return nil, err
	}
	return &proxy{p}, nil
}

// Blackhole cuts the link: open connections are reset, new ones refused.
func (p *proxy) Blackhole() { p.Cut() }
