package kubo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bsrv "github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipfs/kubo/client/rpc"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/mod/semver"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

var (
	_ node.Node             = (*Client)(nil)
	_ node.Referencer       = (*Client)(nil)
	_ node.GarbageCollector = (*Client)(nil)
)

// DefaultAPI is kubo's default RPC address.
const DefaultAPI = "/ip4/127.0.0.1/tcp/5001"

// ErrUnreachable means no kubo RPC API answered at the address.
var ErrUnreachable = errors.New("kubo RPC API not reachable")

// ResolveAPI picks the node's address: the --api flag, else the api file of $IPFS_PATH (~/.ipfs when
// unset) that a running daemon writes, else kubo's default.
func ResolveAPI(flag string) string {
	if flag != "" {
		return flag
	}
	repo := os.Getenv("IPFS_PATH")
	if repo == "" {
		if home, err := os.UserHomeDir(); err == nil {
			repo = filepath.Join(home, ".ipfs")
		}
	}
	if repo != "" {
		if b, err := os.ReadFile(filepath.Join(repo, "api")); err == nil {
			if a := strings.TrimSpace(string(b)); a != "" {
				return a
			}
		}
	}
	return DefaultAPI
}

// Redact is node.Redact: an address with its credentials replaced.
func Redact(addr string) string { return node.Redact(addr) }

// Client is a kubo node reached over its RPC API.
type Client struct {
	api  *rpc.HttpApi
	addr string // redacted

	local      bool // the API is on this machine, so the node can read our paths
	infoLoaded bool
	info       Info
}

// Info describes the node.
type Info struct {
	ID        string
	Version   string
	RepoPath  string
	Filestore bool
}

// Dial connects to the kubo RPC API at addr (a multiaddr such as /ip4/127.0.0.1/tcp/5001 or
// /unix/run/ipfs.sock, or an http(s) URL, optionally with user:password for API.Authorizations) and
// checks within a few seconds that it answers.
func Dial(ctx context.Context, addr string) (*Client, error) {
	c := &Client{addr: Redact(addr)}
	dialer := &net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // the node is local or named exactly: never through a proxy
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: 0, // adds of large files answer late
		MaxIdleConnsPerHost:   4,
	}
	hc := &http.Client{Transport: tr}
	var err error
	if strings.HasPrefix(addr, "/") {
		err = c.dialMultiaddr(addr, dialer, tr, hc)
	} else {
		err = c.dialURL(addr, hc)
	}
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Info(pctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w at %s: %v\n  start kubo with `ipfs daemon` (or `systemctl start ipfs`), or point --api at a running node", ErrUnreachable, c.addr, err)
	}
	return c, nil
}

// dialMultiaddr sets the client up for a multiaddr: TCP, or a unix socket through tr.
func (c *Client) dialMultiaddr(addr string, dialer *net.Dialer, tr *http.Transport, hc *http.Client) error {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return fmt.Errorf("kubo API address %q: %w", addr, err)
	}
	network, host, err := manet.DialArgs(m)
	if err != nil {
		return fmt.Errorf("kubo API address %q: %w", addr, err)
	}
	if network == "unix" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", host)
		}
		c.local = true
		c.api, err = rpc.NewURLApiWithClient("http://unix", hc)
	} else {
		c.local = manet.IsIPLoopback(m)
		c.api, err = rpc.NewApiWithClient(m, hc)
	}
	if err != nil {
		return fmt.Errorf("kubo API %s: %w", c.addr, err)
	}
	return nil
}

// dialURL sets the client up for an http(s) URL, its user:password sent as basic authorization and
// never shown.
func (c *Client) dialURL(addr string, hc *http.Client) error {
	rest, user, pw, _ := node.SplitUserinfo(addr)
	scheme, _, _ := strings.Cut(addr, "://")
	u, err := url.Parse(scheme + "://" + rest)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("kubo API address %q: want a multiaddr or an http(s) URL", Redact(addr))
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() || u.Hostname() == "localhost" {
		c.local = true
	}
	if c.api, err = rpc.NewURLApiWithClient(strings.TrimSuffix(u.String(), "/"), hc); err != nil {
		return fmt.Errorf("kubo API %s: %w", c.addr, err)
	}
	if user != "" || pw != "" {
		c.api.Headers.Set("Authorization", "Basic "+basicAuth(user, pw))
	}
	return nil
}

// Addr is the node's address with credentials removed.
func (c *Client) Addr() string { return c.addr }

