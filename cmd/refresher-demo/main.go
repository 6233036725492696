// Command refresher-demo is the refresher (cmd/refresher) plus
// `serve --demo`, which needs neither Redis nor WeChat: an embedded Redis
// (miniredis) and an embedded fake WeChat (pkg/wechattest) with two apps
// whose tokens live a minute. `make run` starts it:
//
//	go run ./cmd/refresher-demo serve --demo [--http-addr ADDR] [--gateway-addr ADDR] [--print-config]
//
// Every other subcommand and flag is the refresher's (package
// internal/cli). It links test code, so it is never the production
// binary: build cmd/refresher for that.
package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/cli"
	"github.com/tokenkeeper/tokenkeeper/internal/demo"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
)

func main() { cli.Main(runDemo) }

// runDemo serves with an embedded Redis and an embedded fake WeChat.
func runDemo(ctx context.Context, fs *pflag.FlagSet, printConfig bool, stdout, stderr io.Writer) error {
	env, err := demo.Start(fs)
	if err != nil {
		return err
	}
	defer env.Close()
	if printConfig {
		return env.Config.Print(stdout)
	}
	log := cli.NewLogger(env.Config, stderr)
	log.Info("demo: embedded Redis and fake WeChat started", "redis", env.RedisAddr, "wechat", env.WeChatURL,
		"token_lifetime", demo.Lifetime, "overlap", demo.Grace)
	return cli.Serve(ctx, env.Config, log, refresher.WithOnListening(func(addr string) { env.WriteHelp(stdout, addr, env.Config.Gateway.Addr) }))
}
