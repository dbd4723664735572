//go:build !linux

package kubotest

import "os/exec"

// setSysProcAttr: parent-death signals are Linux-only; elsewhere a test
// binary that dies without cleanup can leak its daemons.
func setSysProcAttr(cmd *exec.Cmd) {}
