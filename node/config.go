// Package node assembles one txcoord server process: configuration (file,
// environment, flags), the participants, Raft, the coordinator and the gRPC
// server. cmd/txcoord only parses arguments and calls Run.
package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/security"
	"github.com/txcoord/txcoord/tracing"
	"gopkg.in/yaml.v3"
)

// ParticipantConfig names one database. Credentials never appear in logs:
// give them inline only for development; prefer password_env or password_file.
type ParticipantConfig struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // postgres | surrealdb
	// PostgreSQL: a pgx DSN (URL or key=value). A password in it is allowed
	// but password_env/password_file override it.
	DSN string `yaml:"dsn"`
	// SurrealDB: ws:// or wss:// URL of the RPC endpoint, namespace, database, user.
	URL       string `yaml:"url"`
	Namespace string `yaml:"namespace"`
	Database  string `yaml:"database"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	// PasswordFile names a file whose first line is the password.
	PasswordFile string `yaml:"password_file"`
	// MaxConns bounds the participant's connection pool (0 = adapter default).
	MaxConns int `yaml:"max_conns"`
}

// PeerConfig names a cluster member for bootstrap.
type PeerConfig struct {
	ID   string `yaml:"id"`
	Raft string `yaml:"raft"`
	GRPC string `yaml:"grpc"`
}

// Duration is a time.Duration read from YAML as "30s", "5m"...
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 30s, 5m): %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// Linger is a duration whose zero is meaningful: 0 (or "off") turns the
// wait off, overriding a non-zero default; unset leaves the default.
type Linger struct {
	D   time.Duration
	Set bool
}

func (l *Linger) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "off" {
		*l = Linger{Set: true}
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 2ms) or off: %w", n.Line, n.Value, err)
	}
	*l = Linger{D: v, Set: true}
	return nil
}

// Config is a node's whole configuration. See docs/configuration.md and
// examples/txcoord.yaml.
type Config struct {
	NodeID    string `yaml:"node_id"`
	ClusterID string `yaml:"cluster_id"`
	// Listen is the gRPC address. Loopback by default: exposing it is a choice.
	Listen string `yaml:"listen"`
	// Advertise is the gRPC address other nodes send clients to; defaults
	// to Listen.
	Advertise string `yaml:"advertise"`
	DataDir   string `yaml:"data_dir"`
	// MetricsListen serves /metrics, /healthz and /readyz (HTTP); empty
	// turns it off. Keep it on loopback or a private network.
	MetricsListen string `yaml:"metrics_listen"`
	// DebugPprof serves Go's profiling endpoints (/debug/pprof/) on the
	// metrics listener. Off by default: profiles expose internals (stack
	// contents, heap), so turn it on only on a trusted, loopback listener.
	DebugPprof bool `yaml:"debug_pprof"`
	Raft       struct {
		Bind      string `yaml:"bind"`
		Advertise string `yaml:"advertise"`
		// Bootstrap creates the cluster when data_dir holds no Raft state:
		// with Peers (every node given the same list) or this node alone.
		Bootstrap bool         `yaml:"bootstrap"`
		Peers     []PeerConfig `yaml:"peers"`
		// Join lists gRPC addresses of running nodes; a node with no Raft
		// state and bootstrap off asks them to add it as a voter.
		Join []string `yaml:"join"`
		// Election tuning; defaults suit loopback and LAN clusters.
		HeartbeatTimeout Duration `yaml:"heartbeat_timeout"`
		ElectionTimeout  Duration `yaml:"election_timeout"`
		// Snapshot after this many new log entries (and check every interval).
		SnapshotThreshold uint64   `yaml:"snapshot_threshold"`
		SnapshotInterval  Duration `yaml:"snapshot_interval"`
	} `yaml:"raft"`
	Participants []ParticipantConfig `yaml:"participants"`
	Coordinator  struct {
		DefaultTimeout Duration `yaml:"default_timeout"`
		MaxTimeout     Duration `yaml:"max_timeout"`
		MaxActive      int      `yaml:"max_active"`
		MaxStatements  int      `yaml:"max_statements"`
		// MaxRequestBytes bounds one gRPC request's encoded size
		// (default DefaultMaxRequestBytes, at most MaxRequestBytesCeiling).
		MaxRequestBytes  int      `yaml:"max_request_bytes"`
		RecoveryInterval Duration `yaml:"recovery_interval"`
		Retention        Duration `yaml:"retention"`
		// AuditRetention: audit entries older than this are pruned
		// (unset or 0: the default, 90 days; set a longer one to keep more).
		AuditRetention Duration `yaml:"audit_retention"`
		PrepareTimeout Duration `yaml:"prepare_timeout"`
		// DecisionLinger: how long a flight of decisions may wait for
		// transactions still preparing, to carry their decisions in the
		// same Raft entry (unset: the default, 20ms; 0 or off: never waits).
		DecisionLinger Linger `yaml:"decision_linger"`
		// RecoveryStartupWait bounds how long recovery may delay serving
		// after an election; what is left continues in the background.
		RecoveryStartupWait Duration `yaml:"recovery_startup_wait"`
	} `yaml:"coordinator"`
	LogLevel string `yaml:"log_level"`

	// Insecure runs without TLS, which is allowed on loopback only and only
	// when asked for explicitly (here or with --insecure): development.
	Insecure bool `yaml:"insecure"`

	// TLS secures the gRPC API with mutual TLS (clients need a certificate
	// signed by ca_file). RaftTLS secures the Raft transport the same way
	// and defaults to TLS. Without TLS every listener must be on loopback.
	TLS     security.TLSFiles `yaml:"tls"`
	RaftTLS security.TLSFiles `yaml:"raft_tls"`
	// JoinTLS is the client certificate this node presents when it asks
	// the raft.join nodes to add it: the gRPC API refuses peer (server)
	// certificates, so a joining node needs a client identity (with admin
	// rights when auth is on). Required with tls and raft.join.
	JoinTLS security.TLSFiles `yaml:"join_tls"`
	// Auth turns on access control: bearer tokens and per-client policy.
	Auth security.AuthConfig `yaml:"auth"`
	// Tracing exports OpenTelemetry spans to an OTLP collector (off by default).
	Tracing tracing.Config `yaml:"tracing"`
	// Console is the web console (off by default); see docs/console.md.
	Console ConsoleConfig `yaml:"console"`

	// Failpoints (tests only): name → action ("kill"). Set by --failpoint.
	Failpoints map[string]string `yaml:"-"`

	// Reread, when set, reads the configuration again the way the process
	// read it at start (file, environment, flags): SIGHUP and the Admin
	// ReloadConfig RPC call it and apply the reloadable parts (see
	// reload.go). Nil turns reloading off.
	Reread func() (Config, error) `yaml:"-"`
	// Level, when set, is the logger's level, changed by a reload of
	// log_level.
	Level *slog.LevelVar `yaml:"-"`
}

// DefaultMaxRequestBytes is max_request_bytes when unset: large enough for
// a Run of max_statements ordinary statements, small enough that a few
// hundred concurrent requests fit in memory.
const DefaultMaxRequestBytes = 8 << 20

// MaxRequestBytesCeiling bounds max_request_bytes: gRPC reads at most twice
// the start-time limit into memory (see security.RequestSize), so a reload
// cannot raise the limit above that either.
const MaxRequestBytesCeiling = 64 << 20

// maxRequestBytes is coordinator.max_request_bytes with its default.
func (c Config) maxRequestBytes() int {
	if c.Coordinator.MaxRequestBytes > 0 {
		return c.Coordinator.MaxRequestBytes
	}
	return DefaultMaxRequestBytes
}

// ConsoleConfig is the console section: the web console served by this
// node, behind the same authentication and authorization as the Admin API.
type ConsoleConfig struct {
	Enabled bool `yaml:"enabled"`
	// Listen is the console's HTTP(S) address; loopback by default, and
	// loopback only without tls.
	Listen string `yaml:"listen"`
	// SessionTTL is how long a browser stays signed in after signing in
	// with a token (default 1h, at most 24h).
	SessionTTL Duration `yaml:"session_ttl"`
}

// Console defaults.
const (
	DefaultConsoleListen     = "127.0.0.1:7470"
	DefaultConsoleSessionTTL = time.Hour
	maxConsoleSessionTTL     = 24 * time.Hour
)

// DefaultConfig is a single-node development setup on loopback.
func DefaultConfig() Config {
	var c Config
	c.NodeID = "n1"
	c.ClusterID = "dev"
	c.Listen = "127.0.0.1:7400"
	c.DataDir = ".data/txcoord/n1"
	c.Raft.Bind = "127.0.0.1:7500"
	c.Raft.Bootstrap = true
	c.LogLevel = "info"
	c.Console.Listen = DefaultConsoleListen
	c.Console.SessionTTL = Duration(DefaultConsoleSessionTTL)
	return c
}

// Load reads a YAML file over the defaults. Unknown keys are errors, so a
// typo does not silently fall back to a default.
func Load(path string) (Config, error) {
	c := DefaultConfig()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c, err = Parse(data)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// maxConfigBytes bounds a configuration file.
const maxConfigBytes = 1 << 20

// Parse reads YAML over the defaults; unknown keys are errors.
func Parse(data []byte) (Config, error) {
	c := DefaultConfig()
	if len(data) > maxConfigBytes {
		return c, fmt.Errorf("configuration is %d bytes; at most %d", len(data), maxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, err
	}
	return c, nil
}

// ApplyEnv overrides fields from TXCOORD_* environment variables.
func (c *Config) ApplyEnv(getenv func(string) string) {
	set := func(dst *string, name string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set(&c.NodeID, "TXCOORD_NODE_ID")
	set(&c.ClusterID, "TXCOORD_CLUSTER_ID")
	set(&c.Listen, "TXCOORD_LISTEN")
	set(&c.DataDir, "TXCOORD_DATA_DIR")
	set(&c.Raft.Bind, "TXCOORD_RAFT_BIND")
	set(&c.Advertise, "TXCOORD_ADVERTISE")
	set(&c.MetricsListen, "TXCOORD_METRICS_LISTEN")
	set(&c.Console.Listen, "TXCOORD_CONSOLE_LISTEN")
	set(&c.LogLevel, "TXCOORD_LOG_LEVEL")
}

// Validate checks the configuration and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	if !coordinator.ValidName(c.NodeID) {
		errs = append(errs, fmt.Errorf("node_id %q: use 1-32 of [a-z0-9_-]", c.NodeID))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: want host:port (e.g. 127.0.0.1:7400): %v", c.Listen, err))
	}
	if _, _, err := net.SplitHostPort(c.Raft.Bind); err != nil {
		errs = append(errs, fmt.Errorf("raft.bind %q: want host:port (e.g. 127.0.0.1:7500): %v", c.Raft.Bind, err))
	}
	self := false
	for i, p := range c.Raft.Peers {
		if !coordinator.ValidName(p.ID) {
			errs = append(errs, fmt.Errorf("raft.peers[%d].id %q: use 1-32 of [a-z0-9_-]", i, p.ID))
		}
		if _, _, err := net.SplitHostPort(p.Raft); err != nil {
			errs = append(errs, fmt.Errorf("raft.peers[%d].raft %q: want host:port", i, p.Raft))
		}
		if _, _, err := net.SplitHostPort(p.GRPC); err != nil {
			errs = append(errs, fmt.Errorf("raft.peers[%d].grpc %q: want host:port", i, p.GRPC))
		}
		self = self || p.ID == c.NodeID
	}
	if len(c.Raft.Peers) > 0 && !self {
		errs = append(errs, fmt.Errorf("raft.peers: node_id %q is not in the list; every node needs the same list, itself included", c.NodeID))
	}
	if n := len(c.Raft.Peers); n == 2 || n == 4 {
		errs = append(errs, fmt.Errorf("raft.peers: %d voters tolerate no more failures than %d; use 1, 3 or 5", n, n-1))
	}
	if c.Raft.Bootstrap && len(c.Raft.Join) > 0 {
		errs = append(errs, errors.New("raft: bootstrap and join exclude each other; a joining node sets bootstrap: false"))
	}
	if c.DebugPprof && c.MetricsListen == "" {
		errs = append(errs, errors.New("debug_pprof: profiles are served on metrics_listen, which is empty; set metrics_listen (e.g. 127.0.0.1:7480) or drop debug_pprof"))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics_listen %q: want host:port (e.g. 127.0.0.1:7480) or empty to turn it off", c.MetricsListen))
		}
	}
	if c.Console.Enabled {
		if _, _, err := net.SplitHostPort(c.Console.Listen); err != nil {
			errs = append(errs, fmt.Errorf("console.listen %q: want host:port (e.g. %s), or set console.enabled: false", c.Console.Listen, DefaultConsoleListen))
		} else {
			for field, addr := range map[string]string{"listen": c.Listen, "metrics_listen": c.MetricsListen, "raft.bind": c.Raft.Bind} {
				if addr == c.Console.Listen {
					errs = append(errs, fmt.Errorf("console.listen %q is also %s: give the console its own port", c.Console.Listen, field))
				}
			}
		}
		if ttl := time.Duration(c.Console.SessionTTL); ttl < time.Minute || ttl > maxConsoleSessionTTL {
			errs = append(errs, fmt.Errorf("console.session_ttl %s: use 1m to %s (default %s)", ttl, maxConsoleSessionTTL, DefaultConsoleSessionTTL))
		}
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.Validate("tls"); err != nil {
		errs = append(errs, err)
	}
	if err := c.RaftTLS.Validate("raft_tls"); err != nil {
		errs = append(errs, err)
	}
	if err := c.JoinTLS.Validate("join_tls"); err != nil {
		errs = append(errs, err)
	}
	if c.TLS.Enabled() && len(c.Raft.Join) > 0 && !c.JoinTLS.Enabled() {
		errs = append(errs, errors.New("join_tls is not configured: a node joining over tls (raft.join) needs a client certificate (join_tls.cert_file, key_file, ca_file); its node certificate is refused as a client on the gRPC API"))
	}
	if !c.TLS.Enabled() && !c.Insecure {
		errs = append(errs, errors.New("tls is not configured: set tls.cert_file, tls.key_file and tls.ca_file, or run insecure on loopback for development with insecure: true (or --insecure)"))
	}
	if c.TLS.Enabled() && c.Insecure {
		errs = append(errs, errors.New("insecure: true and tls exclude each other: remove one"))
	}
	if !c.TLS.Enabled() {
		console := ""
		if c.Console.Enabled {
			console = c.Console.Listen
		}
		for field, addr := range map[string]string{"listen": c.Listen, "advertise": c.Advertise, "metrics_listen": c.MetricsListen, "console.listen": console} {
			if addr != "" && !isLoopback(addr) {
				errs = append(errs, fmt.Errorf("%s %q is not a loopback address and no tls is configured: set tls.cert_file, tls.key_file and tls.ca_file, or bind 127.0.0.1", field, addr))
			}
		}
	}
	if !c.raftTLS().Enabled() && !isLoopback(c.Raft.Bind) {
		errs = append(errs, fmt.Errorf("raft.bind %q is not a loopback address and no raft_tls (or tls) is configured: the Raft transport must be mutual TLS off loopback", c.Raft.Bind))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty: give a directory for the decision store"))
	}
	if n := c.Coordinator.MaxRequestBytes; n < 0 || n > MaxRequestBytesCeiling {
		errs = append(errs, fmt.Errorf("coordinator.max_request_bytes %d: use 1 to %d (0: default %d)", n, MaxRequestBytesCeiling, DefaultMaxRequestBytes))
	}
	// The coordinator's own checks of what this file sets (cluster_id,
	// decision_linger...), now rather than when the node starts.
	if err := c.coordinatorConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if len(c.Participants) == 0 {
		errs = append(errs, errors.New("participants: none configured; add at least one (kind postgres or surrealdb)"))
	}
	seen := map[string]bool{}
	for i, p := range c.Participants {
		field := fmt.Sprintf("participants[%d]", i)
		if !coordinator.ValidName(p.Name) {
			errs = append(errs, fmt.Errorf("%s.name %q: use 1-32 of [a-z0-9_-]", field, p.Name))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q is used twice", field, p.Name))
		}
		seen[p.Name] = true
		switch p.Kind {
		case "postgres":
			if p.DSN == "" {
				errs = append(errs, fmt.Errorf("%s.dsn is empty: give a PostgreSQL DSN (postgres://user@host:port/db)", field))
			}
		case "surrealdb":
			if !strings.HasPrefix(p.URL, "ws://") && !strings.HasPrefix(p.URL, "wss://") {
				errs = append(errs, fmt.Errorf("%s.url %q: want ws://host:port/rpc or wss://...", field, p.URL))
			}
			if p.Namespace == "" || p.Database == "" {
				errs = append(errs, fmt.Errorf("%s: namespace and database are required for surrealdb", field))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.kind %q: use postgres or surrealdb", field, p.Kind))
		}
		if p.PasswordEnv != "" && p.PasswordFile != "" {
			errs = append(errs, fmt.Errorf("%s: set password_env or password_file, not both", field))
		}
	}
	for name, action := range c.Failpoints {
		known := false
		for _, fp := range coordinator.Failpoints {
			known = known || fp == name
		}
		if !known {
			errs = append(errs, fmt.Errorf("failpoint %q: known failpoints are %s", name, strings.Join(coordinator.Failpoints, ", ")))
		}
		if _, err := ParseFailpointAction(action); err != nil {
			errs = append(errs, fmt.Errorf("failpoint %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// password resolves a participant's password from env or file.
func (p ParticipantConfig) password(getenv func(string) string) (string, error) {
	switch {
	case p.PasswordEnv != "":
		v := getenv(p.PasswordEnv)
		if v == "" {
			return "", fmt.Errorf("participant %q: password_env %s is not set", p.Name, p.PasswordEnv)
		}
		return v, nil
	case p.PasswordFile != "":
		b, err := os.ReadFile(p.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("participant %q: password_file: %w", p.Name, err)
		}
		return strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r"), nil
	}
	return p.Password, nil
}

// coordinatorConfig maps the file's coordinator section over the defaults.
func (c Config) coordinatorConfig() coordinator.Config {
	cc := coordinator.DefaultConfig()
	cc.ClusterID = c.ClusterID
	k := c.Coordinator
	if k.DefaultTimeout > 0 {
		cc.DefaultTimeout = time.Duration(k.DefaultTimeout)
	}
	if k.MaxTimeout > 0 {
		cc.MaxTimeout = time.Duration(k.MaxTimeout)
	}
	if k.MaxActive > 0 {
		cc.MaxActive = k.MaxActive
	}
	if k.MaxStatements > 0 {
		cc.MaxStatements = k.MaxStatements
	}
	if k.RecoveryInterval > 0 {
		cc.RecoveryInterval = time.Duration(k.RecoveryInterval)
	}
	if k.Retention > 0 {
		cc.Retention = time.Duration(k.Retention)
	}
	if k.AuditRetention > 0 {
		cc.AuditRetention = time.Duration(k.AuditRetention)
	}
	if k.PrepareTimeout > 0 {
		cc.PrepareTimeout = time.Duration(k.PrepareTimeout)
	}
	if k.RecoveryStartupWait > 0 {
		cc.RecoveryStartupWait = time.Duration(k.RecoveryStartupWait)
	}
	if k.DecisionLinger.Set {
		cc.DecisionLinger = k.DecisionLinger.D
	}
	return cc
}

// ParseFailpointAction reads a failpoint action: "kill" (always) or
// "kill@P" (with probability P in (0,1], e.g. kill@0.1). It returns P.
func ParseFailpointAction(action string) (float64, error) {
	if action == "kill" {
		return 1, nil
	}
	if p, ok := strings.CutPrefix(action, "kill@"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err == nil && v > 0 && v <= 1 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("action %q: use kill or kill@P with 0 < P <= 1", action)
}

// parseLevel reads log_level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log_level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// peerIdentities are the identities of this cluster's nodes (node_id,
// raft.peers ids and the current Raft configuration's servers): the gRPC
// API refuses client certificates that claim one.
func peerIdentities(c Config, r *raft.Raft) []string {
	ids := []string{c.NodeID}
	for _, p := range c.Raft.Peers {
		ids = append(ids, p.ID)
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			ids = append(ids, string(s.ID))
		}
	}
	return ids
}

// raftTLS is raft_tls, defaulting to tls.
func (c Config) raftTLS() security.TLSFiles {
	if c.RaftTLS.Enabled() {
		return c.RaftTLS
	}
	return c.TLS
}

// isLoopback reports whether host:port names a loopback host.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
