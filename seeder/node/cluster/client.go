package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// Client talks to one cluster peer's REST API.
type Client struct {
	base *url.URL // without credentials
	addr string   // for messages: the base URL, credentials removed
	auth string   // "Basic ..." or ""
	hc   *http.Client
	peer ID // what the peer said of itself when dialled
}

// ErrUnreachable means no cluster REST API answered at the address.
var ErrUnreachable = errors.New("IPFS Cluster REST API not reachable")

// Dial checks within a few seconds that the REST API at rawURL (http(s)://[user:password@]host:port)
// answers, and returns a client for it.
func Dial(ctx context.Context, rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("cluster API address %q: want an http(s) URL", Redact(rawURL))
	}
	c := &Client{hc: &http.Client{Transport: &http.Transport{
		Proxy:               nil, // the cluster peer is named exactly: never through a proxy
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
	}}}
	if u.User != nil {
		pw, _ := u.User.Password()
		c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))
		u.User = nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c.base, c.addr = u, u.String()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	id, err := c.ID(dctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.addr, err)
	}
	c.peer = id
	return c, nil
}

// Addr is the REST API's address without credentials.
func (c *Client) Addr() string { return c.addr }

// Peer is what the cluster peer behind the REST API said of itself when it was dialled.
func (c *Client) Peer() ID { return c.peer }

// Redact is node.Redact: an address with its credentials replaced.
func Redact(s string) string { return node.Redact(s) }

// ID is what a cluster peer says of itself.
type ID struct {
	ID           string   `json:"id"`
	Peername     string   `json:"peername"`
	Version      string   `json:"version"`
	ClusterPeers []string `json:"cluster_peers"`
	Error        string   `json:"error"`
	IPFS         struct {
		ID        string   `json:"id"`
		Addresses []string `json:"addresses"`
		Error     string   `json:"error"`
	} `json:"ipfs"`
}

// ID asks the peer who it is.
func (c *Client) ID(ctx context.Context) (ID, error) {
	var id ID
	err := c.do(ctx, http.MethodGet, "/id", nil, &id)
	return id, err
}

// PinOptions are the options of a pin the seeder sets.
type PinOptions struct {
	Name string
	// ReplicationMin and ReplicationMax: 0 takes the cluster's own default, -1 pins on every peer.
	ReplicationMin, ReplicationMax int
	// Origins are multiaddrs with /p2p/<peer ID> of nodes that have the content: the cluster's peers
	// connect to them at once instead of searching the DHT.
	Origins  []string
	Metadata map[string]string
	// Allocations are peers to allocate first (the cluster's user-allocations), before its own choice
	// fills the replication factor.
	Allocations []string
}

func (o PinOptions) query() url.Values {
	q := url.Values{}
	q.Set("name", o.Name)
	q.Set("mode", "recursive")
	q.Set("replication-min", strconv.Itoa(o.ReplicationMin))
	q.Set("replication-max", strconv.Itoa(o.ReplicationMax))
	if len(o.Origins) > 0 {
		q.Set("origins", strings.Join(o.Origins, ","))
	}
	if len(o.Allocations) > 0 {
		q.Set("user-allocations", strings.Join(o.Allocations, ","))
	}
	for k, v := range o.Metadata {
		q.Set("meta-"+k, v)
	}
	return q
}

// Pin pins c across the cluster. Pinning what is pinned already updates its options.
func (c *Client) Pin(ctx context.Context, k cid.Cid, o PinOptions) error {
	return c.do(ctx, http.MethodPost, "/pins/"+k.String(), o.query(), nil)
}

