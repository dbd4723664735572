package alpmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Signer is a real OpenPGP signing key made with gpg for one test: a packager whose detached signatures
// pacman (SigLevel = Required) and gpgv verify, once the key is trusted in a sandbox's keyring.
type Signer struct {
	Home        string // its GnuPG home, with the secret key
	Fingerprint string
	Keyring     string // its public key, exported as a keyring file
}

// NewSigner makes an Ed25519 key without a passphrase. It needs gpg.
func NewSigner(t testing.TB) *Signer {
	t.Helper()
	Require(t, "gpg", "gpgv")
	// gpg-agent's socket path must be short: not below a long t.TempDir().
	home, err := os.MkdirTemp("", "alpmtest-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = run(home, "gpgconf", "--homedir", home, "--kill", "all")
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &Signer{Home: home, Keyring: filepath.Join(home, "signer.gpg")}
	s.gpg(t, "--passphrase", "", "--quick-gen-key", "alpmtest packager <packager@example.invalid>", "ed25519", "sign", "never")
	out := s.gpg(t, "--with-colons", "--list-keys")
	for line := range strings.Lines(out) {
		if f := strings.Split(line, ":"); f[0] == "fpr" && len(f) > 9 {
			s.Fingerprint = f[9]
			break
		}
	}
	if s.Fingerprint == "" {
		t.Fatalf("alpmtest: no fingerprint in gpg's listing:\n%s", out)
	}
	s.gpg(t, "--output", s.Keyring, "--export", s.Fingerprint)
	return s
}

func (s *Signer) gpg(t testing.TB, args ...string) string {
	t.Helper()
	out, err := run(s.Home, "gpg", append([]string{"--homedir", s.Home, "--batch", "--no-tty", "--pinentry-mode", "loopback"}, args...)...)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	return out
}

// Sign writes path+".sig", a binary detached signature of path, as makepkg --sign does.
func (s *Signer) Sign(t testing.TB, path string) {
	t.Helper()
	os.Remove(path + ".sig")
	s.gpg(t, "--passphrase", "", "--local-user", s.Fingerprint, "--output", path+".sig", "--detach-sign", path)
}

// Trust makes a pacman GnuPG directory (a Sandbox's GPGDir) hold the signer's public key with ultimate
// owner trust, as pacman-key --populate does for the Arch master keys' signatures: pacman with
// SigLevel = Required then accepts what it signed.
func (s *Signer) Trust(t testing.TB, gpgDir string) {
	t.Helper()
	if err := os.MkdirAll(gpgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The exported key is a keyring in the legacy format pacman-key keeps (pubring.gpg, world-readable,
	// where pacman-ipfs looks for it). Writing it directly needs no gpg-agent, whose socket path a deep
	// t.TempDir() would make too long.
	b, err := os.ReadFile(s.Keyring)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gpgDir, "pubring.gpg"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	trust := "printf '%s:6:\\n' \"$1\" | gpg --homedir \"$2\" --batch --no-tty --no-autostart --import-ownertrust"
	if _, err := run(gpgDir, "sh", "-c", trust, "sh", s.Fingerprint, gpgDir); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	t.Cleanup(func() { _, _ = run(gpgDir, "gpgconf", "--homedir", gpgDir, "--kill", "all") })
}
