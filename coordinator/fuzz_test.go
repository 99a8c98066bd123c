package coordinator

import (
	"strings"
	"testing"
)

// FuzzParseGID: only GIDs of this cluster parse, and what parses builds the
// same GID back (recovery must never touch a foreign branch: invariant 6).
func FuzzParseGID(f *testing.F) {
	c := &Coordinator{prefix: "txc:dev:"}
	f.Add("txc:dev:0190a1b2c3d4e5f60718:pg")
	f.Add("txc:dev:0190a1b2c3d4e5f60718:pg:extra")
	f.Add("txc:other:0190a1b2c3d4e5f60718:pg")
	f.Add("txc:dev::pg")
	f.Fuzz(func(t *testing.T, gid string) {
		txid, part, ok := c.ParseGID(gid)
		if !ok {
			return
		}
		if !strings.HasPrefix(gid, "txc:dev:") || c.GID(txid, part) != gid || !ValidName(part) || validateTxID(txid) != nil {
			t.Fatalf("%q parsed as %q %q", gid, txid, part)
		}
	})
}
