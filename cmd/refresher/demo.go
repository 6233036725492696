package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/demo"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
)

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
	log := newLogger(env.Config, stderr)
	log.Info("demo: embedded Redis and fake WeChat started", "redis", env.RedisAddr, "wechat", env.WeChatURL,
		"token_lifetime", demo.Lifetime, "overlap", demo.Grace)
	return serve(ctx, env.Config, log, refresher.WithOnListening(func(addr string) { env.WriteHelp(stdout, addr) }))
}
