package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
)

func main() {
	socket := flag.String("socket", control.DefaultSocket, "the agent's control `socket`")
	reconcile := flag.Bool("reconcile", false, "ask for a reconcile instead of handing over targets (paccache)")
	wait := flag.Bool("wait", false, "wait for the agent's answer and report a refusal (for people, not for hooks)")
	flag.Parse()
	if err := run(*socket, *reconcile, *wait, os.Stdin); err != nil && !inChroot() {
		fmt.Fprintln(os.Stderr, "pacman-ipfs:", err)
	}
	os.Exit(0)
}

func run(socket string, reconcile, wait bool, stdin *os.File) error {
	req := control.Request{Op: control.OpNotify}
	if reconcile {
		req.Op = control.OpReconcile
	} else if fi, err := stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		req.Targets = readTargets(stdin)
	}
	if wait {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := control.Do(ctx, socket, req)
		if control.IsNoAgent(err) {
			return nil
		}
		return err
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("unix", socket, 500*time.Millisecond)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil // no agent: nothing to tell, nothing to say
		}
		return fmt.Errorf("cannot reach the agent at %s: %w", socket, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	// Write and go: a socket-activated agent may take a moment to start, and pacman must not wait for
	// it. The kernel keeps the request, and our credentials, until the agent reads them.
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("agent at %s: %w", socket, err)
	}
	return nil
}

// readTargets reads the package names pacman passes (NeedsTargets), one per line, within the protocol's
// size limit.
func readTargets(r io.Reader) []string {
	var out []string
	size := 0
	sc := bufio.NewScanner(io.LimitReader(r, control.MaxRequest))
	for sc.Scan() {
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		if size += len(t) + 3; size > control.MaxRequest-64 {
			break // a reconcile sees everything anyway
		}
		out = append(out, t)
	}
	return out
}

// inChroot says whether this process's root is not init's: pacman runs hooks chrooted into RootDir
// when it is not "/" (pacstrap), where nobody wants to hear from us.
func inChroot() bool {
	var self, init syscall.Stat_t
	if syscall.Stat("/", &self) != nil {
		return true
	}
	if err := syscall.Stat("/proc/1/root", &init); err != nil {
		// No /proc at all: a bare chroot. Not allowed to look (not root): cannot tell, assume not.
		return errors.Is(err, syscall.ENOENT)
	}
	return self.Dev != init.Dev || self.Ino != init.Ino
}
