package tokencache

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts that touch an app's keys, kept together. Each runs
// atomically in Redis, and every key it names carries the app's {appID} hash
// tag, so they also run on Redis Cluster.
//
// Arguments are passed by name: ARGV[1] is one JSON object, the script's
// own args struct below, which the script reads as a.<name>. A test checks
// that every a.<name> a script reads is a field of its struct. The client
// computes every time and passes it in; numbers in records stay strings in
// Lua, so no float formatting can corrupt a record.
//
// parse below is the record grammar of record.go, in Lua, with record.go's
// bounds filled in: it returns nil for exactly the strings DecodeRecord
// rejects (FuzzRecordGrammar). Every
// change to a record takes a new rev (see Token.Rev) and is announced on
// the events channel as "app version rev usable_until fetched_at": the
// record as it now is (a deleted one has usable_until in the past).
var luaPrelude = strings.NewReplacer(
	"MAX_DIGITS", strconv.Itoa(maxNumberDigits),
	"MAX_TOKEN", strconv.Itoa(maxTokenLen),
	"MAX_RECORD", strconv.Itoa(maxRecordLen),
	"MAX_LIFE", strconv.FormatInt(maxTokenLife.Milliseconds(), 10),
).Replace(`
local a = cjson.decode(ARGV[1])
local function num(d)
  if #d > MAX_DIGITS or (#d > 1 and string.sub(d, 1, 1) == '0') then return nil end
  return tonumber(d)
end
local function parse(s)
  if type(s) ~= 'string' or #s > MAX_RECORD then return nil end
  local v, n, u, r, e, f, i, t = string.match(s, '^tk2|([0-9]+)|([0-9]+)|([0-9]+)|([0-9]+)|([0-9]+)|([0-9]+)|([0-9]+)|([!-{}~]+)$')
  if not v or #t > MAX_TOKEN then return nil end
  local nv, nn, nu, nr, ne, nf, ni = num(v), num(n), num(u), num(r), num(e), num(f), num(i)
  if not (nv and nn and nu and nr and ne and nf and ni) then return nil end
  if nv < 1 or nn < 1 or nr > nu or nu > ne or nf > ne or ne - nf > MAX_LIFE then return nil end
  return {v = v, n = n, u = u, r = r, e = e, f = f, i = i, t = t}
end
local function format(rec)
  return 'tk2|' .. rec.v .. '|' .. rec.n .. '|' .. rec.u .. '|' .. rec.r .. '|' .. rec.e .. '|' .. rec.f .. '|' .. rec.i .. '|' .. rec.t
end
local function announce(rec)
  redis.call('PUBLISH', a.channel, a.app .. ' ' .. rec.v .. ' ' .. rec.n .. ' ' .. rec.u .. ' ' .. rec.f)
end
-- nextRev is above every rev the app had, and at least the writer's clock
-- in ms, so it keeps increasing even after Redis lost its data.
local function nextRev(revKey)
  local last = tonumber(redis.call('GET', revKey) or '0') or 0
  local rev = string.format('%d', math.max(last + 1, a.now))
  redis.call('SET', revKey, rev)
  return rev
end
local function cap(key, revKey, rec, capUntil, capRefresh)
  -- Our fetch cannot have minted after its deadline (past it, its intent
  -- stops counting for everyone). A record fetched after that was minted
  -- after ours: our fetch cannot kill it.
  if tonumber(rec.f) >= a.deadline then return false end
  -- Only a mint after this record's own fetch can kill it, so it lives at
  -- least the overlap after its fetched_at: never cap below that.
  local floor = tonumber(rec.f) + a.window
  if capUntil < floor then
    capUntil = floor
    capRefresh = a.now + math.floor((floor - a.now) / 2)
  end
  if capUntil >= tonumber(rec.u) then return false end
  rec.n = nextRev(revKey)
  rec.u = string.format('%d', capUntil)
  if capRefresh < tonumber(rec.r) then rec.r = string.format('%d', capRefresh) end
  if tonumber(rec.r) > tonumber(rec.u) then rec.r = rec.u end
  if capUntil <= a.now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, format(rec), 'PX', capUntil - a.now)
  end
  announce(rec)
  return true
end
local function forgetIntent(intents)
  redis.call('ZREM', intents, a.id)
  redis.call('ZREMRANGEBYSCORE', intents, '-inf', '(' .. a.now)
end
`)

// script is a Lua script whose arguments travel as one JSON object.
type script struct {
	*redis.Script
	src string
}

func newScript(body string) script {
	return script{Script: redis.NewScript(luaPrelude + body), src: luaPrelude + body}
}

func (s script) run(ctx context.Context, c redis.Scripter, keys []string, args any) *redis.Cmd {
	b, err := json.Marshal(args)
	if err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	return s.Run(ctx, c, keys, b)
}

