package wechat

// AppIDLen is the length of a WeChat appid: "wx" and 16 hexadecimal digits,
// as the console shows it (开发 → 基本配置 → 开发者ID(AppID)). Official
// accounts and mini programs share the shape.
const AppIDLen = 18

// AppSecretLen is the length of an AppSecret: 32 hexadecimal digits.
const AppSecretLen = 32

// AppIDProblem says why id cannot be a WeChat appid, or "" if it can. The
// reasons never quote id: the commonest mistake is the AppSecret pasted
// where the appid goes, and a reason must not print it.
func AppIDProblem(id string) string {
	switch {
	case LooksLikeAppSecret(id):
		return "has the shape of an AppSecret (32 hexadecimal digits), not of an appid; a WeChat appid is \"wx\" followed by 16 hexadecimal digits (console: 开发 → 基本配置 → AppID)"
	case len(id) != AppIDLen || id[:2] != "wx" || !isHex(id[2:]):
		return "is not a WeChat appid: one is \"wx\" followed by 16 hexadecimal digits (18 characters, e.g. wx0123456789abcdef; console: 开发 → 基本配置 → AppID)"
	}
	return ""
}

// LooksLikeAppSecret reports whether s has an AppSecret's shape. No appid
// has it (an appid starts with "wx", which is not hexadecimal), so an appid
// of this shape is a secret pasted into the wrong place, whatever upstream
// it is meant for.
func LooksLikeAppSecret(s string) bool { return len(s) == AppSecretLen && isHex(s) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
