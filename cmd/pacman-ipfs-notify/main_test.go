package main

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
)

// FuzzReadTargets: whatever pacman (or anyone) pipes into the hook, the client's targets stay within the
// control protocol's size limit and hold no line breaks or blank names. The seeds run as a test.
func FuzzReadTargets(f *testing.F) {
	for _, s := range []string{"linux\nglibc\n", "", "\n\n\n", "a\r\nb", strings.Repeat("x", 70000), "\xff\xfe\n", strings.Repeat("pkg\n", 20000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := readTargets(strings.NewReader(in))
		size := 0
		for _, g := range got {
			if g == "" || strings.ContainsAny(g, "\n\r") || strings.TrimSpace(g) != g {
				t.Fatalf("target %q", g)
			}
			size += len(g) + 3
			_ = utf8.ValidString(g) // any bytes are passed on; JSON encoding replaces invalid UTF-8
		}
		if size > control.MaxRequest {
			t.Fatalf("%d bytes of targets exceed the request limit", size)
		}
	})
}
