package reconcile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// With a root, a directory is scanned only when it is reached from the root through real directories:
// one swapped for a link after the tree was checked (into the tree or out of it) is refused, and nothing
// it points to is listed. Without a root (pacman's CacheDir, which may be a link) it is followed.
func TestScanDirStaysBeneathTheRoot(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	for _, d := range []string{"pool/packages", "core/os/x86_64", "inside"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "pool/packages/a-1-1-any.pkg.tar.zst"), filepath.Join(outside, "shadow"),
		filepath.Join(root, "inside/b-1-1-any.pkg.tar.zst")} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// pool/elsewhere: a directory of pool swapped for a link out of the tree; core/os/x86_64/sub, for one
	// into it.
	if err := os.Symlink(outside, filepath.Join(root, "pool/elsewhere")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../inside", filepath.Join(root, "core/os/x86_64/sub")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		root, dir string
		want      int   // entries
		err       error // nil: none
	}{
		{root, filepath.Join(root, "pool/packages"), 1, nil},
		{root, filepath.Join(root, "pool/elsewhere"), 0, ErrOutside},
		{root, filepath.Join(root, "core/os/x86_64/sub"), 0, ErrOutside},
		{root, outside, 0, ErrOutside},
		{root, filepath.Join(root, "pool/missing"), 0, nil},
		{"", filepath.Join(root, "pool/elsewhere"), 1, nil},
	} {
		got, err := scanDir(tc.root, tc.dir, nil)
		if len(got) != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("scanDir(%q, %q) = %d entries, %v; want %d, %v", tc.root, tc.dir, len(got), err, tc.want, tc.err)
		}
	}
}
