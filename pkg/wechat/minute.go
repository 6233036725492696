package wechat

import "errors"

// MinuteLimited reports whether err is WeChat's per-minute call limit
// (errcode 45011, from any endpoint). Its class is ErrTransient (ClassName
// says "transient"), but WeChat asks for a wait of about 60 s rather than a
// quick retry, so a scheduler waits out the minute instead of backing off
// from a second. It is the one place this rule lives.
func MinuteLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == 45011
}
