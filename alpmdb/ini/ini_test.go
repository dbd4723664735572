package ini_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/ini"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // "section|header|key|value|hasValue"
		err      string
	}{
		{name: "empty", in: ""},
		{name: "comments and blanks", in: "# c\n\n   # c\n"},
		{name: "a key before any section", in: "Server = http://m/$repo\n", want: []string{"||Server|http://m/$repo|true"}},
		{name: "a section and keys", in: "[options]\nUseSyslog\n  CacheDir=/a /b # two\n",
			want: []string{"options|h|||false", "options||UseSyslog||false", "options||CacheDir|/a /b|true"}},
		{name: "the first = splits", in: "[x]\nServer = http://h/?a=b\n", want: []string{"x|h|||false", "x||Server|http://h/?a=b|true"}},
		{name: "a comment ends the value", in: "[x]\nServer = http://h/#frag\n", want: []string{"x|h|||false", "x||Server|http://h/|true"}},
		{name: "an unclosed header", in: "\n[core\n", err: "in:2: bad section header"},
		{name: "an empty header", in: "[]\n", err: "in:1: bad section header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var rd ini.Reader
			err := rd.Read("in", strings.NewReader(tt.in), func(e ini.Entry) error {
				h := ""
				if e.Header {
					h = "h"
				}
				got = append(got, strings.Join([]string{e.Section, h, e.Key, e.Value, map[bool]string{true: "true", false: "false"}[e.HasValue]}, "|"))
				return nil
			})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Read error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Read =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestReadSectionCarriesAcrossFiles(t *testing.T) {
	var rd ini.Reader
	var sections []string
	fn := func(e ini.Entry) error { sections = append(sections, e.Section); return nil }
	for _, in := range []string{"[core]\n", "Server = a\n[extra]\n", "Server = b\n"} {
		if err := rd.Read("f", strings.NewReader(in), fn); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(sections, ","); got != "core,core,extra,extra" {
		t.Errorf("sections = %s", got)
	}
}

func TestReadStopsAtTheCallersError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	var rd ini.Reader
	err := rd.Read("f", strings.NewReader("a\nb\nc\n"), func(ini.Entry) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Read = %v after %d entries, want stop after 1", err, n)
	}
}
