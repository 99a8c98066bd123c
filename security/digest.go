package security

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
)

// Digest is a sha256 over the policy: the client policies, and for each
// token its client and the token's own sha256, never the token itself. Two
// policies with equal digests grant the same access.
func (p *Policy) Digest() string {
	h := sha256.New()
	h.Write([]byte(p.tokensDigest()))
	h.Write([]byte(p.clientsDigest()))
	return hex.EncodeToString(h.Sum(nil))
}

func (p *Policy) tokensDigest() string {
	var lines []string
	for tok, client := range p.tokens {
		sum := sha256.Sum256([]byte(tok))
		lines = append(lines, client+"\x00"+hex.EncodeToString(sum[:]))
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (p *Policy) clientsDigest() string {
	names := make([]string, 0, len(p.clients))
	for n := range p.clients {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, _ := json.Marshal(p.clients[n])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Changes names what differs from old, by configuration field and client
// name ("auth.tokens_file", "auth.clients[app]"), never by value.
func (p *Policy) Changes(old *Policy) []string {
	var out []string
	if p.tokensDigest() != old.tokensDigest() {
		out = append(out, "auth.tokens_file")
	}
	seen := map[string]bool{}
	for n, c := range p.clients {
		seen[n] = true
		if o, ok := old.clients[n]; !ok || !samePolicy(o, c) {
			out = append(out, "auth.clients["+n+"]")
		}
	}
	for n := range old.clients {
		if !seen[n] {
			out = append(out, "auth.clients["+n+"]")
		}
	}
	sort.Strings(out)
	return out
}

func samePolicy(a, b ClientPolicy) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
