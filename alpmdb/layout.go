package alpmdb

import "strings"

// ArchDirs is where a package file goes in a mirror: its own architecture's directory, or every
// configured one for an "any" package, as on Arch's mirrors.
func ArchDirs(file string, arches []string) []string {
	base, _, _ := strings.Cut(file, ".pkg.tar")
	arch := base[strings.LastIndexByte(base, '-')+1:]
	if arch != "any" {
		return []string{arch}
	}
	if len(arches) == 0 {
		return []string{"x86_64"}
	}
	return arches
}
