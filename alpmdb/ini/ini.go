package ini

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// maxLine bounds one line; pacman's own limit is PATH_MAX.
const maxLine = 1 << 20

// Entry is one meaningful line of a file.
type Entry struct {
	Line     int    // 1-based
	Section  string // the section the line is in; "" before the first header
	Header   bool   // the line is a section header (Section is its name)
	Key      string // the key of a non-header line
	Value    string // what follows the first '=', trimmed
	HasValue bool   // there was an '='
}

// Reader carries the current section from file to file, as pacman does: a file read through Include
// continues the section it was included from, and a header inside it changes the section for what
// follows the Include.
type Reader struct {
	Section string
}

// Read calls fn for every section header and key of r, in order, and stops at fn's first error. Errors
// of the format name the input and the line ("name:line: ...").
func (rd *Reader) Read(name string, r io.Reader, fn func(Entry) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for n := 1; sc.Scan(); n++ {
		e, ok, err := rd.parseLine(sc.Text(), n)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if !ok {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (rd *Reader) parseLine(line string, n int) (Entry, bool, error) {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return Entry{}, false, nil
	case strings.HasPrefix(line, "["):
		if !strings.HasSuffix(line, "]") || len(line) < 3 {
			return Entry{}, false, fmt.Errorf("bad section header %q", line)
		}
		rd.Section = line[1 : len(line)-1]
		return Entry{Line: n, Section: rd.Section, Header: true}, true, nil
	}
	key, value, has := strings.Cut(line, "=")
	return Entry{Line: n, Section: rd.Section, Key: strings.TrimSpace(key), Value: strings.TrimSpace(value), HasValue: has}, true, nil
}
