package sigcheck_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Real gpgv, real keys: a keyring made as pacman-key makes it, a trusted packager and a stranger.
func TestVerifyWithRealGPGV(t *testing.T) {
	packager, stranger := alpmtest.NewSigner(t), alpmtest.NewSigner(t)
	gpgDir := filepath.Join(t.TempDir(), "gnupg")
	packager.Trust(t, gpgDir)
	kr, err := sigcheck.Find(gpgDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "p-1-1-x86_64.pkg.tar")
	if err := os.WriteFile(pkg, bytes.Repeat([]byte("package bytes "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(pkg)
	packager.Sign(t, pkg)
	good, _ := os.ReadFile(pkg + ".sig")
	stranger.Sign(t, pkg)
	strange, _ := os.ReadFile(pkg + ".sig")

	tests := []struct {
		name    string
		sig     []byte
		data    []byte
		wantBad bool // ErrBadSignature
	}{
		{"good", good, data, false},
		{"other data", good, append(bytes.Clone(data), '!'), true},
		{"a key not in the keyring", strange, data, true},
		{"not a signature", []byte("garbage"), data, true},
		{"empty", nil, data, true},
		{"too large", make([]byte, sigcheck.MaxSize+1), data, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kr.Verify(context.Background(), tt.sig, bytes.NewReader(tt.data))
			if tt.wantBad != (err != nil) || err != nil && !errors.Is(err, sigcheck.ErrBadSignature) {
				t.Errorf("Verify = %v, want bad: %v", err, tt.wantBad)
			}
		})
	}
}

func TestFindNamesTheMissingKeyring(t *testing.T) {
	dir := t.TempDir()
	_, err := sigcheck.Find(dir)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pacman-key --init") {
		t.Errorf("Find of an empty dir: %v", err)
	}
}
