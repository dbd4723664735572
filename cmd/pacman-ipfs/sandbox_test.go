package main

import (
	"slices"
	"testing"
)

// Only mirrors off this machine make the agent ask whether the unit forbids the network.
func TestRemoteHosts(t *testing.T) {
	got := remoteHosts([]string{
		"http://127.0.0.1:7878/$repo/os/$arch", "http://localhost/$repo/os/$arch", "http://[::1]:80/$repo",
		"file:///srv/mirror/$repo/os/$arch", "https://geo.mirror.pkgbuild.com/$repo/os/$arch",
		"http://10.99.0.1/$repo/os/$arch", "http://[2001:db8::1]:8080/$repo",
	})
	want := []string{"geo.mirror.pkgbuild.com", "10.99.0.1", "2001:db8::1"}
	if !slices.Equal(got, want) {
		t.Errorf("remoteHosts = %q, want %q", got, want)
	}
}
