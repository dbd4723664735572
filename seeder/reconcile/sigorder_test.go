package reconcile_test

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// A signature the db does not carry may land in the cache before its package. Being refused then
// ("its package is not in the cache") must not stick to the signature: once the package is there, the
// next pass checks it again (real gpg keys, real gpgv) and seeds it.
func TestSignatureBeforeItsPackage(t *testing.T) {
	signer := alpmtest.NewSigner(t)
	gpgDir := filepath.Join(t.TempDir(), "gnupg")
	signer.Trust(t, gpgDir)
	kr, err := sigcheck.Find(gpgDir)
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(t.TempDir(), "p-1-1-x86_64.pkg.tar")
	if err := os.WriteFile(pkg, []byte(strings.Repeat("package bytes ", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	signer.Sign(t, pkg)
	data, _ := os.ReadFile(pkg)
	sig, _ := os.ReadFile(pkg + ".sig")

	c := newCache(t)
	c.put(t, "p-1-1-x86_64.pkg.tar.sig", sig, false) // the db has the package, without %PGPSIG%
	c.entries = append(c.entries, alpmdb.Entry{Repo: "core", Name: "p", FileName: "p-1-1-x86_64.pkg.tar",
		Size: int64(len(data)), SHA256: sha256.Sum256(data)})
	ix := c.index()
	node := memnode.New()
	s := reconcile.New(reconcile.Options{CacheDirs: []string{c.dir}, StateDir: t.TempDir(), Node: node,
		Signatures: func() sigcheck.Verifier { return kr }})

	rep := sync(t, s, ix)
	if len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Reason, "package is not in the cache") || len(pinned(t, node)) != 0 {
		t.Fatalf("without its package: refused %v, pins %v", rep.Refused, pinned(t, node))
	}
	c.put(t, "p-1-1-x86_64.pkg.tar", data, false)
	rep = sync(t, s, ix)
	if len(rep.Refused) != 0 || len(pinned(t, node)) != 2 {
		t.Errorf("with its package: refused %v, pins %v; want the package and its signature", rep.Refused, pinned(t, node))
	}
}
