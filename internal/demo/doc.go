// Package demo is the self-contained backend of `serve --demo`: an
// embedded Redis (miniredis), an embedded fake WeChat (wechattest) with
// two apps whose tokens live a minute, random secrets and API key, and the
// configuration that points a replica at them. A newcomer sees tokens
// served and refreshed within a minute, with nothing to install.
//
// It links test code, so only cmd/refresher-demo (what `make run` starts)
// imports it, never the production cmd/refresher.
package demo
