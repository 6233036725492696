// Command refresher is tokenkeeper's central control server (中控服务器):
// the elected leader of a fleet of replicas refreshes every app's WeChat
// access token ahead of expiry, and every replica serves the current token
// over HTTP.
//
//	refresher [serve] [--config FILE] [--print-config] [--http-addr ADDR] ...
//	refresher token APPID            print the current token (JSON)
//	refresher invalidate APPID TOKEN report a token WeChat refused; print the current one
//	refresher status                 leader, and per app: token fingerprint, life left, last fetch
//	refresher config                 print the effective configuration, secrets redacted
//	refresher health [--addr H:P]    probe a running replica's /readyz: exit 0 ready, 1 not (container healthchecks)
//
// Configuration comes from a YAML file (--config or TOKENKEEPER_CONFIG),
// TOKENKEEPER_* environment variables and flags; see package
// internal/config.
//
// Exit codes: 0 ok (including a clean shutdown on SIGINT/SIGTERM), 1
// runtime error, 2 bad usage or configuration.
//
// This is the production binary: it has no `serve --demo` and links no
// test code (no embedded Redis, no fake WeChat). The demo is
// cmd/refresher-demo, which `make run` starts. The command line itself is
// package internal/cli, shared by both.
package main

import "github.com/tokenkeeper/tokenkeeper/internal/cli"

func main() { cli.Main(nil) }
