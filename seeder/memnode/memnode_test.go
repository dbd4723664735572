package memnode_test

import (
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/seeder"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/nodetest"
)

func TestConformance(t *testing.T) {
	nodetest.Run(t, func(t *testing.T) seeder.Node { return memnode.New() })
}
