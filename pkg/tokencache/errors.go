package tokencache

import (
	"errors"
	"strconv"
	"time"
)

var (
	// ErrUnavailable means Redis could not be reached and no usable token
	// was held in memory. It wraps the Redis error.
	ErrUnavailable = errors.New("tokencache: redis unavailable and no usable token in memory")
	// ErrBudgetExceeded means the app's daily fetch budget, counted in Redis
	// by every process together, is used up. Nothing was sent upstream.
	ErrBudgetExceeded = errors.New("tokencache: daily fetch budget exceeded")
	// ErrCorruptRecord means the value stored in Redis is not a valid record.
	ErrCorruptRecord = errors.New("tokencache: corrupt record in redis")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("tokencache: cache closed")
	// ErrPassiveRefreshLimited means the app's passive refreshes (verified
	// dead tokens), counted in Redis by every process together, reached
	// their rate limit. Nothing was sent upstream.
	ErrPassiveRefreshLimited = errors.New("tokencache: passive refresh rate limit reached")
	// ErrInvalidAppID is returned for an appID that cannot name Redis keys.
	ErrInvalidAppID = errors.New("tokencache: invalid appid")
)

// Sentinel is the error of this package's own that err matches (one of the
// Err values above), or nil: for a caller that names errors, e.g. in a
// report, without restating the list.
func Sentinel(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

var sentinels = []error{ErrUnavailable, ErrBudgetExceeded, ErrCorruptRecord, ErrClosed, ErrPassiveRefreshLimited, ErrInvalidAppID}

// CorruptRecordError says what is wrong with a stored record. It never
// contains the token.
type CorruptRecordError struct {
	Key    string
	Reason string
}

func (e *CorruptRecordError) Error() string {
	return "tokencache: corrupt record at " + strconv.Quote(e.Key) + ": " + e.Reason
}

func (e *CorruptRecordError) Is(target error) bool { return target == ErrCorruptRecord }

// HeldError is returned while fetching for an app is suspended after a
// failure: until the backoff ends (transient), Beijing midnight (quota), or
// a while (configuration). It wraps the failure that caused it.
type HeldError struct {
	AppID string
	Until time.Time
	Err   error
}

func (e *HeldError) Error() string {
	return "tokencache: fetching for " + strconv.Quote(e.AppID) + " suspended after: " + e.Err.Error()
}

func (e *HeldError) Unwrap() error { return e.Err }
