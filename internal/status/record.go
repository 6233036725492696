package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Record is an app's last upstream fetch as stored in Redis.
type Record struct {
	// Result is tokencache.FetchEvent.Result: "ok", "transient", "quota"...
	Result string    `json:"result"`
	At     time.Time `json:"at"`
	// Error is the fetch error's text (at most MaxErrorLen bytes), which
	// the wechat package guarantees holds no secret.
	Error string `json:"error,omitempty"`
	// By is the identity of the replica that fetched.
	By string `json:"by,omitempty"`
}

// RecordTTL keeps a record of an app nobody fetches any more from
// lingering forever.
const RecordTTL = 7 * 24 * time.Hour

// MaxErrorLen bounds Record.Error, so a long upstream error cannot bloat
// Redis or the status table.
const MaxErrorLen = 300

// Encode is the stored form of r.
func (r Record) Encode() []byte {
	data, err := json.Marshal(r)
	if err != nil {
		// A Record holds only strings and a time.Time, which marshals
		// unless its year is outside [0, 9999].
		data, _ = json.Marshal(Record{Result: r.Result, Error: r.Error, By: r.By})
	}
	return data
}

// ErrCorruptRecord says a stored value is not a Record; DecodeRecord wraps
// it with what exactly was wrong.
var ErrCorruptRecord = errors.New("corrupt last_fetch record")

// DecodeRecord parses a stored Record. A value another program wrote, or
// one cut short, gives an error wrapping ErrCorruptRecord that says what
// was wrong, with at most the first 40 bytes of the value.
func DecodeRecord(data []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, fmt.Errorf("%w %s: %v", ErrCorruptRecord, quoteStart(data), err)
	}
	switch {
	case r.Result == "":
		return Record{}, fmt.Errorf("%w %s: no \"result\"", ErrCorruptRecord, quoteStart(data))
	case r.At.IsZero():
		return Record{}, fmt.Errorf("%w %s: no \"at\" time", ErrCorruptRecord, quoteStart(data))
	}
	return r, nil
}

func quoteStart(data []byte) string {
	const n = 40
	if len(data) > n {
		return fmt.Sprintf("%q...", data[:n])
	}
	return fmt.Sprintf("%q", data)
}

// truncate cuts s to at most n bytes plus "...", on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
