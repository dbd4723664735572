package main

import (
	"context"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/lanindex"
)

// pageData is what the endpoint's status page shows of the agent: the node and its LAN peers, what
// the last pass seeded, the LAN indexes followed. ctx bounds every call to the node (the endpoint gives
// it a few seconds): a node that is down is shown as such. lan is nil without the LAN index exchange.
func pageData(ctx context.Context, a *agent.Agent, api *lazyKubo, lan *lanindex.Exchange) endpoint.PageData {
	var d endpoint.PageData
	if r := a.Status().Last; r != nil {
		d.Repos, d.LastPass = make(map[string]endpoint.Count, len(r.Repos)), r.Started
		for repo, rc := range r.Repos {
			d.Repos[repo] = endpoint.Count{Files: rc.Files, Bytes: rc.Bytes}
		}
	}
	if lan != nil {
		d.LANIndexes = lan.Roots()
	}
	var n nodeStatus
	node, err := api.client(ctx)
	if err == nil {
		err = n.describe(ctx, node)
	}
	if err != nil {
		d.Node.Error = err.Error()
		return d
	}
	d.Node = endpoint.PageNode{ID: n.ID, Version: n.Version}
	for _, p := range n.LANPeers {
		d.LANPeers = append(d.LANPeers, endpoint.PagePeer{ID: p.ID, Addr: p.Addr})
	}
	return d
}
