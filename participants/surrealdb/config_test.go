package surrealdb

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Name, c.URL, c.Namespace, c.Database = "sur1", "ws://127.0.0.1:58000/rpc", "txcoord", "test"
	c.Username, c.Password = "root", "s3cret-pass"
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"Name", func(c *Config) { c.Name = "" }},
		{"Name", func(c *Config) { c.Name = "has space" }},
		{"URL", func(c *Config) { c.URL = "http://x/rpc" }},
		{"URL", func(c *Config) { c.URL = "ws://" }},
		{"Namespace", func(c *Config) { c.Namespace = "" }},
		{"Database", func(c *Config) { c.Database = "" }},
		{"Username", func(c *Config) { c.Username = "" }},
		{"AuthLevel", func(c *Config) { c.AuthLevel = "scope" }},
		{"CallTimeout", func(c *Config) { c.CallTimeout = 0 }},
		{"DialTimeout", func(c *Config) { c.DialTimeout = -time.Second }},
		{"PoolSize", func(c *Config) { c.PoolSize = 0 }},
		{"MaxMessageBytes", func(c *Config) { c.MaxMessageBytes = 10 }},
		{"LockTable", func(c *Config) { c.LockTable = "bad-name" }},
		{"MarkerTable", func(c *Config) { c.MarkerTable = c.LockTable }},
		{"VersionField", func(c *Config) { c.VersionField = "id" }},
		{"GuardTables", func(c *Config) { c.GuardTables = []string{c.IntentTable} }},
		{"GuardTables", func(c *Config) { c.GuardTables = []string{"a", "a"} }},
		{"GuardTables", func(c *Config) { c.GuardTables = []string{"x;y"} }},
		{"MarkerRetention", func(c *Config) { c.MarkerRetention = 0 }},
		{"MarkerGCInterval", func(c *Config) { c.MarkerGCInterval = -time.Second }},
		{"MarkerGCInterval", func(c *Config) { c.MarkerGCInterval = c.MarkerRetention + time.Second }},
		{"SchemaCacheTTL", func(c *Config) { c.SchemaCacheTTL = 0 }},
		{"MaxRecordsPerBranch", func(c *Config) { c.MaxRecordsPerBranch = 0 }},
		{"MaxQueryRows", func(c *Config) { c.MaxQueryRows = 0 }},
		{"PhaseTwoRetries", func(c *Config) { c.PhaseTwoRetries = -1 }},
		{"MaxRetryBackoff", func(c *Config) { c.MaxRetryBackoff = c.RetryBackoff / 2 }},
	} {
		c := validConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("mutating %s: Validate() = %v, want an error naming the field", tc.field, err)
		}
	}
}

// The default marker retention covers the coordinator's default retention
// (24h), so GetTransaction never outlives the record Committed reads.
func TestDefaultMarkerRetention(t *testing.T) {
	if r := DefaultConfig().MarkerRetention; r < 24*time.Hour {
		t.Fatalf("default MarkerRetention %v is shorter than the coordinator's default retention (24h)", r)
	}
	c := validConfig()
	c.MarkerGCInterval = 0 // no automatic collection
	if err := c.Validate(); err != nil {
		t.Fatalf("MarkerGCInterval 0: %v", err)
	}
}

func TestConfigNeverShowsPassword(t *testing.T) {
	c := validConfig()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("open", "config", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("open", "config", c)
	for _, s := range []string{buf.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, c.Password) {
			t.Fatalf("password shown: %s", s)
		}
	}
	if !strings.Contains(buf.String(), "sur1") {
		t.Fatalf("config not logged: %s", buf.String())
	}
}
