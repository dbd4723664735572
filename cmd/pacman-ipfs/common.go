package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// DefaultStateDir is where the agent and `sync` keep hash results and the last report
// (StateDirectory=pacman-ipfs under systemd).
const DefaultStateDir = "/var/lib/pacman-ipfs"

// common holds the flags of the commands; each registers the groups it uses, so that a flag a command
// would ignore is refused instead.
type common struct {
	pacmanConf string
	api        string
	apiFile    string
	stateDir   string
	verbose    bool
	indexDir   string
	publishKey string
	// IPFS Cluster as the pinning backend (issue: operators).
	cluster     string
	clusterFile string
	replication string
	// The cluster's client, dialled once: the agent asks for its node every pass, and a client (with
	// its own transport) per pass would leave the earlier ones' idle connections open.
	clusterMu     sync.Mutex
	clusterClient *cluster.Client
}

// registerNode registers where the node and the state are: what every command needs.
func (c *common) registerNode(fs *flag.FlagSet) {
	fs.StringVar(&c.api, "api", "", "kubo RPC `address`, a multiaddr or http URL (default: --api-file, then the systemd credential kubo-api, then $IPFS_PATH/api, then /ip4/127.0.0.1/tcp/5001)")
	fs.StringVar(&c.apiFile, "api-file", "", "read the kubo RPC address from this `file`, so that a password in it never shows in a process listing")
	fs.StringVar(&c.stateDir, "state-dir", envOr("PACMAN_IPFS_STATE_DIR", DefaultStateDir), "`dir`ectory for hash results and the last report ($PACMAN_IPFS_STATE_DIR)")
}

// register registers every flag of the commands that seed (sync, agent).
func (c *common) register(fs *flag.FlagSet) {
	c.registerNode(fs)
	fs.StringVar(&c.pacmanConf, "pacman-conf", alpmdb.DefaultConfigPath, "pacman configuration `file`: DBPath, CacheDir(s), repositories and Architecture come from it")
	fs.BoolVar(&c.verbose, "v", false, "log every file seeded and unpinned")
	fs.StringVar(&c.indexDir, "index-dir", "/pacman-ipfs", "the node's MFS `dir`ectory that mirrors what is seeded as <repo>/os/<arch>/<file> (\"\" for none)")
	fs.StringVar(&c.publishKey, "publish-index", "", "publish the index root under this IPNS `key` (off: it tells the world what this machine holds)")
	c.registerCluster(fs)
}

// registerCluster registers the IPFS Cluster flags: with --cluster, pins go to the cluster and adds to
// the local node, which must be one of the cluster's IPFS peers.
func (c *common) registerCluster(fs *flag.FlagSet) {
	fs.StringVar(&c.cluster, "cluster", "", "pin through this IPFS Cluster REST API `url` (http://host:9094) instead of the node's own pins; the node must be one of the cluster's IPFS peers")
	fs.StringVar(&c.clusterFile, "cluster-file", "", "read the cluster REST API URL from this `file`, so that a password in it never shows in a process listing")
	fs.StringVar(&c.replication, "replication", "", "the cluster pins' replication factor, `MIN[,MAX]` (default: the cluster's own; -1: every peer)")
}

// credentialAPI is the name of the systemd credential (LoadCredential=kubo-api:FILE) holding the kubo
// RPC address, read from $CREDENTIALS_DIRECTORY.
const credentialAPI = "kubo-api"

// apiAddr is the kubo RPC address: --api, else the first line of --api-file, else the systemd credential
// kubo-api when it is there and not empty, else $IPFS_PATH/api or kubo's default. Errors name the file,
// never what it holds.
func (c *common) apiAddr() (string, error) {
	a, err := secretSetting(c.api, "--api-file", c.apiFile, credentialAPI)
	if err != nil || a != "" {
		return a, err
	}
	return kubo.ResolveAPI(""), nil
}

// credentialCluster is the systemd credential holding the cluster REST API URL.
const credentialCluster = "cluster-api"

// clusterURL is the cluster REST API: --cluster, else the first line of --cluster-file, else the systemd
// credential cluster-api; "" for none.
func (c *common) clusterURL() (string, error) {
	return secretSetting(c.cluster, "--cluster-file", c.clusterFile, credentialCluster)
}

