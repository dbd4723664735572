package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// Packages signed with a real key, pacman with SigLevel = Required on both machines: pacman fetches
// <pkg>.sig next to every package. A seeds its cache (the .sig files included: compared with the db's
// %PGPSIG%, or, where the db carries none as pacman 7's repo-add writes it, checked with gpgv against
// pacman's keyring), and B installs through its endpoint with the packages and their signatures coming
// from A (the signatures from the db where it carries them). Runs with
// pacman 6.0 on the host and pacman 7 in the trixie root (make test-pacman7).
func TestSignaturesRequiredThroughTheEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman, gpg and two kubo nodes")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar", "gpg", "gpgv")
	for _, tt := range []struct {
		name     string
		noDBSigs bool
	}{
		{"db carries PGPSIG", false},
		{"db without PGPSIG", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			signer := alpmtest.NewSigner(t)
			small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
			large := alpmtest.Pkg{Name: "large", Size: 3 << 20, Ext: ".pkg.tar"}
			other := alpmtest.Pkg{Name: "other", Size: 100 << 10}
			repo := alpmtest.MakeRepo(t, "core")
			repo.Signer, repo.NoDBSigs = signer, tt.noDBSigs
			repo.Add(t, small, large, other)
			if e := repo.Entries(t); (e[0].PGPSig == "") != tt.noDBSigs {
				t.Fatalf("the db's PGPSIG: %q", e[0].PGPSig)
			}
			m := startMirror(t, repo)
			mirrorTemplate := m.url + "/$repo/os/$arch"

			a := alpmtest.NewSandbox(t, repo)
			a.Servers = map[string][]string{"core": {mirrorTemplate}}
			a.SigLevel = "Required DatabaseOptional"
			signer.Trust(t, a.GPGDir)
			a.WriteConf(t)
			a.Pacman(t, "-Syw", "small", "large", "other")
			for _, p := range []alpmtest.Pkg{small, large, other} {
				if _, err := os.Stat(filepath.Join(a.CacheDir, p.FileName()+".sig")); err != nil {
					t.Fatalf("pacman -Sw kept no signature: %v", err)
				}
			}
			// other's signature, replaced by small's: a valid signature, but not over other.
			sig, err := os.ReadFile(filepath.Join(a.CacheDir, small.FileName()+".sig"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(a.CacheDir, other.FileName()+".sig"), sig, 0o644); err != nil {
				t.Fatal(err)
			}

			nodeA := kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(a.Root, "var", "cache", "pacman-ipfs")})
			flagsA := []string{"--pacman-conf", a.Conf, "--api", nodeA.APIAddr, "--state-dir", t.TempDir()}
			if r := cli(t, append([]string{"sync"}, flagsA...)...); r.code != 0 {
				t.Errorf("sync on A exited %d: %s", r.code, r.stderr)
			}
			var st status
			r := cli(t, append([]string{"status", "--json", "--socket", filepath.Join(t.TempDir(), "none")}, flagsA[2:]...)...)
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("status: %v\n%s", err, r.stdout)
			}
			// Seeded: three packages and the two good signatures; refused: other's borrowed one.
			if st.Seeded.Files != 5 {
				t.Errorf("A seeds %d files, want 5 (3 packages, 2 signatures); refused %v", st.Seeded.Files, st.Refused)
			}
			i := slices.IndexFunc(st.Refused, func(n reconcile.FileNote) bool { return strings.HasSuffix(n.Path, other.FileName()+".sig") })
			switch {
			case i < 0:
				t.Errorf("other's borrowed signature was not refused: %v", st.Refused)
			case tt.noDBSigs && !strings.Contains(st.Refused[i].Reason, "not a valid signature"),
				!tt.noDBSigs && !strings.Contains(st.Refused[i].Reason, "mismatch"):
				t.Errorf("other's borrowed signature refused for %q", st.Refused[i].Reason)
			}
			m.mu.Lock()
			m.log = nil
			m.mu.Unlock()

			b, _, _, _ := downloader(t, repo, nodeA, mirrorTemplate, st.Index, "--quiet", "200ms", "--hedge", testHedge)
			b.SigLevel = "Required DatabaseOptional"
			signer.Trust(t, b.GPGDir)
			b.WriteConf(t)
			b.Pacman(t, "-Sy")
			b.Pacman(t, "-S", "small", "large")
			var pkgs, sigs []string
			for _, f := range m.packageRequests() {
				if strings.HasSuffix(f, ".sig") {
					sigs = append(sigs, f)
				} else {
					pkgs = append(pkgs, f)
				}
			}
			if len(pkgs) != 0 {
				t.Errorf("package requests reached the mirror: %v", pkgs)
			}
			// With the db's PGPSIG the endpoint answers from the db; without, from A, once B's keyring
			// found the signature valid over the package.
			if len(sigs) != 0 {
				t.Errorf("signature requests reached the mirror: %v", sigs)
			}
			for _, p := range []alpmtest.Pkg{small, large} {
				if _, err := os.Stat(b.Path(p.PayloadPath())); err != nil {
					t.Errorf("%s not installed on B: %v", p.Name, err)
				}
			}
		})
	}
}
