// Package prefetch warms the node with the upgrades the LAN holds: after `pacman -Sy` brought new sync
// dbs, the packages `pacman -Su` would download that some LAN neighbour's index lists are fetched into
// the node (never into pacman's cache), checked against the db, and pinned, so that the upgrade finds
// them on this machine. Once they are no longer upgrades (installed, or the db moved on), their pins go.
//
// It only ever asks the LAN (the neighbours' indexes found by lanindex): the mirrors are pacman's
// business. Everything it fetches is bounded (MaxBytes per round, one package at a time, a time limit
// per package) and checked whole against the sync db before the endpoint trusts it.
package prefetch