// beginArgs are beginFetch's arguments.
type beginArgs struct {
	Now        int64  `json:"now"`
	ID         string `json:"id"`       // this fetch's intent
	Deadline   int64  `json:"deadline"` // the intent's end: the fetch cannot mint after it
	CapUntil   int64  `json:"cap_until"`
	CapRefresh int64  `json:"cap_refresh"`
	Budget     int    `json:"budget"`     // fetches a Beijing day; 0: no cap
	BadBudget  int    `json:"bad_budget"` // of which passive refreshes may use; the rest is the scheduler's
	BudgetTTL  int64  `json:"budget_ttl"`
	BadLimit   int    `json:"bad_limit"` // passive-refresh fetches per bad_window, fleet-wide; 0: no limit
	BadWindow  int64  `json:"bad_window"`
	Classic    bool   `json:"classic"`
	Cond       string `json:"cond"` // "usable", "due" or "bad"
	Bad        string `json:"bad"`
	Channel    string `json:"channel"`
	App        string `json:"app"`
	Window     int64  `json:"window"` // the cap window, ms
}

// beginFetch runs after the fetch lock is taken and before anything is sent
// upstream. It is the second check (the record may have been refreshed while
// we waited for the lock, and then we must not fetch), the fleet-wide daily
// budget and passive-refresh rate, the registration of this fetch's intent,
// and, for a classic app, the cap on the stored token: once this fetch is
// sent the stored token may be invalidated, whether or not the reply ever
// arrives.
//
// KEYS: record, intents, budget counter (of the day), rev, passive-refresh
// counter, version counter
//
// Returns {"fresh", record} | {"budget", used} | {"limited", used} |
// {"go", used, record or "", version counter}.
var beginFetch = newScript(`
local cur = redis.call('GET', KEYS[1])
local rec = parse(cur)
if rec then
  if a.cond == 'usable' and a.now < tonumber(rec.u) then return {'fresh', cur} end
  if a.cond == 'due' and a.now < tonumber(rec.r) then return {'fresh', cur} end
  if a.cond == 'bad' and rec.t ~= a.bad and a.now < tonumber(rec.u) then return {'fresh', cur} end
end
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
if a.budget > 0 and used >= a.budget then return {'budget', tostring(used)} end
if a.cond == 'bad' then
  if a.budget > 0 and used >= a.bad_budget then return {'budget', tostring(used)} end
  if a.bad_limit > 0 then
    local n = redis.call('INCR', KEYS[5])
    if n == 1 then redis.call('PEXPIRE', KEYS[5], a.bad_window) end
    if n > a.bad_limit then return {'limited', tostring(n - 1)} end
  end
end
used = redis.call('INCR', KEYS[3])
if used == 1 then redis.call('PEXPIRE', KEYS[3], a.budget_ttl) end
forgetIntent(KEYS[2])
redis.call('ZADD', KEYS[2], a.deadline, a.id)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], math.max(1, tonumber(last[2]) - a.now))
if rec and a.classic then cap(KEYS[1], KEYS[4], rec, a.cap_until, a.cap_refresh) end
return {'go', tostring(used), cur or '', redis.call('GET', KEYS[6]) or '0'}
`)

// commitArgs are commitFetch's arguments: the fetched token's record
// fields, as stored uncontended and contended, and the cap to put on the
// stored token if ours is refused.
type commitArgs struct {
	Now        int64  `json:"now"`
	ID         string `json:"id"`
	Expected   string `json:"expected"` // the version counter when the fetch began, "0" for none
	Token      string `json:"token"`
	Usable     string `json:"usable"`
	Refresh    string `json:"refresh"`
	CUsable    string `json:"c_usable"` // contended: another fetch is in flight
	CRefresh   string `json:"c_refresh"`
	Expires    string `json:"expires"`
	Fetched    string `json:"fetched"`
	Issued     string `json:"issued"` // WeChat's Date in ms; "0" unknown
	Slack      int64  `json:"slack"`  // how far apart two Dates prove the mint order
	Classic    bool   `json:"classic"`
	CapUntil   int64  `json:"cap_until"`
	CapRefresh int64  `json:"cap_refresh"`
	Deadline   int64  `json:"deadline"`
	Window     int64  `json:"window"`
	Channel    string `json:"channel"`
	App        string `json:"app"`
}

