package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"testing"
)

func TestZZRecheck(t *testing.T) {
	path := os.Getenv("ZZ_HISTORY")
	if path == "" {
		t.Skip()
	}
	f, _ := os.Open(path)
	var evs []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e Event
		json.Unmarshal(sc.Bytes(), &e)
		evs = append(evs, e)
	}
	ops := Operations(evs)
	d := &Databases{Repo: "..", DataDir: os.Getenv("ZZ_WORK"), PGPort: 55441, SurrealPort: 58041}
	ctx := context.Background()
	if err := d.Up(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Down(ctx)
	s, err := OpenStores(ctx, d.PGAddr(), d.SurrealAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	obs, err := s.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range CheckTags(ops, obs) {
		if a.Kind != AStatus {
			t.Logf("%s", a)
			for _, o := range ops {
				if o.ID == a.Op {
					b, _ := json.Marshal(o)
					t.Logf("%s", b)
				}
			}
		}
	}
}
