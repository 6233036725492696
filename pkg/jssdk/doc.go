// Package jssdk signs what WeChat web pages need from a server: the
// JS-SDK config for wx.config (signed with the app's jsapi_ticket) and
// card signatures for addCard/chooseCard (signed with its wx_card
// api_ticket).
//
// The signing functions (Signature, CardSignature) are pure and checked
// against WeChat's documented worked examples (testdata/). A Signer adds
// the parts a page team gets wrong: it takes the ticket from a ticket
// cache at the moment of signing, refuses one that is not live at that
// moment, draws the nonce from crypto/rand and validates the page URL
// (ParsePageURL) before signing it without its #fragment.
//
// What is guaranteed: a signature is made only with a ticket the cache
// holds as usable at that instant (its usable end is WeChat's expiry less
// the cache's margin, or earlier when a fetch may have replaced it). What
// is not: a page that keeps a config past the ticket's life; wx.config must
// be called soon after the config is fetched.
package jssdk
