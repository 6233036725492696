package wechat

import "log/slog"

type slogValue = slog.Value

func redactedLogValue() slog.Value { return slog.StringValue("[redacted]") }
