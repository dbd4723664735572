package kubo

import "testing"

func TestNetworkOf(t *testing.T) {
	list := func(s ...any) []any { return s }
	for _, tt := range []struct {
		name                         string
		bootstrap, autoconf, routers any
		want                         string
	}{
		{"pacman-ipfs-kubo-init's default", list(), false, list(), NetworkLAN},
		{"kubo's defaults", list("auto"), nil, list("auto"), NetworkPublic},
		{"autoconf on would fetch peers", list(), true, list(), NetworkPublic},
		{"autoconf unset is on", list(), nil, list(), NetworkPublic},
		{"a bootstrap peer", list("/dnsaddr/bootstrap.libp2p.io/p2p/Qm"), false, list(), NetworkPublic},
		{"a delegated router", list(), false, list("https://cid.contact"), NetworkPublic},
	} {
		if got := networkOf(tt.bootstrap, tt.autoconf, tt.routers); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}