// commitFetch stores a fetched token: a compare-and-set on the version
// counter as the fetch began, so a writer whose lock expired while it was
// paused can never overwrite a newer token, and a record that merely
// reached its TTL meanwhile does not refuse the refresh that replaces it. If the set is refused and the app is
// classic, our fetch may have invalidated the token that is stored now, so
// that token is capped relative to when our fetch was sent. If another fetch
// is still in flight, ours may be invalidated by it, so ours is stored
// capped ("contended").
//
// KEYS: record, intents, version counter, rev
//
// Returns {"stored", version, rev, contended 0/1} | {"refused", current
// version} | {"stale", 0} (our token's usable life had already ended).
var commitFetch = newScript(`
forgetIntent(KEYS[2])
local others = redis.call('ZCARD', KEYS[2])
local rec = parse(redis.call('GET', KEYS[1]))
local curv = redis.call('GET', KEYS[3]) or '0'
if curv ~= a.expected then
  if not (rec and a.classic) then return {'refused', tonumber(curv)} end
  -- Someone stored a token while we fetched. WeChat's own clock (the
  -- replies' Date, to the second) can prove which was minted last; the
  -- slack covers its resolution and the spread of WeChat's servers.
  local ours, theirs = tonumber(a.issued), tonumber(rec.i)
  local known = ours > 0 and theirs > 0
  if known and ours + a.slack <= theirs then
    return {'refused', tonumber(curv)} -- theirs is the newest: it lives on
  end
  if not (known and theirs + a.slack <= ours) then
    cap(KEYS[1], KEYS[4], rec, a.cap_until, a.cap_refresh)
    return {'refused', tonumber(curv)}
  end
  -- Ours is proven the newest, and theirs dies one overlap after it: ours
  -- replaces theirs.
end
local usable, refresh, contended = a.usable, a.refresh, 0
if a.classic and others > 0 then usable, refresh, contended = a.c_usable, a.c_refresh, 1 end
if tonumber(usable) <= a.now then
  if rec and a.classic then cap(KEYS[1], KEYS[4], rec, a.cap_until, a.cap_refresh) end
  return {'stale', 0}
end
local new = {v = tostring(redis.call('INCR', KEYS[3])), n = nextRev(KEYS[4]), u = usable, r = refresh,
  e = a.expires, f = a.fetched, i = a.issued, t = a.token}
redis.call('SET', KEYS[1], format(new), 'PX', tonumber(usable) - a.now)
announce(new)
return {'stored', tonumber(new.v), tonumber(new.n), contended}
`)

// abortArgs are abortFetch's arguments.
type abortArgs struct {
	Now         int64  `json:"now"`
	ID          string `json:"id"`
	MayHaveSent bool   `json:"may_have_sent"` // the request may have reached WeChat
	Classic     bool   `json:"classic"`
	CapUntil    int64  `json:"cap_until"`
	CapRefresh  int64  `json:"cap_refresh"`
	Expected    string `json:"expected"`  // the version the fetch began with
	BeginCap    string `json:"begin_cap"` // usable_until beginFetch set, or ""
	PrevUsable  string `json:"prev_usable"`
	PrevRefresh string `json:"prev_refresh"`
	Deadline    int64  `json:"deadline"`
	Window      int64  `json:"window"`
	Channel     string `json:"channel"`
	App         string `json:"app"`
}

// abortFetch ends a fetch that stored nothing. If the request may have
// reached WeChat (a lost reply, a timeout after sending) and the app is
// classic, the stored token is capped relative to when the fetch was sent.
// If the fetch surely minted nothing (WeChat answered with an errcode, or it
// was never sent), the cap beginFetch put on the stored token is lifted
// again, provided nobody else has capped or replaced it meanwhile and no
// other fetch is in flight: a quota or configuration error must not shorten
// the life of the token that keeps the app running.
//
// KEYS: record, intents, rev
//
// Returns "capped", "restored", "kept" or "none".
var abortFetch = newScript(`
forgetIntent(KEYS[2])
local rec = parse(redis.call('GET', KEYS[1]))
if not rec then return 'none' end
if a.may_have_sent and a.classic then
  if cap(KEYS[1], KEYS[3], rec, a.cap_until, a.cap_refresh) then return 'capped' end
  return 'kept'
end
if a.begin_cap ~= '' and rec.v == a.expected and rec.u == a.begin_cap and redis.call('ZCARD', KEYS[2]) == 0 then
  if tonumber(a.prev_usable) > a.now then
    rec.n = nextRev(KEYS[3])
    rec.u, rec.r = a.prev_usable, a.prev_refresh
    redis.call('SET', KEYS[1], format(rec), 'PX', tonumber(a.prev_usable) - a.now)
    announce(rec)
    return 'restored'
  end
end
return 'kept'
`)

// checkRecord parses KEYS[1]'s value with the scripts' grammar; it exists
// for FuzzRecordGrammar. Returns the fields, or false.
var checkRecord = newScript(`
local rec = parse(redis.call('GET', KEYS[1]))
if not rec then return false end
return {rec.v, rec.n, rec.u, rec.r, rec.e, rec.f, rec.i, rec.t}
`)
