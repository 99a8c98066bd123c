package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/security"
)

// ErrReloadRefused: a configuration reload was refused (the reason follows);
// the configuration in force is unchanged.
var ErrReloadRefused = errors.New("configuration reload refused")

// Reloadable parts of a node's configuration (everything else applies at
// the next start; certificates reload on their own when their files change):
//
//	auth.tokens_file (its content), auth.clients (every field)
//	coordinator.default_timeout, max_timeout, max_active, max_statements, max_request_bytes
//	log_level
//
// Turning access control on or off (auth present or absent) needs a restart.

// reloadTarget is what a reload changes in the running node.
type reloadTarget struct {
	coord *coordinator.Coordinator
	guard *security.Guard // nil when access control is off
	size  *security.RequestSize
	level *slog.LevelVar // nil: the level is not reloadable
	// ceiling is the largest max_request_bytes gRPC was started for.
	ceiling int
	log     *slog.Logger
	// counted is told each reload's result (metrics); nil: not counted.
	counted func(applied bool)
}

// reloader applies reloads one at a time.
type reloader struct {
	reread func() (Config, error)
	t      reloadTarget

	mu  sync.Mutex
	cur Config // the configuration whose reloadable parts are in force
}

// reloadState is the reloadable configuration, resolved and validated.
type reloadState struct {
	policy   *security.Policy // nil: access control off
	limits   coordinator.Limits
	maxBytes int
	level    slog.Level
}

// resolve validates cfg's reloadable parts against what the node started
// with, naming the field at fault.
func (r *reloader) resolve(cfg Config) (reloadState, error) {
	var st reloadState
	if err := cfg.Validate(); err != nil {
		return st, err
	}
	var errs []error
	if cfg.Auth.Enabled() != (r.t.guard != nil) {
		errs = append(errs, errors.New("auth: turning access control on or off needs a restart (auth.tokens_file / auth.clients)"))
	} else if cfg.Auth.Enabled() {
		p, err := security.LoadPolicy(cfg.Auth)
		if err != nil {
			errs = append(errs, err)
		}
		st.policy = p
	}
	cc := cfg.coordinatorConfig()
	st.limits = cc.Limits()
	if err := st.limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("coordinator: %w", err))
	}
	st.maxBytes = cfg.maxRequestBytes()
	if st.maxBytes > r.t.ceiling {
		errs = append(errs, fmt.Errorf("coordinator.max_request_bytes %d exceeds %d, the most this process reads (twice the value at start): restart to raise it that far", st.maxBytes, r.t.ceiling))
	}
	st.level, _ = parseLevel(cfg.LogLevel) // validated above
	return st, errors.Join(errs...)
}

// reload re-reads the configuration and applies its reloadable parts, or
// refuses it (ErrReloadRefused with the reason) and keeps the old ones.
// Either way it writes an audit entry naming what changed, with a digest of
// the new reloadable configuration, never a secret. actor is who asked.
func (r *reloader) reload(actor string) (changed []string, digest string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.reread()
	var st reloadState
	if err == nil {
		st, err = r.resolve(next)
	}
	if err != nil {
		reason := redactQuoted(err.Error())
		r.t.log.Warn("configuration reload refused; the old configuration stays", "actor", actor, "reason", reason)
		r.t.coord.AuditAction("CONFIG_RELOAD_REFUSED", "the old configuration stays: "+reason, actor)
		if r.t.counted != nil {
			r.t.counted(false)
		}
		return nil, "", fmt.Errorf("%w: %s", ErrReloadRefused, reason)
	}
	changed = r.changes(next, st)
	if st.policy != nil {
		r.t.guard.SetPolicy(st.policy)
	}
	if err := r.t.coord.SetLimits(st.limits); err != nil {
		panic(fmt.Sprintf("node: limits validated above were refused: %v", err))
	}
	r.t.size.Set(st.maxBytes)
	if r.t.level != nil {
		r.t.level.Set(st.level)
	}
	if others := otherChanges(r.cur, next); len(others) > 0 {
		r.t.log.Warn("configuration reload: settings that apply only at restart changed in the file; not applied", "fields", strings.Join(others, ","))
	}
	r.cur = next
	digest = st.digest()
	detail := "changed: " + strings.Join(changed, ", ")
	if len(changed) == 0 {
		detail = "nothing changed"
	}
	detail += "; digest sha256:" + digest
	r.t.log.Info("configuration reloaded", "actor", actor, "changed", strings.Join(changed, ","), "digest", digest)
	r.t.coord.AuditAction("CONFIG_RELOAD", detail, actor)
	if r.t.counted != nil {
		r.t.counted(true)
	}
	return changed, digest, nil
}

// changes names the reloadable fields that differ from the configuration
// in force.
func (r *reloader) changes(next Config, st reloadState) []string {
	var out []string
	if st.policy != nil {
		out = append(out, st.policy.Changes(r.t.guard.Policy())...)
	}
	old := r.t.coord.CurrentLimits()
	for _, f := range []struct {
		name    string
		changed bool
	}{
		{"coordinator.default_timeout", old.DefaultTimeout != st.limits.DefaultTimeout},
		{"coordinator.max_timeout", old.MaxTimeout != st.limits.MaxTimeout},
		{"coordinator.max_active", old.MaxActive != st.limits.MaxActive},
		{"coordinator.max_statements", old.MaxStatements != st.limits.MaxStatements},
		{"coordinator.max_request_bytes", r.t.size.Max() != st.maxBytes},
		{"log_level", r.t.level != nil && r.t.level.Level() != st.level},
	} {
		if f.changed {
			out = append(out, f.name)
		}
	}
	sort.Strings(out)
	return out
}

// digest hashes the reloadable configuration (the policy by its own
// digest, which hashes tokens rather than holding them).
func (st reloadState) digest() string {
	pol := "off"
	if st.policy != nil {
		pol = st.policy.Digest()
	}
	b, _ := json.Marshal(struct {
		Policy   string
		Limits   coordinator.Limits
		MaxBytes int
		Level    string
	}{pol, st.limits, st.maxBytes, st.level.String()})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// otherChanges names the top-level settings outside the reloadable set
// that differ between a and b (they apply at the next start).
func otherChanges(a, b Config) []string {
	strip := func(c Config) Config {
		c.Auth = security.AuthConfig{}
		c.LogLevel = ""
		c.Coordinator.DefaultTimeout, c.Coordinator.MaxTimeout, c.Coordinator.MaxActive = 0, 0, 0
		c.Coordinator.MaxStatements, c.Coordinator.MaxRequestBytes = 0, 0
		c.Reread, c.Level, c.Failpoints = nil, nil, nil
		return c
	}
	a, b = strip(a), strip(b)
	var out []string
	ta := reflect.TypeOf(a)
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := 0; i < ta.NumField(); i++ {
		tag := strings.Split(ta.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, tag)
		}
	}
	return out
}

// quoted matches what YAML and Go errors quote from the input (`...` and
// "..."): a refused reload's reason goes to the audit trail, and the
// quoted text could be a secret from the file.
var quoted = regexp.MustCompile("`[^`]*`")

func redactQuoted(s string) string { return quoted.ReplaceAllString(s, "`…`") }

// ReloadConfig is the Admin RPC's entry point (server.ConfigReloader).
func (r *reloader) ReloadConfig(_ context.Context, actor string) ([]string, string, error) {
	return r.reload(actor)
}
