package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// The agent picks what systemd passes it by name (FileDescriptorName=), an unnamed socket by its type,
// and refuses, naming it, a socket it does not know or a second one for the same use, closing all.
func TestPickListeners(t *testing.T) {
	unixLn := func() net.Listener {
		ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	tcpLn := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	for _, tc := range []struct {
		name            string
		named           map[string][]net.Listener
		control, mirror bool
		err             string
	}{
		{"none", map[string][]net.Listener{}, false, false, ""},
		{"both by name", map[string][]net.Listener{"control": {unixLn()}, "mirror": {tcpLn()}}, true, true, ""},
		{"control only", map[string][]net.Listener{"control": {unixLn()}}, true, false, ""},
		{"unnamed, by type", map[string][]net.Listener{"LISTEN_FD_3": {tcpLn()}, "LISTEN_FD_4": {unixLn()}}, true, true, ""},
		{"a name the agent does not know", map[string][]net.Listener{"control": {unixLn()}, "metrics": {tcpLn()}}, false, false, `socket "metrics"`},
		{"the mirror's name on a Unix socket", map[string][]net.Listener{"mirror": {unixLn()}}, false, false, `socket "mirror"`},
		{"two mirrors", map[string][]net.Listener{"mirror": {tcpLn(), tcpLn()}}, false, false, "two sockets passed by systemd for the mirror"},
		{"a named and an unnamed control", map[string][]net.Listener{"control": {unixLn()}, "LISTEN_FD_5": {unixLn()}}, false, false, "two sockets passed by systemd for the control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			control, web, err := pickListeners(tc.named)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				for name, lns := range tc.named {
					for _, ln := range lns {
						if _, aerr := ln.Accept(); aerr == nil || !strings.Contains(aerr.Error(), "closed") {
							t.Errorf("%s left open after the refusal: %v", name, aerr)
						}
					}
				}
				return
			}
			if err != nil || (control != nil) != tc.control || (web != nil) != tc.mirror {
				t.Fatalf("control %v, mirror %v, err %v: want %v, %v", control, web, err, tc.control, tc.mirror)
			}
		})
	}
}