// secretSetting is a setting that may hold a password: the flag's value, else the first line of the
// file flag's file, else the systemd credential of that name when it is there and not empty; "" for
// none. Errors name the file, never what it holds.
func secretSetting(value, fileFlag, file, credential string) (string, error) {
	if value != "" {
		return value, nil
	}
	if file != "" {
		v, err := firstLine(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileFlag, err)
		}
		if v == "" {
			return "", fmt.Errorf("%s %s: empty", fileFlag, file)
		}
		return v, nil
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if v, err := firstLine(filepath.Join(dir, credential)); err == nil && v != "" {
			return v, nil
		}
	}
	return "", nil
}

// parseReplication reads MIN[,MAX]; "" is the cluster's default (0, 0).
func parseReplication(s string) (lo, hi int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	bad := fmt.Errorf("--replication %q: want MIN[,MAX], numbers of peers, or -1 for every peer", s)
	a, b, two := strings.Cut(s, ",")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil {
		return 0, 0, bad
	}
	hi = lo
	if two {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
			return 0, 0, bad
		}
	}
	switch {
	case lo < -1 || hi < -1 || lo == 0 || hi == 0 || (lo == -1) != (hi == -1):
		return 0, 0, bad
	case lo > hi:
		return 0, 0, fmt.Errorf("--replication %q: MIN is more than MAX", s)
	}
	return lo, hi, nil
}

// checkCluster refuses the cluster flags that cannot work, before anything is dialled.
func (c *common) checkCluster() error {
	u, err := c.clusterURL()
	if err != nil {
		return err
	}
	if u == "" && c.replication != "" {
		return fmt.Errorf("--replication %s: a replication factor needs --cluster (or --cluster-file, or the credential %s)", c.replication, credentialCluster)
	}
	_, _, err = parseReplication(c.replication)
	return err
}

// pinningNode is where the seeder pins: the local node itself, or, with --cluster, the cluster, the
// local node still taking the adds.
func (c *common) pinningNode(ctx context.Context, k *kubo.Client) (node.Node, error) {
	u, err := c.clusterURL()
	if err != nil {
		return nil, err
	}
	if u == "" {
		return k, nil
	}
	lo, hi, err := parseReplication(c.replication)
	if err != nil {
		return nil, err
	}
	cl, err := c.clusterOnce(ctx, u)
	if err != nil {
		return nil, err
	}
	return cluster.NewNode(ctx, k, cl, lo, hi)
}

// clusterOnce returns the cluster's client, dialling it the first time it answers.
func (c *common) clusterOnce(ctx context.Context, u string) (*cluster.Client, error) {
	c.clusterMu.Lock()
	defer c.clusterMu.Unlock()
	if c.clusterClient != nil {
		return c.clusterClient, nil
	}
	cl, err := cluster.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	c.clusterClient = cl
	return cl, nil
}

// firstLine returns the first non-empty line of a small file, trimmed.
func firstLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if l := strings.TrimSpace(line); l != "" {
			return l, nil
		}
	}
	return "", nil
}

// seederOptions are the seeder's options from the flags and pacman's configuration.
func (c *common) seederOptions(cfg *alpmdb.Config, n node.Node, log *slog.Logger) reconcile.Options {
	opts := reconcile.Options{
		CacheDirs:     cfg.CacheDirs,
		StateDir:      c.stateDir,
		Node:          n,
		Log:           log,
		IndexDir:      c.indexDir,
		Architectures: cfg.Architectures,
		PublishKey:    c.publishKey,
	}
	opts.Signatures = pacmanKeyring(cfg, log)
	return opts
}

// pacmanKeyring returns what checks the signatures the sync dbs do not carry (pacman 7's repo-add)
// against pacman's keyring, looked up each time: nil while there is none (before pacman-key --init).
func pacmanKeyring(cfg *alpmdb.Config, log *slog.Logger) func() sigcheck.Verifier {
	return func() sigcheck.Verifier {
		kr, err := sigcheck.Find(cfg.GPGDir)
		if err != nil {
			log.Info("signatures the sync dbs do not carry are not used", "err", err)
			return nil
		}
		return kr
	}
}

// parse parses args into a new flag set; -h prints usage and succeeds.
func parse(name, synopsis string, args []string, register func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: pacman-ipfs %s [flags]\n\n%s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	register(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitError(0)
		}
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pacman-ipfs %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitError(2)
	}
	return nil
}

// logger logs at level, or everything with -v (every file seeded and unpinned is a debug line).
func (c *common) logger(level slog.Level) *slog.Logger {
	if c.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// terminal returns w if it is a terminal, else nil: progress lines are for people, not for the journal.
func terminal(f *os.File) io.Writer {
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	return f
}
