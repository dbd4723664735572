package reconcile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrChanged means a file changed, moved or vanished while it was being read: it is retried by the next
// reconcile, never published as it was.
var ErrChanged = errors.New("file changed while being read")

// ignored reports entries of a CacheDir that are pacman's work in progress, not packages: pacman 6 writes
// <file>.part next to the package, pacman 7 writes into download-XXXXXX/ and renames the result.
func ignored(name string, mode fs.FileMode) bool {
	return mode.IsDir() || strings.HasSuffix(name, ".part")
}

// scanDir lists the entries of one CacheDir. Entries are lstat'ed (through the directory's
// descriptor), never followed, never opened. A CacheDir that does not exist holds nothing. root, when
// not "", must hold dir: it is opened beneath root through no link (openDir).
// ignore, when not nil, drops the entries the directory's layout says are not packages.
func scanDir(root, dir string, ignore func(string, fs.FileMode) bool) ([]candidate, error) {
	f, err := openDir(root, dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cache dir %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read cache dir %s: %w", dir, err)
	}
	out := make([]candidate, 0, len(names))
	for _, name := range names {
		path := filepath.Join(dir, name)
		var sys unix.Stat_t
		err := unix.Fstatat(int(f.Fd()), name, &sys, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue // removed since the listing: gone is gone
		}
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", path, err)
		}
		st := toFileStat(&sys)
		if ignored(name, st.Mode) || (ignore != nil && ignore(path, st.Mode)) {
			continue
		}
		out = append(out, candidate{Dir: dir, Name: name, Path: path, Stat: st})
	}
	return out, nil
}

// ErrOutside means a directory to scan is not reached from the root without leaving it or following a
// symbolic link.
var ErrOutside = errors.New("not beneath the root through real directories")

// openDir opens dir; when root is not "", only beneath root and through no symbolic link, or fails
// with ErrOutside (os.Root, which stays beneath root, where openat2 is missing).
func openDir(root, dir string) (*os.File, error) {
	if root == "" {
		return os.Open(dir) // a CacheDir may be a link (to a bigger disk): pacman follows it too
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s: %w %s", dir, ErrOutside, root)
	}
	rfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	switch {
	case errors.Is(err, unix.ENOSYS):
		return os.OpenInRoot(root, rel)
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("%s: %w %s", dir, ErrOutside, root)
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

func lstat(path string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileStat{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return toFileStat(&st), nil
}

func toFileStat(st *unix.Stat_t) fileStat {
	return fileStat{
		Dev:   st.Dev,
		Ino:   st.Ino,
		Size:  st.Size,
		Mtime: st.Mtim.Nano(),
		Ctime: st.Ctim.Nano(),
		Mode:  modeOf(st.Mode),
	}
}

func modeOf(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}

// openSame opens path for reading only if it is still the regular file want describes (same device,
// inode, size, and, when strict, the same mtime and ctime). O_NOFOLLOW refuses a symlink swapped in
// since the scan; O_NONBLOCK keeps a FIFO swapped in from blocking the open.
func openSame(path string, want fileStat, strict bool) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open %s: %w", path, ErrChanged)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	got, err := fstat(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !got.Mode.IsRegular() || got.Dev != want.Dev || got.Ino != want.Ino || got.Size != want.Size ||
		strict && (got.Mtime != want.Mtime || got.Ctime != want.Ctime) {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, ErrChanged)
	}
	return f, nil
}

func fstat(f *os.File) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStat{}, &fs.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return toFileStat(&st), nil
}

// unchanged checks, after reading, that the open file and the name in the cache are still what was read.
func unchanged(f *os.File, before fileStat) error {
	after, err := fstat(f)
	if err != nil {
		return err
	}
	if after.Size != before.Size || after.Mtime != before.Mtime || after.Ctime != before.Ctime {
		return fmt.Errorf("%s: %w", f.Name(), ErrChanged)
	}
	now, err := lstat(f.Name())
	if err != nil || now.Dev != before.Dev || now.Ino != before.Ino {
		return fmt.Errorf("%s: %w", f.Name(), ErrChanged)
	}
	return nil
}

// hashFile returns the sha256 of the file c names and the stat its bytes were read under. It reads
// exactly the size the scan saw and fails with ErrChanged if the file is not the same afterwards.
func hashFile(ctx context.Context, c candidate, buf []byte, progress func(int64)) (fileStat, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := openSame(c.Path, c.Stat, false)
	if err != nil {
		return fileStat{}, sum, err
	}
	defer f.Close()
	before, err := fstat(f)
	if err != nil {
		return fileStat{}, sum, err
	}
	h := sha256.New()
	r := &ctxReader{ctx: ctx, r: io.LimitReader(f, before.Size), progress: progress}
	n, err := io.CopyBuffer(h, r, buf)
	if err != nil {
		return fileStat{}, sum, fmt.Errorf("read %s: %w", c.Path, err)
	}
	if n != before.Size {
		return fileStat{}, sum, fmt.Errorf("read %s: %d of %d bytes: %w", c.Path, n, before.Size, ErrChanged)
	}
	if err := unchanged(f, before); err != nil {
		return fileStat{}, sum, err
	}
	h.Sum(sum[:0])
	return before, sum, nil
}

// ctxReader stops a long read when the context is done and reports progress.
type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	progress func(int64)
	err      error // the first read error, so a failed add can be told apart from a failed node
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if r.progress != nil && n > 0 {
		r.progress(int64(n))
	}
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// isNotExist also covers a directory component that vanished.
func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
