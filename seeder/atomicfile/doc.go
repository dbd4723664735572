// Package atomicfile writes files that a crash leaves whole: the old content or the new, never half
// (temp file in the same directory, fsync, rename, fsync of the directory). It owns that one step and
// must never import another package of this project.
package atomicfile
