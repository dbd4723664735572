// Package kubo is the seeder's IPFS node backed by a kubo daemon's RPC API (github.com/ipfs/kubo/client/rpc).
//
// Requests are raw where the typed client falls short: Unixfs().Add sends its own import defaults and
// drops max-file-links and the pin name, and Pin().Ls panics on an HTTP error status. Every add passes
// every import parameter explicitly (seeder.Import), so the node's Import.* configuration cannot change
// a CID.
package kubo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/client/rpc"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/pacman-ipfs/pacman-ipfs/seeder"
)

var (
	_ seeder.Node             = (*Client)(nil)
	_ seeder.Referencer       = (*Client)(nil)
	_ seeder.GarbageCollector = (*Client)(nil)
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

// Redact returns addr with any credentials removed, for logs and messages.
func Redact(addr string) string {
	u, err := url.Parse(addr)
	if err != nil || u.User == nil {
		return addr
	}
	u.User = url.User("xxxxx")
	return u.String()
}

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
		m, perr := ma.NewMultiaddr(addr)
		if perr != nil {
			return nil, fmt.Errorf("kubo API address %q: %w", addr, perr)
		}
		network, host, derr := manet.DialArgs(m)
		if derr != nil {
			return nil, fmt.Errorf("kubo API address %q: %w", addr, derr)
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
	} else {
		u, perr := url.Parse(addr)
		if perr != nil || u.Host == "" {
			return nil, fmt.Errorf("kubo API address %q: want a multiaddr or an http(s) URL", Redact(addr))
		}
		auth := ""
		if u.User != nil {
			pw, _ := u.User.Password()
			auth = "Basic " + basicAuth(u.User.Username(), pw)
			u.User = nil
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() || u.Hostname() == "localhost" {
			c.local = true
		}
		c.api, err = rpc.NewURLApiWithClient(strings.TrimSuffix(u.String(), "/"), hc)
		if err == nil && auth != "" {
			c.api.Headers.Set("Authorization", auth)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubo API %s: %w", c.addr, err)
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

// CanReference implements seeder.Referencer. kubo's filestore only takes files below the parent of its
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

// Add implements seeder.Node with an `add` request carrying every import option.
func (c *Client) Add(ctx context.Context, f seeder.File) (cid.Cid, error) {
	// With nocopy kubo stores the absolute path sent in the multipart header and reads the file there.
	node, err := files.NewReaderPathFile(f.Path, io.NopCloser(f.Content), nil)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", f.Path, err)
	}
	body := files.NewMultiFileReader(files.NewMapDirectory(map[string]files.Node{filepath.Base(f.Path): node}), false, false)
	imp := seeder.Import
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
	var last string
	dec := json.NewDecoder(resp.Output)
	for {
		var out struct{ Hash string }
		if err := dec.Decode(&out); err == io.EOF {
			break
		} else if err != nil {
			return cid.Undef, addError(f.Path, err)
		}
		if out.Hash != "" {
			last = out.Hash
		}
	}
	got, err := cid.Decode(last)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: the node answered no CID (%q)", f.Path, last)
	}
	return got, nil
}

// Pins implements seeder.Node.
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

// Unpin implements seeder.Node: it removes the pin, then every block of the DAG that no other pin holds
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

// SetIndex makes the MFS directory dir hold exactly files (paths relative to dir, to CIDs) and returns
// dir's CID. Only differences are written: a pass that changed nothing of the cache changes nothing here.
func (c *Client) SetIndex(ctx context.Context, dir string, files map[string]cid.Cid) (cid.Cid, error) {
	have := map[string]cid.Cid{}
	// Listing reads every entry's block; one that is gone (dropped by hand, or by a crash between an
	// unpin and an index update) would have kubo search the network for it. Bound the walk, and on any
	// failure start the directory afresh: rebuilding it only costs a request per file.
	wctx, cancel := context.WithTimeout(ctx, indexWalkTimeout)
	err := c.walkMFS(wctx, dir, "", have)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return cid.Undef, ctx.Err()
		}
		if err := c.api.Request("files/rm", dir).Option("force", true).Exec(ctx, nil); err != nil && !strings.Contains(err.Error(), "does not exist") {
			return cid.Undef, fmt.Errorf("index: %s is unreadable and cannot be removed: %w", dir, err)
		}
		clear(have)
	}
	// Writes go unflushed, and are flushed every mfsBatch of them: kubo refuses more than 256 pending.
	pending := 0
	flushed := func(err error) error {
		if err != nil {
			return err
		}
		if pending++; pending >= mfsBatch {
			pending = 0
			if err := c.api.Request("files/flush", dir).Exec(ctx, nil); err != nil {
				return fmt.Errorf("index: flush %s: %w", dir, err)
			}
		}
		return nil
	}
	for p, k := range have {
		if want, ok := files[p]; !ok || !want.Equals(k) {
			// files rm always flushes.
			if err := c.api.Request("files/rm", path.Join(dir, p)).Option("force", true).Exec(ctx, nil); err != nil {
				return cid.Undef, fmt.Errorf("index: remove %s: %w", p, err)
			}
		}
	}
	if len(have) == 0 {
		// A CIDv1 directory, like the files in it, whatever the node's defaults.
		if err := c.api.Request("files/mkdir", dir).Option("parents", true).Option("cid-version", 1).Exec(ctx, nil); err != nil {
			return cid.Undef, fmt.Errorf("index: mkdir %s: %w", dir, err)
		}
	}
	made := map[string]bool{}
	for p := range have {
		made[path.Dir(p)] = true
	}
	for p, k := range files {
		if h, ok := have[p]; ok && h.Equals(k) {
			continue
		}
		if d := path.Dir(p); !made[d] {
			made[d] = true
			err := c.api.Request("files/mkdir", path.Join(dir, d)).Option("parents", true).Option("cid-version", 1).Option("flush", false).Exec(ctx, nil)
			if err := flushed(err); err != nil {
				return cid.Undef, fmt.Errorf("index: mkdir for %s: %w", p, err)
			}
		}
		err := c.api.Request("files/cp", "/ipfs/"+k.String(), path.Join(dir, p)).Option("flush", false).Exec(ctx, nil)
		if err := flushed(err); err != nil {
			return cid.Undef, fmt.Errorf("index: add %s: %w", p, err)
		}
	}
	if err := c.api.Request("files/flush", dir).Exec(ctx, nil); err != nil {
		return cid.Undef, fmt.Errorf("index: flush %s: %w", dir, err)
	}
	var st struct{ Hash string }
	if err := c.api.Request("files/stat", dir).Exec(ctx, &st); err != nil {
		return cid.Undef, fmt.Errorf("index: stat %s: %w", dir, err)
	}
	return cid.Decode(st.Hash)
}

// mfsBatch is how many MFS writes go unflushed; kubo allows 256 (Internal.MFSNoFlushLimit).
const mfsBatch = 128

// indexWalkTimeout bounds listing the index; a healthy one of 10,000 files lists in well under it.
var indexWalkTimeout = 20 * time.Second

// walkMFS lists the files below dir/rel into out. A missing dir is empty.
func (c *Client) walkMFS(ctx context.Context, dir, rel string, out map[string]cid.Cid) error {
	var ls struct {
		Entries []struct {
			Name string
			Type int
			Hash string
		}
	}
	err := c.api.Request("files/ls", path.Join(dir, rel)).Option("long", true).Option("U", true).Exec(ctx, &ls)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		return fmt.Errorf("index: list %s: %w", path.Join(dir, rel), err)
	}
	for _, e := range ls.Entries {
		p := path.Join(rel, e.Name)
		if e.Type == 1 {
			if err := c.walkMFS(ctx, dir, p, out); err != nil {
				return err
			}
			continue
		}
		if k, err := cid.Decode(e.Hash); err == nil {
			out[p] = k
		}
	}
	return nil
}

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
		return fmt.Errorf("add %s: %w: %w", path, seeder.ErrNoSpace, err)
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
