package node

import (
	"net/url"
	"strings"
)

// SplitUserinfo takes "scheme://user:password@host/..." apart without url.Parse, which refuses what
// people put into passwords: a stray '%', and '/', '?', '#' or '@' unescaped. The userinfo ends at the
// last '@' before the first '/', '?' or '#'; when there is none there, at the last '@' of all (a
// password with one of those in it: better to take too much for the secret than to show any of it). The
// user and password are taken literally (percent-decoded only where that is valid); rest is what
// follows the userinfo. info says whether there was one.
func SplitUserinfo(addr string) (rest, user, password string, info bool) {
	_, after, found := strings.Cut(addr, "://")
	if !found {
		return addr, "", "", false
	}
	authority := after
	if i := strings.IndexAny(after, "/?#"); i >= 0 {
		authority = after[:i]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		at = strings.LastIndexByte(after, '@')
	}
	if at < 0 {
		return after, "", "", false
	}
	user, password, _ = strings.Cut(after[:at], ":")
	if u, err := url.PathUnescape(user); err == nil {
		user = u
	}
	if p, err := url.PathUnescape(password); err == nil {
		password = p
	}
	return after[at+1:], user, password, true
}

// Redact replaces the userinfo of an address (a kubo RPC or IPFS Cluster REST URL, even one that does
// not parse) with "xxxxx": the one redactor for every address shown in output, logs and answers.
func Redact(addr string) string {
	rest, _, _, info := SplitUserinfo(addr)
	if !info {
		return addr
	}
	scheme, _, _ := strings.Cut(addr, "://")
	return scheme + "://xxxxx@" + rest
}
