package security

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ClientPolicy says what one client may do.
type ClientPolicy struct {
	Name string `yaml:"name"`
	// Coordinator and Admin grant the two gRPC services.
	Coordinator bool `yaml:"coordinator"`
	Admin       bool `yaml:"admin"`
	// Participants the client's statements may name; "*" for all.
	Participants []string `yaml:"participants"`
	// MaxActive bounds this client's transactions in memory at once
	// (0: only the server's max_active applies).
	MaxActive int `yaml:"max_active"`
	// Rate bounds requests per second (0: unlimited); Burst defaults to Rate.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// AuthConfig is the auth section of a node's configuration. With neither a
// tokens file nor client policies, access control is off (development on
// loopback only: the node refuses to start that way on other addresses).
type AuthConfig struct {
	// TokensFile holds lines "<client name> <token>" ('#' starts a comment).
	// Tokens are read at start and never logged.
	TokensFile string         `yaml:"tokens_file"`
	Clients    []ClientPolicy `yaml:"clients"`
}

// Enabled reports whether access control is on.
func (a AuthConfig) Enabled() bool { return a.TokensFile != "" || len(a.Clients) > 0 }

// Policy is the loaded access-control configuration. Safe for concurrent use
// (read-only after Load).
type Policy struct {
	tokens  map[string]string // token → client
	clients map[string]ClientPolicy
}

// LoadPolicy reads the tokens file and indexes the clients.
func LoadPolicy(a AuthConfig) (*Policy, error) {
	p := &Policy{tokens: map[string]string{}, clients: map[string]ClientPolicy{}}
	var errs []error
	for i, c := range a.Clients {
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("auth.clients[%d].name is empty", i))
			continue
		}
		if _, dup := p.clients[c.Name]; dup {
			errs = append(errs, fmt.Errorf("auth.clients[%d].name %q is used twice", i, c.Name))
		}
		if c.Rate < 0 || c.Burst < 0 || c.MaxActive < 0 {
			errs = append(errs, fmt.Errorf("auth.clients[%d] (%s): rate, burst and max_active must not be negative", i, c.Name))
		}
		p.clients[c.Name] = c
	}
	if a.TokensFile != "" {
		f, err := os.Open(a.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("auth.tokens_file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			fields := strings.Fields(text)
			if len(fields) != 2 {
				// The line may hold a token: never quote it.
				errs = append(errs, fmt.Errorf("auth.tokens_file line %d: want \"<client> <token>\"", line))
				continue
			}
			if len(fields[1]) < 16 {
				errs = append(errs, fmt.Errorf("auth.tokens_file line %d: token of client %q is shorter than 16 characters", line, fields[0]))
				continue
			}
			if _, ok := p.clients[fields[0]]; !ok && len(p.clients) > 0 {
				errs = append(errs, fmt.Errorf("auth.tokens_file line %d: client %q has no entry in auth.clients", line, fields[0]))
			}
			p.tokens[fields[1]] = fields[0]
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("auth.tokens_file: %w", err)
		}
	}
	return p, errors.Join(errs...)
}

// ClientForToken returns the client a bearer token belongs to. Tokens are
// compared in constant time.
func (p *Policy) ClientForToken(token string) (string, bool) {
	found := ""
	for t, c := range p.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			found = c
		}
	}
	return found, found != ""
}

// Client returns a client's policy. With no clients configured, any
// authenticated identity may use the Coordinator service on every
// participant, and not the Admin service.
func (p *Policy) Client(name string) (ClientPolicy, bool) {
	if len(p.clients) == 0 {
		return ClientPolicy{Name: name, Coordinator: true, Participants: []string{"*"}}, true
	}
	c, ok := p.clients[name]
	return c, ok
}

// MayUse reports whether the client may address the participant.
func (c ClientPolicy) MayUse(participant string) bool {
	return slices.Contains(c.Participants, "*") || slices.Contains(c.Participants, participant)
}