// Unpin removes the cluster's pin of c. Unpinning what is not pinned is not an error.
func (c *Client) Unpin(ctx context.Context, k cid.Cid) error {
	err := c.do(ctx, http.MethodDelete, "/pins/"+k.String(), nil, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == http.StatusNotFound {
		return nil
	}
	return err
}

// Pin is an entry of the cluster's pinset (GET /allocations).
type Pin struct {
	CID         string            `json:"cid"`
	Name        string            `json:"name"`
	Allocations []string          `json:"allocations"`
	Origins     []string          `json:"origins"`
	Metadata    map[string]string `json:"metadata"`
	ReplMin     int               `json:"replication_factor_min"`
	ReplMax     int               `json:"replication_factor_max"`
}

// Allocations lists the cluster's pinset (normal pins).
func (c *Client) Allocations(ctx context.Context) ([]Pin, error) {
	return streamAll[Pin](ctx, c, "/allocations", url.Values{"filter": {"pin"}})
}

// PeerStatus is one cluster peer's view of a pin.
type PeerStatus struct {
	Peername string `json:"peername"`
	Status   string `json:"status"` // pinned, pinning, pin_queued, pin_error, remote, unpinned, ...
	Error    string `json:"error"`
}

// PinStatus is a pin's status on every cluster peer (GET /pins).
type PinStatus struct {
	CID     string                `json:"cid"`
	Name    string                `json:"name"`
	PeerMap map[string]PeerStatus `json:"peer_map"`
}

// Status lists the status of the given pins on every peer (all pins when cids is empty).
func (c *Client) Status(ctx context.Context, cids []cid.Cid) ([]PinStatus, error) {
	q := url.Values{}
	if len(cids) > 0 {
		s := make([]string, len(cids))
		for i, k := range cids {
			s[i] = k.String()
		}
		q.Set("cids", strings.Join(s, ","))
	}
	return streamAll[PinStatus](ctx, c, "/pins", q)
}

// APIError is an error the REST API answered with.
type APIError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return fmt.Sprintf("cluster API: %d %s", e.Code, e.Message) }

func (c *Client) request(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("cluster API %s: %w", c.addr, err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error names the URL, which carries no credentials: they are in a header.
		return nil, fmt.Errorf("cluster API %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp, nil
}

func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := &APIError{Code: resp.StatusCode}
	if json.Unmarshal(b, ae) != nil || ae.Message == "" {
		ae.Message = strings.TrimSpace(string(bytes.ToValidUTF8(b, nil)))
	}
	ae.Code = resp.StatusCode
	return ae
}

// do sends one request and decodes its one JSON answer into out (nil: the answer is dropped).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	resp, err := c.request(ctx, method, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("cluster API %s %s: %w", method, path, err)
	}
	return nil
}

// streamAll reads a streamed answer: newline-delimited JSON objects (204 when there are none), with an
// error after the first object reported in the X-Stream-Error trailer.
func streamAll[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	resp, err := c.request(ctx, http.MethodGet, path, q)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []T
	if resp.StatusCode == http.StatusNoContent {
		return out, nil
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("cluster API GET %s: %w", path, err)
		}
		out = append(out, v)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // the trailer is there once the body is read
	if msg := resp.Trailer.Get("X-Stream-Error"); msg != "" {
		return nil, fmt.Errorf("cluster API GET %s: %s", path, msg)
	}
	return out, nil
}

// Counts are how many of a repository's pins are in each state, counted on every cluster peer that
// holds or is asked to hold them ("remote": allocated elsewhere, not counted).
type Counts struct {
	Pins    int `json:"pins"`
	Pinned  int `json:"pinned"`
	Pinning int `json:"pinning"`
	Queued  int `json:"queued"`
	Error   int `json:"error"`
}

// Summary counts the state of our pins (named prefix + repo + "/" + file) per repository.
func (c *Client) Summary(ctx context.Context, prefix string) (map[string]Counts, error) {
	st, err := c.Status(ctx, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]Counts{}
	for _, p := range st {
		rest, ok := strings.CutPrefix(p.Name, prefix)
		if !ok {
			continue
		}
		repo, _, _ := strings.Cut(rest, "/")
		n := out[repo]
		n.Pins++
		for _, ps := range p.PeerMap {
			switch ps.Status {
			case "pinned":
				n.Pinned++
			case "pinning":
				n.Pinning++
			case "pin_queued":
				n.Queued++
			case "pin_error", "cluster_error", "unexpectedly_unpinned":
				n.Error++
			}
		}
		out[repo] = n
	}
	return out, nil
}
