package tokencache

import "github.com/redis/go-redis/v9"

// The Lua scripts that touch an app's keys, kept together. Each runs
// atomically in Redis, and every key it names carries the app's {appID} hash
// tag, so they also run on Redis Cluster.
//
// Numbers in records stay strings inside Lua: the client computes every time
// and passes it in, so no float formatting can corrupt a record.
//
// A record is "tk1|version|usable_until|refresh_at|expires_at|fetched_at|issued_at|token"
// (see the package doc). Every change is announced on the events channel as
// "app version usable_until fetched_at" (the record as it now is; a deleted
// one has usable_until in the past). Capping a record lowers usable_until (and
// refresh_at) to a bound passed by the client, sets the key's TTL to match,
// deletes it if the bound has passed, and announces the change.
const luaPrelude = `
local function parse(s)
  if not s then return nil end
  local v, u, r, e, f, i, t = string.match(s, '^tk1|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(.+)$')
  if not v then return nil end
  return {v = v, u = u, r = r, e = e, f = f, i = i, t = t}
end
local function format(rec)
  return 'tk1|' .. rec.v .. '|' .. rec.u .. '|' .. rec.r .. '|' .. rec.e .. '|' .. rec.f .. '|' .. rec.i .. '|' .. rec.t
end
local function announce(channel, app, rec)
  redis.call('PUBLISH', channel, app .. ' ' .. rec.v .. ' ' .. rec.u .. ' ' .. rec.f)
end
local function cap(key, rec, now, capUntil, capRefresh, channel, app, window, ourDeadline)
  -- Our fetch cannot have minted after its deadline (past it, its intent
  -- stops counting for everyone). A record fetched after that was minted
  -- after ours: our fetch cannot kill it.
  if tonumber(rec.f) >= tonumber(ourDeadline) then return false end
  -- Only a mint after this record's own fetch can kill it, so it lives at
  -- least the overlap after its fetched_at: never cap below that.
  local floor = tonumber(rec.f) + tonumber(window)
  if tonumber(capUntil) < floor then
    capUntil = string.format('%d', floor)
    capRefresh = string.format('%d', now + math.floor((floor - now) / 2))
  end
  if tonumber(capUntil) >= tonumber(rec.u) then return false end
  if tonumber(capUntil) <= now then
    redis.call('DEL', key)
  else
    rec.u = capUntil
    if tonumber(capRefresh) < tonumber(rec.r) then rec.r = capRefresh end
    if tonumber(rec.r) > tonumber(rec.u) then rec.r = rec.u end
    redis.call('SET', key, format(rec), 'PX', tonumber(capUntil) - now)
  end
  announce(channel, app, rec)
  return true
end
local function forgetIntent(intents, id, now)
  redis.call('ZREM', intents, id)
  redis.call('ZREMRANGEBYSCORE', intents, '-inf', '(' .. now)
end
`

// beginFetch runs after the fetch lock is taken and before anything is sent
// upstream. It is the second check (the record may have been refreshed while
// we waited for the lock, and then we must not fetch), the fleet-wide daily
// budget, the registration of this fetch's intent, and, for a classic app,
// the cap on the stored token: once this fetch is sent the stored token may
// be invalidated, whether or not the reply ever arrives.
//
// KEYS: record, intents, budget counter
// ARGV: now, fetch id, intent deadline, cap until, cap refresh, budget,
//
//	budget TTL ms, classic ("1"/"0"), condition ("usable"/"due"/"bad"),
//	bad token, channel, app, cap window ms
//
// Returns {"fresh", record} | {"budget", used} | {"go", used, record or ""}.
var beginFetch = redis.NewScript(luaPrelude + `
local now = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
local rec = parse(cur)
if rec then
  local cond = ARGV[9]
  if cond == 'usable' and now < tonumber(rec.u) then return {'fresh', cur} end
  if cond == 'due' and now < tonumber(rec.r) then return {'fresh', cur} end
  if cond == 'bad' and rec.t ~= ARGV[10] and now < tonumber(rec.u) then return {'fresh', cur} end
end
local used = redis.call('INCR', KEYS[3])
if used == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[7]) end
local budget = tonumber(ARGV[6])
if budget > 0 and used > budget then
  redis.call('DECR', KEYS[3])
  return {'budget', tostring(used - 1)}
end
forgetIntent(KEYS[2], ARGV[2], now)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], math.max(1, tonumber(last[2]) - now))
if rec and ARGV[8] == '1' then
  cap(KEYS[1], rec, now, ARGV[4], ARGV[5], ARGV[11], ARGV[12], ARGV[13], ARGV[3])
end
return {'go', tostring(used), cur or ''}
`)

