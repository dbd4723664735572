package endpoint

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/ini"
)

// ReadMirrorlist reads the Server lines of a pacman mirrorlist (or any pacman.conf-style file), in
// order. Commented-out servers are skipped, as pacman does.
func ReadMirrorlist(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mirrorlist: %w", err)
	}
	defer f.Close()
	servers, err := ParseMirrorlist(f)
	if err != nil {
		return nil, fmt.Errorf("mirrorlist %s: %w", path, err)
	}
	return servers, nil
}

// ParseMirrorlist parses mirrorlist text with pacman's INI reader. Every Server must be an http, https,
// ftp or file URL.
func ParseMirrorlist(r io.Reader) ([]string, error) {
	var out []string
	var rd ini.Reader
	err := rd.Read("mirrorlist", r, func(e ini.Entry) error {
		if e.Header || e.Key != "Server" {
			return nil
		}
		if err := checkServer(e.Value); err != nil {
			return fmt.Errorf("line %d: %w", e.Line, err)
		}
		out = append(out, e.Value)
		return nil
	})
	return out, err
}

// checkServer accepts a Server the endpoint can fetch from.
func checkServer(value string) error {
	u, err := url.Parse(strings.NewReplacer("$repo", "repo", "$arch", "arch").Replace(value))
	if err != nil {
		return fmt.Errorf("bad Server %q: %w", value, err)
	}
	switch u.Scheme {
	case "http", "https", "ftp":
		if u.Host == "" {
			return fmt.Errorf("Server %q has no host", value)
		}
	case "file":
		// file:///path: an absolute path and nothing else.
		if u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("Server %q: want file:///absolute/path", value)
		}
	default:
		return fmt.Errorf("Server %q: unsupported scheme", value)
	}
	return nil
}

// Expand fills in a Server template as pacman does.
func Expand(server, repo, arch string) string {
	return strings.NewReplacer("$repo", repo, "$arch", arch).Replace(strings.TrimRight(server, "/"))
}

// Request is a parsed mirror path: /<repo>/os/<arch>/<file>.
type Request struct {
	Repo, Arch, File string
}

// ErrBadPath is returned for any path that is not exactly a file of a mirror's layout.
var ErrBadPath = errors.New("not a mirror path: want /<repo>/os/<arch>/<file>")

// ParsePath parses a request path strictly: four segments, the second "os", and names made of the
// characters Arch uses in repository, architecture and package file names. Nothing can escape the
// layout: no "..", no empty segment, no percent-decoded slash, no hidden file.
func ParsePath(p string) (Request, error) {
	if !strings.HasPrefix(p, "/") {
		return Request{}, ErrBadPath
	}
	parts := strings.Split(p[1:], "/")
	if len(parts) != 4 || parts[1] != "os" {
		return Request{}, ErrBadPath
	}
	for _, s := range []string{parts[0], parts[2], parts[3]} {
		if !validName(s) {
			return Request{}, ErrBadPath
		}
	}
	return Request{Repo: parts[0], Arch: parts[2], File: parts[3]}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == '+', c == '@', c == ':', c == '~':
		default:
			return false
		}
	}
	return !strings.Contains(s, "..")
}

// isPackage says whether a file name is a package (or its signature) rather than a database.
func isPackage(file string) bool {
	f := strings.TrimSuffix(file, ".sig")
	return strings.Contains(f, ".pkg.tar")
}
