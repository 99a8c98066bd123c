package node

import (
	"fmt"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/security"
)

func reloadBase(t *testing.T, extra string) Config {
	t.Helper()
	c, err := Parse([]byte("insecure: true\nparticipants: [{name: pg, kind: postgres, dsn: 'postgres://u@127.0.0.1/db'}]\n" + extra))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A reload is refused, naming the field, when it would turn access control
// on or off, raise max_request_bytes above the start-time ceiling, or carry
// invalid limits; a valid one resolves.
func TestReloadResolveRefuses(t *testing.T) {
	r := &reloader{t: reloadTarget{ceiling: 2 * DefaultMaxRequestBytes}}
	for _, tc := range []struct{ yaml, want string }{
		{"auth: {clients: [{name: app, coordinator: true}]}", "turning access control on or off needs a restart"},
		{fmt.Sprintf("coordinator: {max_request_bytes: %d}", 3*DefaultMaxRequestBytes), "coordinator.max_request_bytes"},
		{"coordinator: {default_timeout: 1h, max_timeout: 1m}", "default_timeout (1h0m0s) must not exceed max_timeout (1m0s)"},
		{"log_level: loud", "log_level \"loud\""},
	} {
		_, err := r.resolve(reloadBase(t, tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error containing %q, got %v", tc.yaml, tc.want, err)
		}
	}
	st, err := r.resolve(reloadBase(t, "coordinator: {max_active: 7, max_request_bytes: 1000}\nlog_level: debug"))
	if err != nil || st.limits.MaxActive != 7 || st.maxBytes != 1000 || st.level.String() != "DEBUG" || st.policy != nil {
		t.Fatalf("valid reload: %+v %v", st, err)
	}
	// With a guard (auth on at start), the policy is loaded.
	pol, _ := security.LoadPolicy(security.AuthConfig{Clients: []security.ClientPolicy{{Name: "app"}}})
	r.t.guard = security.NewGuard(pol, nil)
	if st, err := r.resolve(reloadBase(t, "auth: {clients: [{name: app, coordinator: true, max_active: 3}]}")); err != nil || st.policy == nil {
		t.Fatalf("reload with auth: %+v %v", st, err)
	} else if ch := st.policy.Changes(pol); fmt.Sprint(ch) != "[auth.clients[app]]" {
		t.Errorf("changes: %v", ch)
	}
}

func TestOtherChangesAndRedaction(t *testing.T) {
	a := reloadBase(t, "")
	b := reloadBase(t, "listen: 127.0.0.1:7999\ncoordinator: {max_active: 9}\nlog_level: warn")
	if got := fmt.Sprint(otherChanges(a, b)); got != "[listen]" {
		t.Errorf("otherChanges: %s, want [listen] (max_active and log_level reload)", got)
	}
	if got := redactQuoted("yaml: line 3: cannot unmarshal !!str `hunter2` into int"); strings.Contains(got, "hunter2") {
		t.Errorf("redactQuoted kept the quoted value: %s", got)
	}
}
