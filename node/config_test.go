package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoadsAndValidates(t *testing.T) {
	c, err := Load(filepath.Join("..", "examples", "txcoord.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the documented example must be valid: %v", err)
	}
	if len(c.Participants) != 2 || c.Participants[1].PasswordEnv != "TXCOORD_SURREAL_PASS" {
		t.Fatalf("participants: %+v", c.Participants)
	}
	if !strings.HasPrefix(c.Listen, "127.0.0.1:") {
		t.Fatalf("default listen must be loopback, got %s", c.Listen)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		yaml, field string
	}{
		{"participants: []", "participants"},
		{"participants: [{name: 'Bad Name', kind: postgres, dsn: x}]", "participants[0].name"},
		{"participants: [{name: a, kind: mysql}]", "participants[0].kind"},
		{"participants: [{name: a, kind: postgres}]", "participants[0].dsn"},
		{"participants: [{name: a, kind: surrealdb, url: 'http://x', namespace: n, database: d}]", "participants[0].url"},
		{"participants: [{name: a, kind: postgres, dsn: x}, {name: a, kind: postgres, dsn: y}]", "participants[1].name"},
		{"listen: nowhere\nparticipants: [{name: a, kind: postgres, dsn: x}]", "listen"},
		{"debug_pprof: true\nparticipants: [{name: a, kind: postgres, dsn: x}]", "debug_pprof"},
	}
	for _, tc := range cases {
		p := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o600)
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.field, err)
		}
	}
}

func TestUnknownKeyAndBadDurationRejected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("listn: 127.0.0.1:1\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "listn") {
		t.Errorf("typo'd key accepted: %v", err)
	}
	os.WriteFile(p, []byte("coordinator:\n  default_timeout: soon\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Errorf("bad duration accepted: %v", err)
	}
}

func TestPasswordSourcesAndDSN(t *testing.T) {
	env := map[string]string{"PW": "s3cr'et"}
	getenv := func(k string) string { return env[k] }
	pc := ParticipantConfig{Name: "pg", PasswordEnv: "PW"}
	pw, err := pc.password(getenv)
	if err != nil || pw != "s3cr'et" {
		t.Fatalf("env password: %q %v", pw, err)
	}
	if _, err := (ParticipantConfig{Name: "pg", PasswordEnv: "NOPE"}).password(getenv); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Errorf("unset password_env must say which variable: %v", err)
	}
	f := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(f, []byte("filepw\nignored\n"), 0o600)
	if pw, _ := (ParticipantConfig{PasswordFile: f}).password(getenv); pw != "filepw" {
		t.Errorf("password_file: %q", pw)
	}
	dsn, err := withPassword("postgres://u@h:1/db?sslmode=disable", "p@ss")
	if err != nil || dsn != "postgres://u:p%40ss@h:1/db?sslmode=disable" {
		t.Errorf("url dsn: %q %v", dsn, err)
	}
	dsn, _ = withPassword("host=h user=u", "it's")
	if dsn != `host=h user=u password='it\'s'` {
		t.Errorf("keyword dsn: %q", dsn)
	}
}

func TestConsoleConfig(t *testing.T) {
	base := "insecure: true\nparticipants: [{name: a, kind: postgres, dsn: x}]\n"
	c, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Console.Enabled || c.Console.Listen != DefaultConsoleListen {
		t.Fatalf("the console must be off by default, on loopback: %+v", c.Console)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err = Parse([]byte(base + "console: {enabled: true}\n"))
	if err != nil || c.Validate() != nil {
		t.Fatalf("console with defaults: %v %v", err, c.Validate())
	}
	cases := []struct{ yaml, want string }{
		{"console: {enabled: true, listen: nowhere}", "console.listen \"nowhere\": want host:port"},
		{"console: {enabled: true, listen: '0.0.0.0:7470'}", "console.listen \"0.0.0.0:7470\" is not a loopback address and no tls"},
		{"console: {enabled: true, listen: '127.0.0.1:7400'}", "console.listen \"127.0.0.1:7400\" is also listen"},
		{"console: {enabled: true, session_ttl: 48h}", "console.session_ttl 48h0m0s: use 1m to 24h"},
		{"console: {enabled: true, session_ttl: 10s}", "console.session_ttl"},
	}
	for _, tc := range cases {
		c, err := Parse([]byte(base + tc.yaml + "\n"))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want an error containing %q, got %v", tc.yaml, tc.want, err)
		}
	}
	// Off: its fields are not checked (a disabled console binds nothing).
	c, _ = Parse([]byte(base + "console: {enabled: false, listen: '0.0.0.0:1'}\n"))
	if err := c.Validate(); err != nil {
		t.Errorf("a disabled console's listen must not be checked: %v", err)
	}
}

func TestDecisionLinger(t *testing.T) {
	const parts = "insecure: true\nparticipants: [{name: a, kind: postgres, dsn: x}]\n"
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"", 20 * time.Millisecond}, // the default
		{"coordinator: {decision_linger: 5ms}\n", 5 * time.Millisecond},
		{"coordinator: {decision_linger: off}\n", 0},
		{"coordinator: {decision_linger: 0s}\n", 0}, // an explicit zero is off too, not the default
	} {
		c, err := Parse([]byte(parts + tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if got := c.coordinatorConfig().DecisionLinger; got != tc.want {
			t.Errorf("%q: decision linger %s, want %s", tc.yaml, got, tc.want)
		}
	}
	c, err := Parse([]byte(parts + "coordinator: {decision_linger: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "decision_linger") {
		t.Errorf("a 1s linger: want an error naming decision_linger, got %v", err)
	}
	if _, err := Parse([]byte(parts + "coordinator: {decision_linger: soon}\n")); err == nil || !strings.Contains(err.Error(), "off") {
		t.Errorf("a bad linger: want an error saying a duration or off, got %v", err)
	}
}
