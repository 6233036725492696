// Package backend opens what a refresher configuration describes: the
// Redis client and, over it, the token cache fed by the WeChat source.
// Every refresher process (a replica, or a one-shot token, invalidate or
// status command) starts here, so they all read the same keys the same
// way.
//
// A configuration the libraries refuse is reported as ErrConfig, which the
// command maps to its "bad configuration" exit code.
package backend