// Info asks the node who it is, where its repo is and whether its filestore is on.
func (c *Client) Info(ctx context.Context) (Info, error) {
	if c.infoLoaded {
		return c.info, nil
	}
	var id struct{ ID, AgentVersion string }
	if err := c.api.Request("id").Exec(ctx, &id); err != nil {
		return Info{}, err
	}
	repoPath, err := c.repoPath(ctx)
	if err != nil {
		return Info{}, err
	}
	var fs struct{ Value any }
	if err := c.api.Request("config", "Experimental.FilestoreEnabled").Exec(ctx, &fs); err != nil {
		return Info{}, fmt.Errorf("read Experimental.FilestoreEnabled: %w", err)
	}
	on, _ := fs.Value.(bool)
	c.info = Info{ID: id.ID, Version: id.AgentVersion, RepoPath: repoPath, Filestore: on}
	c.infoLoaded = true
	return c.info, nil
}

// The networks a node can be on (Network).
const (
	// NetworkLAN: no bootstrap peers, no autoconf, no delegated routers: the node meets its mDNS
	// neighbours only, and what it provides or publishes stays on the LAN.
	NetworkLAN = "lan"
	// NetworkPublic: the node joins the public IPFS network: what it seeds is announced to the world.
	NetworkPublic = "public"
)

// Network says which network the node's configuration joins, NetworkLAN or NetworkPublic.
func (c *Client) Network(ctx context.Context) (string, error) {
	get := func(key string) (any, error) {
		var out struct{ Value any }
		err := c.api.Request("config", key).Exec(ctx, &out)
		if err != nil && strings.Contains(err.Error(), "not found") {
			return nil, nil // an older kubo without the key
		}
		return out.Value, err
	}
	var vals [3]any
	for i, key := range []string{"Bootstrap", "AutoConf.Enabled", "Routing.DelegatedRouters"} {
		v, err := get(key)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", key, err)
		}
		vals[i] = v
	}
	return networkOf(vals[0], vals[1], vals[2]), nil
}

// networkOf classifies a node's Bootstrap, AutoConf.Enabled and Routing.DelegatedRouters: the LAN only
// when it has no bootstrap peer, autoconf off (it would fetch public ones) and no delegated router.
func networkOf(bootstrap, autoconf, routers any) string {
	empty := func(v any) bool {
		l, ok := v.([]any)
		return v == nil || ok && len(l) == 0
	}
	if on, ok := autoconf.(bool); empty(bootstrap) && empty(routers) && (ok && !on) {
		return NetworkLAN
	}
	return NetworkPublic
}

// repoPath asks where the node's repo is: the daemon's $IPFS_PATH when it was started with one (cheap),
// else `repo stat`, which knows but counts every block to answer.
func (c *Client) repoPath(ctx context.Context) (string, error) {
	var sys struct {
		Environment map[string]any `json:"environment"`
	}
	if err := c.api.Request("diag/sys").Exec(ctx, &sys); err == nil {
		if p, _ := sys.Environment["IPFS_PATH"].(string); p != "" {
			return p, nil
		}
	}
	var rs struct{ RepoPath string }
	if err := c.api.Request("repo/stat").Exec(ctx, &rs); err != nil {
		return "", fmt.Errorf("repo stat: %w", err)
	}
	return rs.RepoPath, nil
}

// CanReference implements node.Referencer. kubo's filestore only takes files below the parent of its
// repo directory, and only reads them if it runs on this machine.
func (c *Client) CanReference(ctx context.Context, dir string) (bool, string) {
	if _, err := c.Info(ctx); err != nil {
		return false, "node info unavailable: " + err.Error()
	}
	switch {
	case !c.local:
		return false, "the node is not on this machine; files are copied into it"
	case !c.info.Filestore:
		return false, "kubo's filestore is off (Experimental.FilestoreEnabled); files are copied into the node's repo"
	case c.info.RepoPath == "":
		return false, "the node does not say where its repo is; files are copied"
	}
	root := filepath.Dir(filepath.Clean(c.info.RepoPath))
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err.Error()
	}
	if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return false, fmt.Sprintf("kubo's filestore only references files below %s (the parent of its repo %s); files are copied. For zero copy, put the repo beside the cache, e.g. IPFS_PATH=/var/cache/pacman-ipfs", root, c.info.RepoPath)
	}
	return true, "referenced in place by kubo's filestore (below " + root + ")"
}

