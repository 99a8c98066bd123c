package demo

import (
	"fmt"
	"math/rand/v2"
)

// transfer is one planned transfer between a PostgreSQL account and a
// SurrealDB account, in either direction.
type transfer struct {
	Seq       int
	PGID      string // demo_accounts.id
	SurrealID string // demo_account:<id>
	ToSurreal bool   // PostgreSQL → SurrealDB; else SurrealDB → PostgreSQL
	Amount    int64
}

func (t transfer) String() string {
	if t.ToSurreal {
		return fmt.Sprintf("#%d %d pg:%s → surreal:%s", t.Seq, t.Amount, t.PGID, t.SurrealID)
	}
	return fmt.Sprintf("#%d %d surreal:%s → pg:%s", t.Seq, t.Amount, t.SurrealID, t.PGID)
}

func pgAccountID(i int) string      { return fmt.Sprintf("p%03d", i) }
func surrealAccountID(i int) string { return fmt.Sprintf("s%03d", i) }

// plan draws n transfers over accounts accounts per store from seed: random
// pairs and directions; amounts 1..maxAmount, except a share overdraftRate
// drawn from (initial, 3*initial] — more than any account starts with.
// Deterministic for a given seed.
func plan(seed int64, n, accounts int, maxAmount, initial int64, overdraftRate float64) []transfer {
	r := rand.New(rand.NewPCG(uint64(seed), 0x7d3c))
	out := make([]transfer, n)
	for i := range out {
		t := transfer{
			Seq:       i + 1,
			PGID:      pgAccountID(r.IntN(accounts)),
			SurrealID: surrealAccountID(r.IntN(accounts)),
			ToSurreal: r.IntN(2) == 0,
			Amount:    1 + r.Int64N(maxAmount),
		}
		if r.Float64() < overdraftRate {
			t.Amount = initial + 1 + r.Int64N(2*initial)
		}
		out[i] = t
	}
	return out
}
