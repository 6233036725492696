package backend

import (
	"strings"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// ACLCommands are the only Redis commands tokenkeeper sends (the library,
// the scheduler, the refresher, and its one-shot commands), those its Lua
// scripts call included: Redis checks a script's calls against the user's
// ACL too. They were found by running all of it on a real redis-server
// and reading INFO commandstats (TestACLUserRunsEverything, which fails
// if a command is missing or unused). AUTH and HELLO need no permission.
var ACLCommands = []string{
	// reads and plain writes: records, last fetch, lease, budget count
	"get", "set", "pttl",
	// scripts: the fetch protocol (tokencache) and redsync's lock scripts
	"evalsha", "eval",
	// called from those scripts
	"del", "incr", "pexpire", "zadd", "zcard", "zrange", "zrem", "zremrangebyscore",
	// change announcements
	"publish", "subscribe",
	// readiness and status probes
	"ping",
}

// ACLClusterCommands are added to ACLCommands for a Redis Cluster: the
// cluster client reads the slot map, and the command table (COMMAND,
// metadata only) to route each command; refused, it asks again before
// every command (TestACLUserOnCluster).
var ACLClusterCommands = []string{"cluster|slots", "command"}

// ACLRules are the rules of a least-privilege Redis ACL user for cfg:
// no command but ACLCommands (and ACLClusterCommands on a Cluster), no key but those under cfg's key prefix
// (and the lease, if it lies outside it), no channel but the events
// channel. Give them after ACL SETUSER <user> on ><password>:
//
//	ACL SETUSER tokenkeeper on >PASSWORD reset... (see ACLSetUser)
//
// CONFIG GET maxmemory-policy is not among them: CheckEviction reports
// that it could not be read, and an operator checks the policy instead.
func ACLRules(cfg *config.Config) []string {
	rules := []string{"resetkeys", "resetchannels", "-@all"}
	commands := ACLCommands
	if cfg.Redis.Cluster() {
		commands = append(commands[:len(commands):len(commands)], ACLClusterCommands...)
	}
	for _, c := range commands {
		rules = append(rules, "+"+c)
	}
	prefix := cfg.Cache.KeyPrefix
	rules = append(rules, "~"+globEscape(prefix)+"*")
	if !strings.HasPrefix(cfg.Lease.Name, prefix) {
		rules = append(rules, "~"+globEscape(cfg.Lease.Name))
	}
	return append(rules, "&"+globEscape(tokencache.EventsChannel(prefix)))
}

// ACLSetUser is the whole ACL SETUSER command (as arguments) creating or
// resetting user with password and ACLRules(cfg). The password is among
// the arguments: never log them.
func ACLSetUser(cfg *config.Config, user, password string) []string {
	return append([]string{"ACL", "SETUSER", user, "reset", "on", ">" + password}, ACLRules(cfg)...)
}

// globEscape quotes Redis glob metacharacters, so a prefix matches only
// itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
