package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// pool -> / would have listed the machine's root as packages of the tree: it is refused, naming it.
func TestPoolLinkIsRefused(t *testing.T) {
	root := t.TempDir()
	if dirs, err := poolDirs(root); err != nil || len(dirs) != 0 {
		t.Fatalf("no pool: %v, %v", dirs, err)
	}
	if err := os.Symlink("/", filepath.Join(root, "pool")); err != nil {
		t.Fatal(err)
	}
	if dirs, err := poolDirs(root); !errors.Is(err, alpmdb.ErrLink) || len(dirs) != 0 {
		t.Errorf("pool -> /: %v, %v; want ErrLink and nothing listed", dirs, err)
	}
}