// commitFetch stores a fetched token: a compare-and-set on the version the
// fetch began with, so a writer whose lock expired while it was paused can
// never overwrite a newer token. If the set is refused and the app is
// classic, our fetch may have invalidated the token that is stored now, so
// that token is capped relative to when our fetch was sent. If another fetch
// is still in flight, ours may be invalidated by it, so ours is stored
// capped ("contended").
//
// KEYS: record, intents, version counter
// ARGV: now, fetch id, expected version ("0" for none), record tail,
//
//	usable until, contended record tail, contended usable until, classic,
//	cap until, cap refresh, channel, app, fetched at, cap window ms,
//	issued at ms (WeChat's Date; 0 unknown), issue-order slack ms, our
//	fetch's deadline ms
//
// A record tail is the record without "tk1|version|".
// Returns {"stored", version, contended 0/1} | {"refused", current version} |
// {"stale", 0} (our token's usable life had already ended).
var commitFetch = redis.NewScript(luaPrelude + `
local now = tonumber(ARGV[1])
forgetIntent(KEYS[2], ARGV[2], now)
local others = redis.call('ZCARD', KEYS[2])
local rec = parse(redis.call('GET', KEYS[1]))
local curv = '0'
if rec then curv = rec.v end
local classic = ARGV[8] == '1'
if curv ~= ARGV[3] then
  if not (rec and classic) then return {'refused', tonumber(curv)} end
  -- Someone stored a token while we fetched. WeChat's own clock (the
  -- replies' Date, to the second) can prove which was minted last; the
  -- slack covers its resolution and the spread of WeChat's servers.
  local ours, theirs, slack = tonumber(ARGV[15]), tonumber(rec.i), tonumber(ARGV[16])
  local known = ours > 0 and theirs > 0
  if known and ours + slack <= theirs then
    return {'refused', tonumber(curv)} -- theirs is the newest: it lives on
  end
  if not (known and theirs + slack <= ours) then
    cap(KEYS[1], rec, now, ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[14], ARGV[17])
    return {'refused', tonumber(curv)}
  end
  -- Ours is proven the newest, and theirs dies one overlap after it: ours
  -- replaces theirs.
end
local tail, usable, contended = ARGV[4], tonumber(ARGV[5]), 0
if classic and others > 0 then tail, usable, contended = ARGV[6], tonumber(ARGV[7]), 1 end
if usable <= now then
  if rec and classic then cap(KEYS[1], rec, now, ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[14], ARGV[17]) end
  return {'stale', 0}
end
local v = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], 'tk1|' .. v .. '|' .. tail, 'PX', usable - now)
announce(ARGV[11], ARGV[12], {v = v, u = usable, f = ARGV[13]})
return {'stored', v, contended}
`)

// abortFetch ends a fetch that stored nothing. If the request may have
// reached WeChat (a lost reply, a timeout after sending) and the app is
// classic, the stored token is capped relative to when the fetch was sent.
// If the fetch surely minted nothing (WeChat answered with an errcode, or it
// was never sent), the cap beginFetch put on the stored token is lifted
// again, provided nobody else has capped or replaced it meanwhile and no
// other fetch is in flight: a quota or configuration error must not shorten
// the life of the token that keeps the app running.
//
// KEYS: record, intents
// ARGV: now, fetch id, outcome unknown ("1"/"0"), cap until, cap refresh,
//
//	expected version, our begin cap (usable_until it set, or ""),
//	usable until before it, refresh at before it, channel, app, classic,
//	cap window ms, our fetch's deadline ms
//
// Returns "capped", "restored", "kept" or "none".
var abortFetch = redis.NewScript(luaPrelude + `
local now = tonumber(ARGV[1])
forgetIntent(KEYS[2], ARGV[2], now)
local rec = parse(redis.call('GET', KEYS[1]))
if not rec then return 'none' end
if ARGV[3] == '1' and ARGV[12] == '1' then
  if cap(KEYS[1], rec, now, ARGV[4], ARGV[5], ARGV[10], ARGV[11], ARGV[13], ARGV[14]) then return 'capped' end
  return 'kept'
end
if ARGV[7] ~= '' and rec.v == ARGV[6] and rec.u == ARGV[7] and redis.call('ZCARD', KEYS[2]) == 0 then
  if tonumber(ARGV[8]) > now then
    rec.u, rec.r = ARGV[8], ARGV[9]
    redis.call('SET', KEYS[1], format(rec), 'PX', tonumber(ARGV[8]) - now)
    announce(ARGV[10], ARGV[11], rec)
    return 'restored'
  end
end
return 'kept'
`)
