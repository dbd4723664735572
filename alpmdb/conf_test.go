package alpmdb_test

import (
	"bytes"
	"cmp"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// uname is what Architecture = auto (and no Architecture at all) resolves to.
func uname(t testing.TB) string {
	t.Helper()
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// writeConfs writes files (relative name -> text) under a fresh dir, with every "@DIR@" in the text
// replaced by that dir, and returns the dir.
func writeConfs(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "@DIR@", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReadConfig(t *testing.T) {
	arch := uname(t)
	tests := []struct {
		name  string
		files map[string]string // pacman.conf is the one read; "@DIR@" is the test's dir
		want  alpmdb.Config     // Path is filled in; "@DIR@" in RootDir, DBPath, CacheDirs is replaced
		// wantErr, when set, is a substring the error must contain ("@DIR@" replaced); want is then unused.
		wantErr string
		// wantIs, when set, must match the error with errors.Is.
		wantIs error
	}{
		{
			name:  "defaults",
			files: map[string]string{"pacman.conf": "[options]\n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			name:  "empty file",
			files: map[string]string{"pacman.conf": ""},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			// pacman-conf prints <root>/var/lib/pacman/ for this; CacheDir stays outside the root.
			name:  "RootDir without DBPath",
			files: map[string]string{"pacman.conf": "[options]\nRootDir = /srv/root\n"},
			want: alpmdb.Config{
				RootDir: "/srv/root", DBPath: "/srv/root/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			name:  "RootDir with trailing slash",
			files: map[string]string{"pacman.conf": "[options]\nRootDir = /srv/root/\n"},
			want: alpmdb.Config{
				RootDir: "/srv/root/", DBPath: "/srv/root/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			name:  "DBPath gains its trailing slash and wins over RootDir",
			files: map[string]string{"pacman.conf": "[options]\nRootDir = /srv/root\nDBPath = /srv/db\n"},
			want: alpmdb.Config{
				RootDir: "/srv/root", DBPath: "/srv/db/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			name: "several CacheDir lines and several dirs on one",
			files: map[string]string{"pacman.conf": "[options]\nCacheDir = /c1/ /c2/\nCacheDir=/c3\n" +
				"CacheDir =   /c4   /c5  \n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/c1/", "/c2/", "/c3", "/c4", "/c5"},
				Architectures: []string{arch},
			},
		},
		{
			name:  "Architecture auto",
			files: map[string]string{"pacman.conf": "[options]\nArchitecture = auto\n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
			},
		},
		{
			name:  "several Architectures",
			files: map[string]string{"pacman.conf": "[options]\nArchitecture = x86_64 x86_64_v3\nArchitecture = auto\n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{"x86_64", "x86_64_v3", arch},
			},
		},
		{
			name: "comments and blank lines",
			files: map[string]string{"pacman.conf": "# a comment\n\n   \n[options] # trailing\n" +
				"\t# indented comment\nDBPath = /db # not part of it\n#CacheDir = /nope\n\n[core]   \n" +
				"# Server = http://commented.invalid\nServer = http://a.invalid/$repo/os/$arch\n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/db/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
				Repos:         []alpmdb.Repo{{Name: "core", Servers: []string{"http://a.invalid/$repo/os/$arch"}}},
			},
		},
		{
			name:  "repo with no Server",
			files: map[string]string{"pacman.conf": "[options]\n[core]\n[extra]\nServer = http://e.invalid\n[custom]\nSigLevel = Never\n"},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch},
				Repos: []alpmdb.Repo{
					{Name: "core"},
					{Name: "extra", Servers: []string{"http://e.invalid"}},
					{Name: "custom"},
				},
			},
		},
		{
			// filepath.Glob, like glob(3), sorts; the section set in an included file carries on after it.
			name: "Include glob of two files, in order",
			files: map[string]string{
				"pacman.conf": "[options]\nInclude = @DIR@/conf.d/*.conf\n[core]\nServer = http://c.invalid\n" +
					"[extra]\nInclude = @DIR@/mirrorlist\n",
				"conf.d/20-b.conf": "[b]\nServer = http://b.invalid\n",
				"conf.d/10-a.conf": "[options]\nCacheDir = /from-a\n[a]\nServer = http://a.invalid\n",
				"conf.d/README":    "not included: no .conf\n",
				"mirrorlist":       "# mirrors\nServer = http://m1.invalid/$repo\nServer = http://m2.invalid/$repo\n",
			},
			want: alpmdb.Config{
				RootDir: "/", DBPath: "/var/lib/pacman/", CacheDirs: []string{"/from-a"},
				Architectures: []string{arch},
				Repos: []alpmdb.Repo{
					{Name: "a", Servers: []string{"http://a.invalid"}},
					{Name: "b", Servers: []string{"http://b.invalid"}},
					{Name: "core", Servers: []string{"http://c.invalid"}},
					{Name: "extra", Servers: []string{"http://m1.invalid/$repo", "http://m2.invalid/$repo"}},
				},
			},
		},
		{
			name:    "Include of a file that includes itself",
			files:   map[string]string{"pacman.conf": "[options]\nInclude = @DIR@/pacman.conf\n"},
			wantErr: "Include nested more than",
		},
		{
			name: "Include cycle of two files",
			files: map[string]string{
				"pacman.conf": "[options]\nInclude = @DIR@/other.conf\n",
				"other.conf":  "[core]\nInclude = @DIR@/pacman.conf\n",
			},
			wantErr: "Include nested more than",
		},
		{
			// pacman (GLOB_NOCHECK) then fails to read the pattern itself: "could not be read".
			name:    "Include matching nothing",
			files:   map[string]string{"pacman.conf": "[options]\nInclude = @DIR@/nothing.d/*.conf\n"},
			wantErr: "pacman.conf:2",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "Include of a missing file",
			files:   map[string]string{"pacman.conf": "[options]\n\n[core]\nInclude = @DIR@/mirrorlist\n"},
			wantErr: "pacman.conf:4",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "Include without a path",
			files:   map[string]string{"pacman.conf": "[options]\nInclude =\n"},
			wantErr: "pacman.conf:2: Include without a path",
		},
		{
			name:    "local is reserved",
			files:   map[string]string{"pacman.conf": "[options]\n[core]\n[local]\nServer = http://l.invalid\n"},
			wantErr: `"local" is reserved`,
		},
		{
			name:    "key outside any section",
			files:   map[string]string{"pacman.conf": "# header\n\nDBPath = /db\n[options]\n"},
			wantErr: "@DIR@/pacman.conf:3:",
		},
		{
			name:    "Include outside any section",
			files:   map[string]string{"pacman.conf": "Include = @DIR@/x.conf\n", "x.conf": "[core]\n"},
			wantErr: "@DIR@/pacman.conf:1:",
		},
		{
			name:    "bad section header",
			files:   map[string]string{"pacman.conf": "[options]\n[core\n"},
			wantErr: "@DIR@/pacman.conf:2: bad section header",
		},
		{
			name:  "GPGDir, which RootDir does not move",
			files: map[string]string{"pacman.conf": "[options]\nRootDir = /srv/root\nGPGDir = /srv/keys/\n"},
			want: alpmdb.Config{
				RootDir: "/srv/root", DBPath: "/srv/root/var/lib/pacman/", CacheDirs: []string{"/var/cache/pacman/pkg/"},
				Architectures: []string{arch}, GPGDir: "/srv/keys/",
			},
		},
		{
			name:    "empty section header",
			files:   map[string]string{"pacman.conf": "[options]\n[]\n"},
			wantErr: "@DIR@/pacman.conf:2: bad section header",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeConfs(t, tt.files)
			path := filepath.Join(dir, "pacman.conf")
			got, err := alpmdb.ReadConfig(path)
			if tt.wantErr != "" || tt.wantIs != nil {
				if err == nil {
					t.Fatalf("ReadConfig = %+v, want an error", got)
				}
				if want := strings.ReplaceAll(tt.wantErr, "@DIR@", dir); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q is not %v", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadConfig: %v", err)
			}
			want := tt.want
			want.Path = path
			want.GPGDir = cmp.Or(want.GPGDir, "/etc/pacman.d/gnupg/")
			if !reflect.DeepEqual(got, &want) {
				t.Errorf("ReadConfig =\n%+v\nwant\n%+v", *got, want)
			}
			// ParseConfig of the same text gives the same, but for Path.
			text, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := alpmdb.ParseConfig("text", bytes.NewReader(text))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			want.Path = "text"
			if !reflect.DeepEqual(parsed, &want) {
				t.Errorf("ParseConfig =\n%+v\nwant\n%+v", *parsed, want)
			}
		})
	}
}

func TestReadConfigMissing(t *testing.T) {
	_, err := alpmdb.ReadConfig(filepath.Join(t.TempDir(), "pacman.conf"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadConfig of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestParseConfigErrorNamesInput(t *testing.T) {
	_, err := alpmdb.ParseConfig("stdin", strings.NewReader("\n\nUseSyslog\n"))
	if err == nil || !strings.Contains(err.Error(), "stdin:3:") {
		t.Errorf("ParseConfig: %v, want an error naming stdin:3", err)
	}
}

func TestSyncDBPath(t *testing.T) {
	c := alpmdb.Config{DBPath: "/var/lib/pacman/"}
	if got, want := c.SyncDBPath("core"), "/var/lib/pacman/sync/core.db"; got != want {
		t.Errorf("SyncDBPath = %q, want %q", got, want)
	}
}

// TestConfigMatchesPacmanConf reads configs with both ReadConfig and the real pacman-conf, and compares
// what pacman-conf prints for each value pacman-ipfs uses.
func TestConfigMatchesPacmanConf(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pacman-conf")
	}
	alpmtest.Require(t, "pacman-conf")
	tests := []struct {
		name  string
		files map[string]string // pacman.conf is the one read; "@DIR@" is the test's dir
	}{
		{name: "defaults", files: map[string]string{"pacman.conf": "[options]\n"}},
		{name: "RootDir only", files: map[string]string{"pacman.conf": "[options]\nRootDir = @DIR@/root\n"}},
		{name: "RootDir with slash", files: map[string]string{"pacman.conf": "[options]\nRootDir = @DIR@/root/\n"}},
		{name: "RootDir and DBPath", files: map[string]string{"pacman.conf": "[options]\nRootDir = @DIR@/root\nDBPath = @DIR@/db\n"}},
		{name: "RootDir and GPGDir", files: map[string]string{"pacman.conf": "[options]\nRootDir = @DIR@/root\nGPGDir = @DIR@/keys/\n"}},
		{
			name: "CacheDirs",
			files: map[string]string{"pacman.conf": "[options]\nCacheDir = /c1 /c2/\nCacheDir = /c3\n" +
				"CacheDir =  /c4    /c5\nArchitecture = auto\n"},
		},
		{
			name: "Architectures",
			files: map[string]string{"pacman.conf": "[options]\nArchitecture = i686 x86_64\nArchitecture = auto\n" +
				"[core]\nServer = http://a.invalid/$repo/os/$arch\n"},
		},
		{
			name: "Arch-like",
			files: map[string]string{
				"pacman.conf": "#\n# /etc/pacman.conf\n#\n[options]\n#RootDir     = /\n#DBPath      = /var/lib/pacman/\n" +
					"HoldPkg     = pacman glibc\nArchitecture = auto\nCheckSpace\nParallelDownloads = 5\n" +
					"SigLevel    = Required DatabaseOptional\nLocalFileSigLevel = Optional\n\n" +
					"#[testing]\n#Include = /etc/pacman.d/mirrorlist\n\n[core]\nInclude = @DIR@/mirrorlist\n\n" +
					"[extra]\nInclude = @DIR@/mirrorlist\n\n[custom]\nSigLevel = Optional TrustAll\nServer = file:///home/custompkgs\n",
				"mirrorlist": "## Worldwide\nServer = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n" +
					"#Server = https://commented.invalid/$repo/os/$arch\nServer = https://mirror.rackspace.com/archlinux/$repo/os/$arch\n",
			},
		},
		{
			name: "Include glob and sections across Includes",
			files: map[string]string{
				"pacman.conf": "[options]\nInclude = @DIR@/conf.d/*.conf\n[core]\nServer = http://c.invalid\n" +
					"Include = @DIR@/tail.conf\nServer = http://after.invalid\n",
				"conf.d/20-b.conf": "[b]\nServer = http://b.invalid\n",
				"conf.d/10-a.conf": "[options]\nCacheDir = /from-a\n[a]\nServer = http://a.invalid\n",
				"tail.conf":        "Server = http://tail.invalid\n[extra]\n",
			},
		},
		{name: "repo without Server", files: map[string]string{"pacman.conf": "[options]\n[core]\n[extra]\n"}},
		// Errors: pacman-conf fails on each of them, so must ReadConfig.
		{name: "self Include", files: map[string]string{"pacman.conf": "[options]\nInclude = @DIR@/pacman.conf\n"}},
		{name: "Include of nothing", files: map[string]string{"pacman.conf": "[options]\nInclude = @DIR@/none/*.conf\n"}},
		{name: "key outside section", files: map[string]string{"pacman.conf": "DBPath = /db\n[options]\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeConfs(t, tt.files)
			path := filepath.Join(dir, "pacman.conf")
			cfg, err := alpmdb.ReadConfig(path)
			repos, pcErr := pacmanConf(t, path, "--repo-list")
			if pcErr != nil || err != nil {
				if (pcErr == nil) != (err == nil) {
					t.Fatalf("ReadConfig error %v, pacman-conf error %v: they disagree", err, pcErr)
				}
				return
			}
			dbPath, _ := pacmanConf(t, path, "DBPath")
			rootDir, _ := pacmanConf(t, path, "RootDir")
			cacheDirs, _ := pacmanConf(t, path, "CacheDir")
			archs, _ := pacmanConf(t, path, "Architecture")
			gpgDir, _ := pacmanConf(t, path, "GPGDir")
			if len(gpgDir) != 1 || gpgDir[0] != cfg.GPGDir {
				t.Errorf("GPGDir = %q, pacman-conf says %q", cfg.GPGDir, gpgDir)
			}

			// pacman-conf prints DBPath as written (or root + "/var/lib/pacman/", keeping a double slash);
			// libalpm adds the trailing slash and treats "//" as "/", so compare the cleaned paths.
			if len(dbPath) != 1 || filepath.Clean(dbPath[0]) != filepath.Clean(cfg.DBPath) {
				t.Errorf("DBPath = %q, pacman-conf says %q", cfg.DBPath, dbPath)
			}
			if !strings.HasSuffix(cfg.DBPath, "/") {
				t.Errorf("DBPath %q does not end in /", cfg.DBPath)
			}
			if len(rootDir) != 1 || rootDir[0] != cfg.RootDir {
				t.Errorf("RootDir = %q, pacman-conf says %q", cfg.RootDir, rootDir)
			}
			if !slices.Equal(cacheDirs, cfg.CacheDirs) {
				t.Errorf("CacheDirs = %q, pacman-conf says %q", cfg.CacheDirs, cacheDirs)
			}
			// With no Architecture pacman-conf prints nothing; Config falls back to the machine's.
			if len(archs) > 0 && !slices.Equal(archs, cfg.Architectures) {
				t.Errorf("Architectures = %q, pacman-conf says %q", cfg.Architectures, archs)
			}
			var names []string
			for _, r := range cfg.Repos {
				names = append(names, r.Name)
				// pacman-conf expands $repo and $arch in Servers.
				servers, err := pacmanConf(t, path, "--repo", r.Name, "Server")
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, s := range r.Servers {
					s = strings.ReplaceAll(s, "$repo", r.Name)
					want = append(want, strings.ReplaceAll(s, "$arch", cfg.Architectures[0]))
				}
				if !slices.Equal(servers, want) {
					t.Errorf("[%s] Servers = %q (expanded %q), pacman-conf says %q", r.Name, r.Servers, want, servers)
				}
			}
			if !slices.Equal(names, repos) {
				t.Errorf("Repos = %q, pacman-conf --repo-list says %q", names, repos)
			}
		})
	}
}

// pacmanConf runs `pacman-conf --config path args...` and returns its output lines.
func pacmanConf(t *testing.T, path string, args ...string) ([]string, error) {
	t.Helper()
	cmd := exec.Command("pacman-conf", append([]string{"--config", path}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New("pacman-conf " + strings.Join(args, " ") + ": " + err.Error() + ": " + stderr.String())
	}
	var lines []string
	for line := range strings.Lines(string(out)) {
		lines = append(lines, strings.TrimSuffix(line, "\n"))
	}
	return lines, nil
}

// FuzzParseConfig checks ParseConfig never panics and that whatever it accepts is usable.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"[options]\n",
		"[options]\nRootDir = /srv/root\n",
		"[options]\nRootDir = /\nDBPath = /var/lib/pacman\nCacheDir = /a /b\nCacheDir = /c\nArchitecture = auto\n" +
			"SigLevel = Required DatabaseOptional\n\n[core]\nServer = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n" +
			"[extra]\nServer = https://mirror.invalid/$repo/os/$arch\n",
		"# comment\n[options] # c\nHoldPkg = pacman glibc\nCheckSpace\n[custom]\nSigLevel = Optional TrustAll\n" +
			"Server = file:///home/custompkgs\n",
		"[options]\nDBPath =\nCacheDir =\nRootDir =\n[]\n",
		"Key = outside\n[options]\n",
		"[options]\n[local]\n",
		"[options\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if strings.Contains(text, "Include") {
			t.Skip("Include reads the file system")
		}
		cfg, err := alpmdb.ParseConfig("fuzz", strings.NewReader(text))
		if err != nil {
			return
		}
		if !strings.HasSuffix(cfg.DBPath, "/") {
			t.Errorf("DBPath %q does not end in /", cfg.DBPath)
		}
		if len(cfg.CacheDirs) == 0 {
			t.Error("no CacheDirs")
		}
	})
}
