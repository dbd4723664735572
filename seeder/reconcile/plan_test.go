package reconcile

import (
	"crypto/sha256"
	"encoding/base64"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"io/fs"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

func TestClassify(t *testing.T) {
	pkg := []byte("package bytes")
	sig := []byte("signature bytes")
	sum := sha256.Sum256(pkg)
	ix := alpmdb.NewIndex([]alpmdb.Entry{
		{Repo: "core", Name: "a", FileName: "a-1-1-x86_64.pkg.tar.zst", Size: int64(len(pkg)), SHA256: sum, PGPSig: base64.StdEncoding.EncodeToString(sig)},
		{Repo: "extra", Name: "b", FileName: "b-1-1-x86_64.pkg.tar.zst", Size: int64(len(pkg)), SHA256: sum},
	})
	st := func(size int, mode fs.FileMode) fileStat {
		return fileStat{Dev: 1, Ino: 2, Size: int64(size), Mtime: 3, Ctime: 4, Mode: mode}
	}
	hashed := func(s [32]byte, repo string) *record {
		return &record{Dev: 1, Ino: 2, Size: int64(len(pkg)), Mtime: 3, Ctime: 4, Hashed: true, SHA256: s, Repo: repo}
	}
	tests := []struct {
		name     string
		file     string
		stat     fileStat
		rec      *record
		want     verdictKind
		repo     string
		reasonIs string
	}{
		{name: "symlink", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), fs.ModeSymlink), want: refused, reasonIs: "symlink"},
		{name: "fifo", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(0, fs.ModeNamedPipe), want: refused, reasonIs: "fifo"},
		{name: "device", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(0, fs.ModeDevice|fs.ModeCharDevice), want: refused, reasonIs: "character device"},
		{name: "unknown name", file: "secret.txt", stat: st(10, 0), want: refused, reasonIs: reasonNotInDB},
		{name: "size mismatch reads nothing", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg)+1, 0), want: refused, reasonIs: reasonSize},
		{name: "matching name and size must be hashed", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), want: needHash, repo: "core"},
		{name: "hash cache vouches", file: "b-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, ""), want: verified, repo: "extra"},
		{name: "hash cache says tampered", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed([32]byte{9}, ""), want: refused, reasonIs: reasonChecksum},
		{name: "stale hash record is ignored", file: "a-1-1-x86_64.pkg.tar.zst", stat: fileStat{Dev: 1, Ino: 2, Size: int64(len(pkg)), Mtime: 99, Ctime: 4}, rec: hashed([32]byte{9}, ""), want: needHash, repo: "core"},
		{name: "verified earlier, dropped by the db", file: "old-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, "core"), want: verified, repo: "core"},
		{name: "dropped by the db, never verified", file: "old-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, ""), want: refused, reasonIs: reasonNotInDB},
		{name: "signature", file: "a-1-1-x86_64.pkg.tar.zst.sig", stat: fileStat{Dev: 1, Ino: 2, Size: int64(len(sig))}, want: needHash, repo: "core"},
		{name: "signature of wrong size", file: "a-1-1-x86_64.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: reasonSize},
		{name: "signature the db does not carry", file: "b-1-1-x86_64.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: reasonNoSig},
		{name: "signature of unknown package", file: "z.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: reasonNotInDB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := classify(candidate{Dir: "/c", Name: tt.file, Path: "/c/" + tt.file, Stat: tt.stat}, ix, tt.rec, false)
			if v.Kind != tt.want || v.Repo != tt.repo || !strings.Contains(v.Reason, tt.reasonIs) {
				t.Errorf("classify = %+v, want kind %d repo %q reason containing %q", v, tt.want, tt.repo, tt.reasonIs)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	c := func(b byte) cid.Cid { return node.RawCID([32]byte{b}) }
	mk := func(path string, id cid.Cid) seed { return seed{Path: path, Name: path, Repo: "core", CID: id} }
	tests := []struct {
		name       string
		seeds      []seed
		pins       map[cid.Cid]string
		wantAdd    []string
		wantSeeded []string
		wantUnpin  []cid.Cid
	}{
		{name: "nothing", wantUnpin: nil},
		{name: "new file is added", seeds: []seed{mk("a", c(1))}, wantAdd: []string{"a"}},
		{name: "pinned file is kept", seeds: []seed{mk("a", c(1))}, pins: map[cid.Cid]string{c(1): "p:a"}, wantSeeded: []string{"a"}},
		{name: "unknown CID is added", seeds: []seed{mk("big", cid.Undef)}, pins: map[cid.Cid]string{c(2): "p:big"}, wantAdd: []string{"big"}, wantUnpin: []cid.Cid{c(2)}},
		{name: "same bytes twice is one add", seeds: []seed{mk("a", c(1)), mk("b", c(1))}, wantAdd: []string{"a"}, wantSeeded: []string{"b"}},
		{name: "gone file is unpinned", seeds: []seed{mk("a", c(1))}, pins: map[cid.Cid]string{c(1): "p:a", c(3): "p:gone"}, wantSeeded: []string{"a"}, wantUnpin: []cid.Cid{c(3)}},
	}
	paths := func(ss []seed) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Path)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := makePlan(tt.seeds, tt.pins)
			if got := paths(p.Add); strings.Join(got, ",") != strings.Join(tt.wantAdd, ",") {
				t.Errorf("Add = %v, want %v", got, tt.wantAdd)
			}
			if got := paths(p.Seeded); strings.Join(got, ",") != strings.Join(tt.wantSeeded, ",") {
				t.Errorf("Seeded = %v, want %v", got, tt.wantSeeded)
			}
			keep := map[cid.Cid]bool{}
			for _, s := range append(p.Add, p.Seeded...) {
				if s.CID.Defined() {
					keep[s.CID] = true
				}
			}
			got := unpins(tt.pins, keep)
			if len(got) != len(tt.wantUnpin) {
				t.Fatalf("unpins = %v, want %v", got, tt.wantUnpin)
			}
			for i := range got {
				if !got[i].Equals(tt.wantUnpin[i]) {
					t.Errorf("unpins = %v, want %v", got, tt.wantUnpin)
				}
			}
		})
	}
}