// Add implements node.Node with an `add` request carrying every import option.
func (c *Client) Add(ctx context.Context, f node.File) (cid.Cid, error) {
	// With nocopy kubo stores the absolute path sent in the multipart header and reads the file there.
	fnode, err := files.NewReaderPathFile(f.Path, io.NopCloser(f.Content), nil)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", f.Path, err)
	}
	body := files.NewMultiFileReader(files.NewMapDirectory(map[string]files.Node{filepath.Base(f.Path): fnode}), false, false)
	imp := node.Import()
	resp, err := c.api.Request("add").
		Option("cid-version", imp.CIDVersion).
		Option("raw-leaves", imp.RawLeaves).
		Option("hash", imp.Hash).
		Option("chunker", imp.Chunker).
		Option("max-file-links", imp.MaxLinks).
		Option("trickle", imp.Trickle).
		Option("inline", false).
		Option("preserve-mode", false).
		Option("preserve-mtime", false).
		Option("wrap-with-directory", false).
		Option("nocopy", f.NoCopy).
		Option("pin", true).
		Option("pin-name", f.PinName).
		Option("progress", false).
		Option("quieter", true).
		Body(body).
		Send(ctx)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", f.Path, err)
	}
	if resp.Error != nil {
		return cid.Undef, addError(f.Path, resp.Error)
	}
	defer resp.Close()
	return lastCID(f.Path, resp.Output)
}

// lastCID reads an add's answer, one JSON object per line, and returns the last CID in it: the file's.
func lastCID(path string, r io.Reader) (cid.Cid, error) {
	var last string
	dec := json.NewDecoder(r)
	for {
		var out struct{ Hash string }
		if err := dec.Decode(&out); err == io.EOF {
			break
		} else if err != nil {
			return cid.Undef, addError(path, err)
		}
		if out.Hash != "" {
			last = out.Hash
		}
	}
	got, err := cid.Decode(last)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: the node answered no CID (%q)", path, last)
	}
	return got, nil
}

// Pins implements node.Node.
func (c *Client) Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error) {
	resp, err := c.api.Request("pin/ls").
		Option("type", "recursive").
		Option("names", true).
		Option("name", prefix). // a substring filter on kubo's side; the prefix is checked below
		Option("stream", true).
		Send(ctx)
	if err != nil {
		return nil, fmt.Errorf("pin ls: %w", err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("pin ls: %w", resp.Error)
	}
	defer resp.Close()
	out := make(map[cid.Cid]string)
	dec := json.NewDecoder(resp.Output)
	for {
		var p struct{ Cid, Name, Type string }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("pin ls: %w", err)
		}
		if !strings.HasPrefix(p.Name, prefix) {
			continue
		}
		k, err := cid.Decode(p.Cid)
		if err != nil {
			return nil, fmt.Errorf("pin ls: bad CID %q: %w", p.Cid, err)
		}
		out[k] = p.Name
	}
	return out, nil
}

// Unpin implements node.Node: it removes the pin, then every block of the DAG that no other pin holds
// (kubo refuses to remove pinned blocks), which for nocopy adds drops the filestore references too.
func (c *Client) Unpin(ctx context.Context, root cid.Cid) error {
	// List the blocks first: once unpinned, a concurrent GC may take the intermediate nodes.
	blocks, err := c.dagBlocks(ctx, root)
	if err != nil {
		return err
	}
	if err := c.api.Request("pin/rm", root.String()).Option("recursive", true).Exec(ctx, nil); err != nil &&
		!strings.Contains(err.Error(), "not pinned") {
		return fmt.Errorf("pin rm %s: %w", root, err)
	}
	args := make([]string, 0, len(blocks))
	for _, b := range blocks {
		args = append(args, b.String())
	}
	resp, err := c.api.Request("block/rm", args...).Option("force", false).Send(ctx)
	if err != nil {
		return fmt.Errorf("block rm %s: %w", root, err)
	}
	if resp.Error != nil {
		// Pinned elsewhere or already gone is what we want; anything else the next pass retries.
		if msg := resp.Error.Error(); !strings.Contains(msg, "pinned") && !strings.Contains(msg, "not found") {
			return fmt.Errorf("block rm %s: %w", root, resp.Error)
		}
		return nil
	}
	return resp.Close() // per-block errors (pinned elsewhere, already gone) are fine
}

