package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
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

// remoteHosts are the hosts of the mirrors that are not on this machine's loopback (file:// ones aside).
func remoteHosts(mirrors []string) []string {
	var hosts []string
	for _, m := range mirrors {
		if u, err := url.Parse(m); err == nil && u.Scheme != "file" && !endpoint.LoopbackHost(u.Host) {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts
}

// networkForbidden says whether this process may reach loopback only, when it needs more: hosts are
// the mirrors elsewhere (none: it does not ask). It asks this machine's own address on the way to them
// (ownAddress); with none, it cannot tell and says no.
func networkForbidden(ctx context.Context, hosts []string) bool {
	if len(hosts) == 0 {
		return false
	}
	own, ok := ownAddress(hosts)
	if !ok {
		return false
	}
	// Port 9 (discard): closed on nearly every machine, so refused at once when allowed.
	d := net.Dialer{Timeout: probeTimeout}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(own.String(), strconv.Itoa(9)))
	if err == nil {
		c.Close()
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES)
}

// ownAddress is the address this machine would send from to TEST-NET-1 (the default route), or else to
// a mirror named by its address. A UDP socket's connect only picks the route: no packet is sent, no
// name is resolved, and it needs no netlink (which the unit's RestrictAddressFamilies= refuses).
func ownAddress(hosts []string) (netip.Addr, bool) {
	targets := []string{"192.0.2.1"}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			targets = append(targets, a.String())
		}
	}
	for _, t := range targets {
		c, err := net.Dial("udp", net.JoinHostPort(t, "9"))
		if err != nil {
			continue // no route
		}
		a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
		if a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() {
			return a, true
		}
	}
	return netip.Addr{}, false
}
