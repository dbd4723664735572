package alpmdb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/ini"
)

// Defaults pacman uses when pacman.conf says nothing (pacman's ./configure defaults on Arch and Debian).
const (
	DefaultConfigPath = "/etc/pacman.conf"
	defaultRootDir    = "/"
	defaultDBPath     = "/var/lib/pacman/"
	defaultCacheDir   = "/var/cache/pacman/pkg/"
	defaultGPGDir     = "/etc/pacman.d/gnupg/"
)

// maxIncludeDepth bounds Include chains so a file that includes itself is an error, not a hang.
const maxIncludeDepth = 10

// Config is the part of pacman's configuration pacman-ipfs needs.
type Config struct {
	Path          string   // the pacman.conf it was read from
	RootDir       string   // RootDir, "/" unless set
	DBPath        string   // DBPath, ending in "/"
	CacheDirs     []string // every CacheDir, in order
	Architectures []string // Architecture, "auto" resolved to the machine's
	Repos         []Repo   // sync repositories in the order pacman uses them
	// GPGDir is pacman's GnuPG directory (its keyring), "/etc/pacman.d/gnupg/" unless set; like pacman,
	// it is not placed under RootDir.
	GPGDir string
	// DisableDownloadTimeout: pacman waits for a server's first byte as long as it takes (else it gives
	// up on a server that sends nothing for 10 seconds).
	DisableDownloadTimeout bool
}

// Repo is one [section] of pacman.conf other than [options].
type Repo struct {
	Name    string
	Servers []string // Server lines as written, $repo and $arch unexpanded
}

// SyncDBPath is where pacman keeps the sync database of repo.
func (c *Config) SyncDBPath(repo string) string {
	return filepath.Join(c.DBPath, "sync", repo+".db")
}

// ReadConfig reads pacman.conf at path, following Include lines as pacman does.
func ReadConfig(path string) (*Config, error) {
	p := confParser{cfg: &Config{Path: path}}
	if err := p.file(path, 0); err != nil {
		return nil, err
	}
	return p.finish()
}

// ParseConfig parses pacman.conf text; Include lines are read from the file system.
func ParseConfig(name string, r io.Reader) (*Config, error) {
	p := confParser{cfg: &Config{Path: name}}
	if err := p.parse(name, r, 0); err != nil {
		return nil, err
	}
	return p.finish()
}

type confParser struct {
	cfg     *Config
	ini     ini.Reader
	rootSet bool
	dbSet   bool
}

func (p *confParser) file(path string, depth int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("pacman config: %w", err)
	}
	defer f.Close()
	return p.parse(path, f, depth)
}

func (p *confParser) parse(name string, r io.Reader, depth int) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("pacman config %s: Include nested more than %d deep", name, maxIncludeDepth)
	}
	err := p.ini.Read(name, r, func(e ini.Entry) error { return p.entry(name, e, depth) })
	var inc includeError
	if errors.As(err, &inc) {
		return inc.err // already names its file
	}
	if err != nil {
		return fmt.Errorf("pacman config %w", err)
	}
	return nil
}

// includeError carries an error of an included file through the reader of the including one.
type includeError struct{ err error }

func (e includeError) Error() string { return e.err.Error() }

// entry applies one line of pacman.conf.
func (p *confParser) entry(name string, e ini.Entry, depth int) error {
	switch {
	case e.Header:
		if e.Section != "options" {
			p.repo(e.Section) // a repo exists even with no Server line, as in pacman
		}
	case e.Section == "":
		return fmt.Errorf("%s:%d: %q outside any section", name, e.Line, e.Key)
	case e.Key == "Include":
		if err := p.include(name, e.Line, e.Value, depth); err != nil {
			return includeError{err}
		}
	case e.Section == "options":
		p.option(e.Key, e.Value)
	case e.Key == "Server" && e.Value != "":
		r := p.repo(e.Section)
		r.Servers = append(r.Servers, e.Value)
	}
	return nil
}

func (p *confParser) include(name string, line int, pattern string, depth int) error {
	if pattern == "" {
		return fmt.Errorf("pacman config %s:%d: Include without a path", name, line)
	}
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return fmt.Errorf("pacman config %s:%d: Include %q: %w", name, line, pattern, err)
	}
	// pacman globs with GLOB_NOCHECK, so an Include matching nothing is a file it cannot read: an error.
	if len(matches) == 0 {
		return fmt.Errorf("pacman config %s:%d: Include %s: %w", name, line, pattern, fs.ErrNotExist)
	}
	for _, m := range matches {
		if err := p.file(m, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func (p *confParser) option(key, value string) {
	switch key {
	case "RootDir":
		p.cfg.RootDir, p.rootSet = value, true
	case "DBPath":
		p.cfg.DBPath, p.dbSet = value, true
	case "GPGDir":
		p.cfg.GPGDir = value
	case "DisableDownloadTimeout":
		p.cfg.DisableDownloadTimeout = true
	case "CacheDir":
		p.cfg.CacheDirs = append(p.cfg.CacheDirs, strings.Fields(value)...)
	case "Architecture":
		for _, a := range strings.Fields(value) {
			if a == "auto" {
				a = machine()
			}
			p.cfg.Architectures = append(p.cfg.Architectures, a)
		}
	}
}

// repo returns the repo of a section, adding it on first sight.
func (p *confParser) repo(section string) *Repo {
	for i := range p.cfg.Repos {
		if p.cfg.Repos[i].Name == section {
			return &p.cfg.Repos[i]
		}
	}
	p.cfg.Repos = append(p.cfg.Repos, Repo{Name: section})
	return &p.cfg.Repos[len(p.cfg.Repos)-1]
}

func (p *confParser) finish() (*Config, error) {
	c := p.cfg
	if !p.rootSet || c.RootDir == "" {
		c.RootDir = defaultRootDir
	}
	if !p.dbSet || c.DBPath == "" {
		// pacman puts the default DBPath under a non-default RootDir.
		c.DBPath = filepath.Join(c.RootDir, defaultDBPath)
	}
	if !strings.HasSuffix(c.DBPath, "/") {
		c.DBPath += "/"
	}
	if c.GPGDir == "" {
		c.GPGDir = defaultGPGDir
	}
	if len(c.CacheDirs) == 0 {
		c.CacheDirs = []string{defaultCacheDir}
	}
	if len(c.Architectures) == 0 {
		c.Architectures = []string{machine()}
	}
	for _, r := range c.Repos {
		if r.Name == "local" {
			return nil, errors.New("pacman config " + c.Path + `: "local" is reserved and cannot be a repository name`)
		}
	}
	return c, nil
}

// machine is what Architecture = auto means: uname -m.
func machine() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "unknown"
	}
	b := make([]byte, 0, len(u.Machine))
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(bytes.TrimSpace(b))
}
