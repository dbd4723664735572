package kubotest

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr makes the kernel kill the daemon if the test binary dies
// without running cleanups (e.g. go test -timeout panics), so daemons don't
// outlive the test run holding ports and temp dirs.
func setSysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