// dagBlocks lists root and every block below it. Only dag-pb nodes are read (from the local repo,
// offline): raw leaves have no links, and reading them would read the whole file through the filestore.
func (c *Client) dagBlocks(ctx context.Context, root cid.Cid) ([]cid.Cid, error) {
	out := []cid.Cid{root}
	for i := 0; i < len(out); i++ {
		n := out[i]
		if n.Type() != cid.DagProtobuf {
			continue
		}
		var node struct {
			Links []struct {
				Hash struct {
					Link string `json:"/"`
				}
			}
		}
		err := c.api.Request("dag/get", n.String()).Option("output-codec", "dag-json").Option("offline", true).Exec(ctx, &node)
		if err != nil {
			if strings.Contains(err.Error(), "not found") {
				continue // already gone: nothing below it to drop
			}
			return nil, fmt.Errorf("list blocks of %s: %w", root, err)
		}
		for _, l := range node.Links {
			k, err := cid.Decode(l.Hash.Link)
			if err != nil {
				return nil, fmt.Errorf("list blocks of %s: bad link %q: %w", root, l.Hash.Link, err)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// FileRefs implements node.FileReferencer with `filestore ls`, which reads no file: it lists what kubo's
// filestore references, by block, with the file (absolute) each is read from.
func (c *Client) FileRefs(ctx context.Context) (map[cid.Cid]string, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	if !info.Filestore {
		return nil, nil
	}
	root := filepath.Dir(filepath.Clean(info.RepoPath))
	resp, err := c.api.Request("filestore/ls").Send(ctx)
	if err != nil {
		return nil, fmt.Errorf("filestore ls: %w", err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("filestore ls: %w", resp.Error)
	}
	defer resp.Close()
	out := make(map[cid.Cid]string)
	dec := json.NewDecoder(resp.Output)
	for {
		var ref struct {
			Key struct {
				Link string `json:"/"`
			}
			FilePath string
		}
		if err := dec.Decode(&ref); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("filestore ls: %w", err)
		}
		k, err := cid.Decode(ref.Key.Link)
		if err != nil {
			return nil, fmt.Errorf("filestore ls: bad CID %q: %w", ref.Key.Link, err)
		}
		p := ref.FilePath
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p) // kubo keeps paths relative to the filestore's root
		}
		out[k] = p
	}
	return out, nil
}

// LANPeer is a peer the node is connected to over a private (LAN) address.
type LANPeer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// LANPeers lists the peers the node is connected to over a LAN address: RFC 1918, link-local, IPv6
// unique-local or link-local. These are the neighbours mDNS found, which bitswap asks first.
func (c *Client) LANPeers(ctx context.Context) ([]LANPeer, error) {
	var out struct {
		Peers []struct{ Addr, Peer string }
	}
	if err := c.api.Request("swarm/peers").Exec(ctx, &out); err != nil {
		return nil, fmt.Errorf("swarm peers: %w", err)
	}
	var lan []LANPeer
	seen := map[string]bool{}
	for _, p := range out.Peers {
		m, err := ma.NewMultiaddr(p.Addr)
		if err != nil || seen[p.Peer] {
			continue
		}
		ip, err := manet.ToIP(m)
		if err != nil || !(ip.IsPrivate() || ip.IsLinkLocalUnicast()) {
			continue
		}
		seen[p.Peer] = true
		lan = append(lan, LANPeer{ID: p.Peer, Addr: p.Addr})
	}
	return lan, nil
}

// LANPeerIDs implements lanindex.Node: the IDs of LANPeers.
func (c *Client) LANPeerIDs(ctx context.Context) ([]string, error) {
	peers, err := c.LANPeers(ctx)
	ids := make([]string, 0, len(peers))
	for _, p := range peers {
		ids = append(ids, p.ID)
	}
	return ids, err
}

// Blocks implements node.FileReferencer: root and every block below it, from the local repo.
func (c *Client) Blocks(ctx context.Context, root cid.Cid) ([]cid.Cid, error) {
	return c.dagBlocks(ctx, root)
}

// DropBlocks implements node.FileReferencer: it removes the blocks no pin holds (their filestore
// references with them); pinned or missing ones are left as they are.
func (c *Client) DropBlocks(ctx context.Context, bs []cid.Cid) error {
	if len(bs) == 0 {
		return nil
	}
	args := make([]string, 0, len(bs))
	for _, b := range bs {
		args = append(args, b.String())
	}
	resp, err := c.api.Request("block/rm", args...).Option("force", true).Option("quiet", true).Send(ctx)
	if err != nil {
		return fmt.Errorf("block rm: %w", err)
	}
	if resp.Error != nil {
		if msg := resp.Error.Error(); !strings.Contains(msg, "pinned") && !strings.Contains(msg, "not found") {
			return fmt.Errorf("block rm: %w", resp.Error)
		}
		return nil
	}
	return resp.Close()
}

func basicAuth(user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
}

// Cat streams the file c from the node, which fetches it from its peers as needed.
func (c *Client) Cat(ctx context.Context, k cid.Cid) (io.ReadCloser, error) {
	resp, err := c.api.Request("cat", k.String()).Send(ctx)
	if err != nil {
		return nil, fmt.Errorf("cat %s: %w", k, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("cat %s: %w", k, resp.Error)
	}
	return resp.Output, nil
}

// Resolve resolves an IPFS path (/ipfs/…, /ipns/… or a DNSLink name under /ipns/) to the CID it names.
func (c *Client) Resolve(ctx context.Context, p string) (cid.Cid, error) {
	var out struct{ Path string }
	if err := c.api.Request("resolve", p).Option("recursive", true).Exec(ctx, &out); err != nil {
		return cid.Undef, fmt.Errorf("resolve %s: %w", p, err)
	}
	k, err := cid.Decode(strings.TrimPrefix(out.Path, "/ipfs/"))
	if err != nil {
		return cid.Undef, fmt.Errorf("resolve %s: the node answered %q", p, out.Path)
	}
	return k, nil
}

// List lists the directory at p (an IPFS path), at most max entries (more: an error wrapping
// node.ErrTooMany). It asks for neither types nor sizes, which would fetch a block per entry.
func (c *Client) List(ctx context.Context, p string, max int) ([]node.Link, error) {
	resp, err := c.api.Request("ls", p).Option("resolve-type", false).Option("size", false).Option("stream", true).Send(ctx)
	if err != nil {
		return nil, fmt.Errorf("ls %s: %w", p, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("ls %s: %w", p, resp.Error)
	}
	defer resp.Close()
	var out []node.Link
	dec := json.NewDecoder(resp.Output)
	for {
		var obj struct {
			Objects []struct{ Links []struct{ Name, Hash string } }
		}
		if err := dec.Decode(&obj); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("ls %s: %w", p, err)
		}
		for _, o := range obj.Objects {
			for _, l := range o.Links {
				k, err := cid.Decode(l.Hash)
				if err != nil {
					return nil, fmt.Errorf("ls %s: entry %q: %w", p, l.Name, err)
				}
				if len(out) >= max {
					return out, fmt.Errorf("ls %s: %w: more than %d", p, node.ErrTooMany, max)
				}
				out = append(out, node.Link{Name: l.Name, CID: k})
			}
		}
	}
}

// SetIndex makes the MFS directory dir hold exactly files (paths relative to dir, to CIDs) and returns
// dir's CID. The tree's directory nodes are built here (CIDv1, HAMT-sharded where large, as kubo would),
// sent in one block/put, and swapped in with two MFS operations: a request per file would cost seconds
// on a real cache, and kubo refuses more than 256 unflushed MFS writes anyway. The old tree is never
// listed, so an entry whose blocks are gone cannot stall it.
func (c *Client) SetIndex(ctx context.Context, dir string, files map[string]cid.Cid) (cid.Cid, error) {
	root, blocks, err := buildIndex(ctx, files)
	if err != nil {
		return cid.Undef, fmt.Errorf("index: %w", err)
	}
	var st struct{ Hash string }
	if err := c.api.Request("files/stat", dir).Exec(ctx, &st); err == nil && st.Hash == root.String() {
		return root, nil
	}
	if err := c.putBlocks(ctx, blocks); err != nil {
		return cid.Undef, fmt.Errorf("index: %w", err)
	}
	if err := c.api.Request("files/rm", dir).Option("force", true).Exec(ctx, nil); err != nil && !strings.Contains(err.Error(), "does not exist") {
		return cid.Undef, fmt.Errorf("index: remove the old %s: %w", dir, err)
	}
	if parent := path.Dir(dir); parent != "/" {
		if err := c.api.Request("files/mkdir", parent).Option("parents", true).Exec(ctx, nil); err != nil {
			return cid.Undef, fmt.Errorf("index: mkdir %s: %w", parent, err)
		}
	}
	if err := c.api.Request("files/cp", "/ipfs/"+root.String(), dir).Exec(ctx, nil); err != nil {
		return cid.Undef, fmt.Errorf("index: place %s: %w", dir, err)
	}
	return root, nil
}

// buildIndex builds the UnixFS directories holding files and returns the root and every directory block.
func buildIndex(ctx context.Context, files map[string]cid.Cid) (cid.Cid, []blocks.Block, error) {
	t, err := newIndexTree()
	if err != nil {
		return cid.Undef, nil, err
	}
	if _, err := t.mkdir("."); err != nil {
		return cid.Undef, nil, err
	}
	for p, k := range files {
		d, err := t.mkdir(path.Dir(p))
		if err != nil {
			return cid.Undef, nil, err
		}
		if err := d.AddChild(ctx, path.Base(p), ref{k}); err != nil {
			return cid.Undef, nil, fmt.Errorf("add %s: %w", p, err)
		}
	}
	root, err := t.close(ctx)
	if err != nil {
		return cid.Undef, nil, err
	}
	out, err := t.blocks(ctx, root, files)
	return root, out, err
}

// indexTree is the directories of an index being built, kept in memory.
type indexTree struct {
	ds     ipld.DAGService
	prefix cid.Prefix
	dirs   map[string]uio.Directory
}

func newIndexTree() (*indexTree, error) {
	prefix, err := merkledag.PrefixForCidVersion(1)
	if err != nil {
		return nil, err
	}
	return &indexTree{ds: memDAG(), prefix: prefix, dirs: map[string]uio.Directory{}}, nil
}

// mkdir returns the directory at p ("." is the root), making it and its parents on first sight.
func (t *indexTree) mkdir(p string) (uio.Directory, error) {
	if d, ok := t.dirs[p]; ok {
		return d, nil
	}
	d, err := uio.NewDirectory(t.ds, uio.WithCidBuilder(&t.prefix))
	if err != nil {
		return nil, err
	}
	t.dirs[p] = d
	if p != "." {
		if _, err := t.mkdir(path.Dir(p)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// close stores every directory, deepest first so that each is complete before its parent links it,
// and returns the root's CID.
func (t *indexTree) close(ctx context.Context) (cid.Cid, error) {
	paths := slices.Collect(maps.Keys(t.dirs))
	depth := func(p string) int {
		if p == "." {
			return -1 // the root, last
		}
		return strings.Count(p, "/")
	}
	slices.SortFunc(paths, func(a, b string) int { return depth(b) - depth(a) })
	var root cid.Cid
	for _, p := range paths {
		nd, err := t.dirs[p].GetNode()
		if err != nil {
			return cid.Undef, err
		}
		if err := t.ds.Add(ctx, nd); err != nil {
			return cid.Undef, err
		}
		if p == "." {
			root = nd.Cid()
			continue
		}
		if err := t.dirs[path.Dir(p)].AddChild(ctx, path.Base(p), nd); err != nil {
			return cid.Undef, err
		}
	}
	return root, nil
}

// blocks lists every node the tree is made of (HAMT shards included). The files are not ours to send:
// the HAMT code stores the placeholders it was given, which hold no data.
func (t *indexTree) blocks(ctx context.Context, root cid.Cid, files map[string]cid.Cid) ([]blocks.Block, error) {
	isFile := make(map[cid.Cid]bool, len(files))
	for _, k := range files {
		isFile[k] = true
	}
	var out []blocks.Block
	err := merkledag.Walk(ctx, func(ctx context.Context, k cid.Cid) ([]*ipld.Link, error) {
		if isFile[k] {
			return nil, nil
		}
		nd, err := t.ds.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, nd)
		return nd.Links(), nil
	}, root, cid.NewSet().Visit)
	return out, err
}

// putBlocks stores blocks in the node in one request and checks the CIDs it computes.
func (c *Client) putBlocks(ctx context.Context, bs []blocks.Block) error {
	entries := make([]files.DirEntry, 0, len(bs))
	for _, b := range bs {
		entries = append(entries, files.FileEntry(b.Cid().String(), files.NewBytesFile(b.RawData())))
	}
	resp, err := c.api.Request("block/put").Option("cid-codec", "dag-pb").Option("mhtype", "sha2-256").
		Body(files.NewMultiFileReader(files.NewSliceDirectory(entries), false, false)).Send(ctx)
	if err != nil {
		return fmt.Errorf("block put: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("block put: %w", resp.Error)
	}
	defer resp.Close()
	dec := json.NewDecoder(resp.Output)
	for i := 0; ; i++ {
		var out struct{ Key string }
		if err := dec.Decode(&out); err == io.EOF {
			if i != len(bs) {
				return fmt.Errorf("block put: %d of %d blocks stored", i, len(bs))
			}
			return nil
		} else if err != nil {
			return fmt.Errorf("block put: %w", err)
		}
		if i >= len(bs) || out.Key != bs[i].Cid().String() {
			return fmt.Errorf("block put: the node stored %s, expected %s", out.Key, bs[min(i, len(bs)-1)].Cid())
		}
	}
}

// ref is a node known only by its CID: all a directory needs to link to it.
type ref struct{ c cid.Cid }

func (r ref) RawData() []byte                         { return nil }
func (r ref) Cid() cid.Cid                            { return r.c }
func (r ref) String() string                          { return r.c.String() }
func (r ref) Loggable() map[string]any                { return map[string]any{"cid": r.c} }
func (r ref) Resolve([]string) (any, []string, error) { return nil, nil, errors.New("ref: no data") }
func (r ref) Tree(string, int) []string               { return nil }
func (r ref) ResolveLink([]string) (*ipld.Link, []string, error) {
	return nil, nil, errors.New("ref: no data")
}
func (r ref) Copy() ipld.Node               { return r }
func (r ref) Links() []*ipld.Link           { return nil }
func (r ref) Stat() (*ipld.NodeStat, error) { return &ipld.NodeStat{}, nil }
func (r ref) Size() (uint64, error)         { return 0, nil }

// PublishName points the IPNS name of key at root. allow-offline lets it work before any peer is known.
func (c *Client) PublishName(ctx context.Context, key string, root cid.Cid) (string, error) {
	var out struct{ Name string }
	if err := c.api.Request("name/publish", "/ipfs/"+root.String()).Option("key", key).Option("allow-offline", true).Exec(ctx, &out); err != nil {
		return "", fmt.Errorf("publish the index under key %q: %w", key, err)
	}
	return "/ipns/" + out.Name, nil
}

// addError names the file and marks a full disk, which kubo reports only in words.
func addError(path string, err error) error {
	if strings.Contains(err.Error(), "no space left on device") {
		return fmt.Errorf("add %s: %w: %w", path, node.ErrNoSpace, err)
	}
	return fmt.Errorf("add %s: %w", path, err)
}

// CollectGarbage runs kubo's repo gc: it drops every block no pin (and not MFS) holds.
func (c *Client) CollectGarbage(ctx context.Context) error {
	resp, err := c.api.Request("repo/gc").Option("stream-errors", true).Option("quiet", true).Send(ctx)
	if err != nil {
		return fmt.Errorf("repo gc: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("repo gc: %w", resp.Error)
	}
	return resp.Close()
}

// P2P stream mounting (Experimental.Libp2pStreamMounting): how the agents of a LAN reach each other
// without opening a port of their own. The node carries the streams over its existing, authenticated
// connection to the peer.

// P2PListen makes the node hand streams of protocol proto from its peers to target (a loopback
// address), after closing any listener or forward a previous agent left for that protocol.
func (c *Client) P2PListen(ctx context.Context, proto, target string) error {
	c.P2PClose(ctx, proto)
	// report-peer-id: the node writes "<peer ID>\n" to target before the stream's bytes, so the agent
	// knows which neighbour asks (and gives each a bounded share).
	if err := c.api.Request("p2p/listen", proto, target).Option("report-peer-id", true).Exec(ctx, nil); err != nil {
		return fmt.Errorf("p2p listen %s: %w", proto, err)
	}
	return nil
}

// P2PClose closes every listener and forward of protocol proto.
func (c *Client) P2PClose(ctx context.Context, proto string) error {
	if err := c.api.Request("p2p/close").Option("protocol", proto).Exec(ctx, nil); err != nil {
		return fmt.Errorf("p2p close %s: %w", proto, err)
	}
	return nil
}

// P2PForward opens a loopback port that carries connections to peer's listener for proto, and returns
// its address (host:port). A forward to that peer made earlier is reused.
func (c *Client) P2PForward(ctx context.Context, proto, peer string) (string, error) {
	if a, ok, err := c.p2pForwardTo(ctx, proto, peer); err != nil || ok {
		return a, err
	}
	if err := c.api.Request("p2p/forward", proto, "/ip4/127.0.0.1/tcp/0", "/p2p/"+peer).Exec(ctx, nil); err != nil {
		return "", fmt.Errorf("p2p forward %s to %s: %w", proto, peer, err)
	}
	a, ok, err := c.p2pForwardTo(ctx, proto, peer)
	if err == nil && !ok {
		err = fmt.Errorf("p2p forward %s to %s: not listed after it was made", proto, peer)
	}
	return a, err
}

type p2pListener struct{ Protocol, ListenAddress, TargetAddress string }

func (c *Client) p2pLs(ctx context.Context) ([]p2pListener, error) {
	var out struct{ Listeners []p2pListener }
	if err := c.api.Request("p2p/ls").Exec(ctx, &out); err != nil {
		return nil, fmt.Errorf("p2p ls: %w", err)
	}
	return out.Listeners, nil
}

func (c *Client) p2pForwardTo(ctx context.Context, proto, peer string) (string, bool, error) {
	ls, err := c.p2pLs(ctx)
	if err != nil {
		return "", false, err
	}
	for _, l := range ls {
		if l.Protocol != proto || l.TargetAddress != "/p2p/"+peer {
			continue
		}
		m, err := ma.NewMultiaddr(l.ListenAddress)
		if err != nil {
			continue
		}
		na, err := manet.ToNetAddr(m)
		if err != nil {
			continue
		}
		return na.String(), true, nil
	}
	return "", false, nil
}

// P2PListening says whether the node hands streams of proto to target.
func (c *Client) P2PListening(ctx context.Context, proto, target string) (bool, error) {
	ls, err := c.p2pLs(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range ls {
		if l.Protocol == proto && l.TargetAddress == target {
			return true, nil
		}
	}
	return false, nil
}

// PeerProtocols lists the protocols a connected peer said it speaks (libp2p identify).
func (c *Client) PeerProtocols(ctx context.Context, peer string) ([]string, error) {
	var out struct{ Protocols []string }
	if err := c.api.Request("id", peer).Exec(ctx, &out); err != nil {
		return nil, fmt.Errorf("id %s: %w", peer, err)
	}
	return out.Protocols, nil
}

// Addresses are the node's listen addresses as its peers dial them, each ending in /p2p/<peer ID>.
func (c *Client) Addresses(ctx context.Context) ([]string, error) {
	var id struct {
		ID        string
		Addresses []string
	}
	if err := c.api.Request("id").Exec(ctx, &id); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(id.Addresses))
	for _, a := range id.Addresses {
		if !strings.Contains(a, "/p2p/") {
			a += "/p2p/" + id.ID
		}
		out = append(out, a)
	}
	return out, nil
}

// ID is the node's peer ID.
func (c *Client) ID(ctx context.Context) (string, error) {
	info, err := c.Info(ctx)
	return info.ID, err
}

// PinAdd fetches every block of c (from the node's peers as needed) and pins it recursively under name.
func (c *Client) PinAdd(ctx context.Context, k cid.Cid, name string) error {
	if err := c.api.Request("pin/add", k.String()).Option("recursive", true).Option("name", name).Exec(ctx, nil); err != nil {
		return fmt.Errorf("pin add %s: %w", k, err)
	}
	return nil
}

// bitswapFixed is the boxo release whose bitswap sees the peers connected before it started (kubo
// 0.43.1's changelog): with an older one, a LAN neighbour that mDNS connects while the node starts is
// never asked for blocks for as long as that connection lives.
const bitswapFixed = "v0.42.2"

// BitswapStartRace says why the node's bitswap may ignore peers connected while it started (its boxo is
// older than bitswapFixed), or "" when it does not. The node is asked for its dependencies' versions.
func (c *Client) BitswapStartRace(ctx context.Context) (string, error) {
	resp, err := c.api.Request("version/deps").Send(ctx)
	if err != nil {
		return "", fmt.Errorf("version deps: %w", err)
	}
	if resp.Error != nil {
		return "", fmt.Errorf("version deps: %w", resp.Error)
	}
	defer resp.Close()
	dec := json.NewDecoder(resp.Output)
	for {
		var d struct{ Path, Version, ReplacedBy string }
		if err := dec.Decode(&d); err == io.EOF {
			return "", nil
		} else if err != nil {
			return "", fmt.Errorf("version deps: %w", err)
		}
		if d.Path != "github.com/ipfs/boxo" {
			continue
		}
		v := d.Version
		if _, rv, ok := strings.Cut(d.ReplacedBy, "@"); ok {
			v = rv
		}
		return bitswapRace(v), nil
	}
}

// bitswapRace is BitswapStartRace's verdict on one boxo version.
func bitswapRace(boxo string) string {
	if !semver.IsValid(boxo) || semver.Compare(boxo, bitswapFixed) >= 0 {
		return ""
	}
	return fmt.Sprintf("the node's bitswap (boxo %s) ignores peers connected while it started: a LAN neighbour met by mDNS then is never asked for blocks until it reconnects; kubo 0.43.1 (boxo %s) fixes it, and restarting the neighbour's node works around it", boxo, bitswapFixed)
}

// memDAG is an in-memory, thread-safe DAG service that fetches nothing: where DAG nodes are built before
// they go anywhere. (boxo's merkledag/test.Mock is the same, from a test package.)
func memDAG() ipld.DAGService {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	return merkledag.NewDAGService(bsrv.New(bs, offline.Exchange(bs)))
}
