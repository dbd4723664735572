// Package agent keeps the node in step with pacman's caches as a long-running service: it watches every
// CacheDir and the sync db directory, coalesces bursts of events into few reconcile passes, answers the
// control socket (seeder/agent/control), and speaks systemd's notify protocol (READY, STATUS, STOPPING,
// WATCHDOG).
//
// Events only schedule a pass; a pass always reconciles everything (reconcile.Seeder.Sync), so a lost event,
// an inotify overflow, a replaced directory, a restart or a crash is healed by the next pass, never
// remembered.
//
// It owns watching, the pass loop and the control socket's server. It must never decide what is seeded (the
// reconcile does) or talk to the node outside a pass.
package agent
