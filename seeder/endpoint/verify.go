package endpoint

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"
)

// holdBack is how much of the end of a file is kept until the whole file is verified: pacman never gets
// a complete file, and so never a success, unless its size and sha256 match the sync db.
const holdBack = 64 << 10

// ErrMismatch means the bytes a source sent are not the file the sync db describes.
var ErrMismatch = errors.New("content does not match the sync db")

// verifier passes bytes to w while hashing them, refuses anything past the expected size, and holds
// back the last holdBack bytes until Finish has checked size and sha256.
type verifier struct {
	w       io.Writer
	size    int64
	want    [sha256.Size]byte
	h       hash.Hash
	n       int64  // bytes accepted
	pending []byte // the tail, not yet written
}

func newVerifier(w io.Writer, size int64, sum [sha256.Size]byte) *verifier {
	return &verifier{w: w, size: size, want: sum, h: sha256.New(), pending: make([]byte, 0, holdBack)}
}

func (v *verifier) Write(p []byte) (int, error) {
	if v.n+int64(len(p)) > v.size {
		return 0, fmt.Errorf("%w: more than the %d bytes it lists", ErrMismatch, v.size)
	}
	v.h.Write(p)
	v.n += int64(len(p))
	v.pending = append(v.pending, p...)
	if over := len(v.pending) - holdBack; over > 0 {
		if _, err := v.w.Write(v.pending[:over]); err != nil {
			return 0, err
		}
		v.pending = append(v.pending[:0], v.pending[over:]...)
	}
	return len(p), nil
}

// Finish checks what was written and, only if it is the file, writes the held-back tail.
func (v *verifier) Finish() error {
	if v.n != v.size {
		return fmt.Errorf("%w: %d of %d bytes", ErrMismatch, v.n, v.size)
	}
	var got [sha256.Size]byte
	v.h.Sum(got[:0])
	if got != v.want {
		return fmt.Errorf("%w: sha256 differs", ErrMismatch)
	}
	_, err := v.w.Write(v.pending)
	return err
}

// window passes on only the bytes from offset from to offset to (inclusive) of what is written to it:
// the part of the file a Range asked for. The verifier before it still sees, and checks, the whole file.
type window struct {
	w        io.Writer
	from, to int64
	off      int64 // offset of the next byte written
}

func (wi *window) Write(p []byte) (int, error) {
	n := len(p)
	start, end := wi.off, wi.off+int64(n) // [start, end)
	wi.off = end
	lo, hi := max(start, wi.from), min(end, wi.to+1)
	if lo >= hi {
		return n, nil
	}
	if _, err := wi.w.Write(p[lo-start : hi-start]); err != nil {
		return 0, err
	}
	return n, nil
}

// sizeCheck passes on bytes already hashed whole (a checked spool) and only checks that exactly size
// of them came: a spool is read while it is the package, never past it.
type sizeCheck struct {
	w    io.Writer
	size int64
	n    int64
}

func (c *sizeCheck) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.size {
		return 0, fmt.Errorf("%w: more than the %d bytes it lists", ErrMismatch, c.size)
	}
	c.n += int64(len(p))
	return c.w.Write(p)
}

func (c *sizeCheck) Finish() error {
	if c.n != c.size {
		return fmt.Errorf("%w: %d of %d bytes", ErrMismatch, c.n, c.size)
	}
	return nil
}

// writeStall is the default of Options.WriteStall.
const writeStall = 30 * time.Second

// stallWriter writes to an HTTP response with a write deadline renewed at every write, and keeps the
// write error: a failure of the client, not of the source.
type stallWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
	until time.Time // zero, or when the whole response must be out
	err   error
}

func (s *Server) newStallWriter(w http.ResponseWriter) *stallWriter {
	return &stallWriter{w: w, rc: http.NewResponseController(w), stall: s.opts.WriteStall}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	d := time.Now().Add(s.stall)
	if !s.until.IsZero() && s.until.Before(d) {
		d = s.until
	}
	_ = s.rc.SetWriteDeadline(d) // not every ResponseWriter has deadlines
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}
