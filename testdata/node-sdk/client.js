'use strict';
// One SDK process of cmd/refresher's TestNodeSDKThroughTheGateway.
//
// co-wechat-api is used unmodified. Its whole configuration for the
// gateway is its own API hosts (api.prefix, the base of every /cgi-bin/
// URL, and the other *Prefix properties), set to a gateway replica; the
// "appsecret" it is given is a gateway credential, never the AppSecret. The process runs one API object per
// replica, sharing one token through the SDK's own getToken/saveToken
// hooks, and calls them in turn: a token fetched from one replica is used
// on the others, as a fleet of business servers behind a load balancer
// would. getIp (/cgi-bin/getcallbackip) is the business call; the SDK
// itself drops its token and retries on 40001/42001.
//
//   node client.js APPID CREDENTIAL DURATION_MS GATEWAY_URL...
//
// It prints one JSON line: calls, ok, errors by code, tokens fetched.
const API = require('co-wechat-api');

const [appid, credential, durationArg, ...bases] = process.argv.slice(2);
const duration = Number(durationArg);
if (!appid || !credential || !(duration > 0) || bases.length === 0) {
  console.error('usage: node client.js APPID CREDENTIAL DURATION_MS GATEWAY_URL...');
  process.exit(2);
}

let shared = null;
const result = { calls: 0, ok: 0, errors: {}, fetches: 0 };
const apis = bases.map((base) => {
  const api = new API(appid, credential,
    async () => shared,
    async (token) => {
      if (token) result.fetches++;
      shared = token;
    });
  // Every API host the SDK knows, as the README's recipe says: a token
  // the gateway hands out works only through it.
  const gw = base.replace(/\/$/, '') + '/';
  api.prefix = gw + 'cgi-bin/';
  api.fileServerPrefix = gw + 'cgi-bin/';
  api.snsPrefix = gw + 'sns/';
  api.wxaPrefix = gw + 'wxa/';
  api.merchantPrefix = gw + 'merchant/';
  api.customservicePrefix = gw + 'customservice/';
  api.payPrefix = gw + 'pay/';
  api.setOpts({ timeout: 5000 });
  return api;
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

(async () => {
  const end = Date.now() + duration;
  while (Date.now() < end) {
    const api = apis[result.calls % apis.length];
    result.calls++;
    try {
      const reply = await api.getIp();
      if (reply && Array.isArray(reply.ip_list)) {
        result.ok++;
      } else {
        result.errors.bad_reply = (result.errors.bad_reply || 0) + 1;
      }
    } catch (err) {
      const key = String(err.code || err.name || 'error');
      result.errors[key] = (result.errors[key] || 0) + 1;
    }
    await sleep(25); // bounded: about 40 calls a second per process
  }
  console.log(JSON.stringify(result));
})().catch((err) => {
  console.error(err && err.stack || err);
  process.exit(1);
});
