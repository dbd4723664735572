package memnode_test

import (
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

func TestConformance(t *testing.T) {
	nodetest.Run(t, func(t *testing.T) node.Node { return memnode.New() })
}
