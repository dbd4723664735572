// Package ini reads the INI dialect of pacman.conf and of the mirrorlists it includes, as pacman's own
// reader does (src/common/ini.c): a '#' starts a comment anywhere on a line, lines are trimmed, "[name]"
// opens a section, and every other line is a key with an optional "= value". It is the one reader of
// that format here; what the keys mean (Include, Server, the options) is its callers' business.
//
// It reads only what it is given: no file system, no cgo, no libalpm.
package ini
