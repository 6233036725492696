// Package demo is the self-contained backend of `refresher serve --demo`:
// an embedded Redis (miniredis), an embedded fake WeChat (wechattest) with
// two apps whose tokens live a minute, random secrets and API key, and the
// configuration that points a replica at them. A newcomer sees tokens
// served and refreshed within a minute, with nothing to install.
package demo
