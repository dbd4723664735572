package sigcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MaxSize bounds a detached signature: real ones are a few hundred bytes.
const MaxSize = 16 << 10

// Verifier checks a detached signature over a package's bytes. Keyring is the one implementation; the
// reconcile and the endpoint take a func returning one, asked again each time, so that a keyring made later
// (pacman-key --init) is used from then on, and nil while there is none.
type Verifier interface {
	Verify(ctx context.Context, sig []byte, data io.Reader) error
}

var _ Verifier = (*Keyring)(nil)

// Keyring verifies detached signatures with gpgv against one keyring file.
type Keyring struct {
	Path string // the keyring file, e.g. /etc/pacman.d/gnupg/pubring.gpg
	GPGV string // the gpgv binary; "gpgv" from $PATH when empty
}

// Find returns the keyring of pacman's GnuPG directory (pubring.gpg, or pubring.kbx for a directory made
// by a newer GnuPG), or an error naming what is missing.
func Find(gpgDir string) (*Keyring, error) {
	for _, name := range []string{"pubring.gpg", "pubring.kbx"} {
		p := filepath.Join(gpgDir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Size() > 0 {
			return &Keyring{Path: p}, nil
		}
	}
	return nil, fmt.Errorf("no keyring in %s (pubring.gpg): run pacman-key --init and --populate", gpgDir)
}

// ErrBadSignature is wrapped by Verify's error when the signature is not a good one over data by a key
// of the keyring, as opposed to gpgv not running at all.
var ErrBadSignature = errors.New("not a valid signature by a key in pacman's keyring")

// Verify checks that sig is a good, current signature over what data yields, by a key in the keyring.
func (k *Keyring) Verify(ctx context.Context, sig []byte, data io.Reader) error {
	if len(sig) == 0 || len(sig) > MaxSize {
		return fmt.Errorf("%w: %d bytes", ErrBadSignature, len(sig))
	}
	gpgv := k.GPGV
	if gpgv == "" {
		gpgv = "gpgv"
	}
	sr, sw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("gpgv: %w", err)
	}
	defer sr.Close()
	// The signature on fd 3, the data on stdin: nothing is written to disk. An empty --homedir keeps
	// gpgv away from anybody's GnuPG home.
	cmd := exec.CommandContext(ctx, gpgv, "--homedir", "/nonexistent", "--keyring", k.Path,
		"--status-fd", "1", "--enable-special-filenames", "--", "-&3", "-")
	cmd.ExtraFiles = []*os.File{sr}
	cmd.Stdin = data
	var status, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &status, &stderr
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		sw.Close()
		return fmt.Errorf("gpgv: %w", err)
	}
	sr.Close()
	_, werr := sw.Write(sig) // far below the pipe's buffer
	sw.Close()
	err = cmd.Wait()
	if werr != nil && err == nil {
		err = werr
	}
	if verr := judge(status.String()); verr != nil {
		return verr
	}
	if err != nil {
		return fmt.Errorf("gpgv: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// judge reads gpgv's status lines: a VALIDSIG and nothing that spoils it.
func judge(status string) error {
	var valid bool
	for line := range strings.Lines(status) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "[GNUPG:]" {
			continue
		}
		switch f[1] {
		case "VALIDSIG":
			valid = true
		case "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY":
			return fmt.Errorf("%w (gpgv: %s)", ErrBadSignature, strings.Join(f[1:min(len(f), 3)], " "))
		}
	}
	if !valid {
		return fmt.Errorf("%w (gpgv found no valid signature)", ErrBadSignature)
	}
	return nil
}
