package tokencache

import (
	"hash/fnv"
	"time"
)

// WithRefreshSpread makes the refreshes of many apps spread evenly over
// time, whenever their tokens were fetched: each app gets a fixed phase
// (a hash of its appid, the same in every process), and the RefreshAt of
// every token this cache fetches is moved earlier, by less than one token
// period (fetch to natural RefreshAt), to the last moment of that phase.
//
// A token fetched at its phase has its natural RefreshAt on its phase
// again, so in steady state nothing moves and no fetch is added: each app
// is refreshed once per period, at its own phase, and the apps' phases are
// uniform. Tokens fetched together (a cold start of a fleet, a Redis that
// lost its data) cost at most one early refresh each and are then spread
// over a whole period, instead of coming due in the same seconds forever.
//
// Meant for the process that schedules refreshes for a fleet (the
// refresher); a reader that fetches on a miss may leave it off.
func WithRefreshSpread() Option { return func(o *options) { o.spread = true } }

// minSpreadPeriod is the shortest token period worth spreading: below it
// the refresh jitter alone is enough.
const minSpreadPeriod = time.Minute

// spreadRefresh is when a token of app fetched at fetchedAt, naturally due
// at refreshAt, becomes due under WithRefreshSpread: the last moment at or
// before refreshAt whose offset in the period (counted from the Unix
// epoch) is the app's phase. A token never becomes due within the first
// quarter of its period: a phase moment there is stretched over the rest,
// so a token fetched just before its phase (a passive refresh) is not
// refreshed again seconds later, and the tokens of a cold start that takes
// less than a quarter period are not due before it ends.
func spreadRefresh(app string, fetchedAt, refreshAt time.Time) time.Time {
	period := refreshAt.Sub(fetchedAt)
	if period < minSpreadPeriod {
		return refreshAt
	}
	p := int64(period)
	offset := int64(phase(app) * float64(p))
	r := refreshAt.UnixNano()
	back := (r - offset) % p
	if back < 0 {
		back += p
	}
	at := r - back // in (refreshAt - period, refreshAt]: (fetchedAt, refreshAt]
	if floor := fetchedAt.UnixNano() + p/4; at < floor {
		// (fetchedAt, floor) → [floor, refreshAt), keeping the order.
		at = floor + (at-fetchedAt.UnixNano())*3
	}
	return time.Unix(0, at)
}

// phase is app's fixed place in a period, in [0, 1).
func phase(app string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(app))
	x := h.Sum64()
	// splitmix64's finalizer: appids that differ in one digit land far apart.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}
