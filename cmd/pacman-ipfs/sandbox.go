package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// The packaged unit's IPAddressDeny=any drops every packet to an address other than loopback: a
// connection to a mirror elsewhere would hang until pacman gives up (10 s), and the agent would only
// ever see a timeout. So it asks once, at start, when a mirror is elsewhere: a connection to one of this
// machine's own addresses other than loopback is refused (or accepted) at once where the network is
// allowed, and hangs, or is refused with EPERM, where the cgroup's firewall drops it.

// forbiddenWhy is what the journal, status and the endpoint's errors say when it does.
const forbiddenWhy = "pacman-ipfs.service forbids the network (IPAddressDeny=): the endpoint reaches loopback mirrors only; " +
	"to let it reach the others, add a drop-in with [Service] IPAddressDeny= (systemctl edit pacman-ipfs.service; see packaging/README.md)"

// probeTimeout bounds the question: a connection to this machine's own address is answered in well
// under a millisecond when nothing drops it.
const probeTimeout = 300 * time.Millisecond

// networkForbidden says whether this process may reach loopback only. It tries the first address of
// this machine's interfaces that is not loopback (nor link-local); with none, it cannot tell and says no.
func networkForbidden(ctx context.Context) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		// Port 9 (discard): closed on nearly every machine, so refused at once when allowed.
		d := net.Dialer{Timeout: probeTimeout}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(9)))
		if err == nil {
			c.Close()
			return false
		}
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
	}
	return false
}
