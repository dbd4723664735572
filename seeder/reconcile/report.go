package reconcile

import "time"

// Report is what one pass did and found. It is kept in the state directory for `status`.
type Report struct {
	Started     time.Time            `json:"started"`
	PinPrefix   string               `json:"pin_prefix,omitempty"` // the seeder's own pin names, when not the cache's
	Duration    time.Duration        `json:"duration_ns"`
	Dirs        []DirReport          `json:"cache_dirs"`
	DBs         []DBReport           `json:"dbs"`
	Added       int                  `json:"added"`
	AddedBytes  int64                `json:"added_bytes"`
	Seeded      int                  `json:"already_seeded"` // already pinned before this pass
	Unpinned    int                  `json:"unpinned"`
	Retained    int                  `json:"retained,omitempty"`   // pins kept after their file left (Options.Retain)
	Refused     []FileNote           `json:"refused"`              // not publishable: normal, and said why
	Failed      []FileNote           `json:"failed"`               // could not be seeded this time: the pass did not converge
	Repos       map[string]RepoCount `json:"repos"`                // what is seeded after the pass, per repository
	CopiedBytes int64                `json:"copied_bytes"`         // bytes of seeded files stored a second time in the node (not zero-copy)
	Index       string               `json:"index,omitempty"`      // /ipfs/<cid> of the mirror-shaped index of what is seeded
	IndexName   string               `json:"index_name,omitempty"` // /ipns/<name> it is published under, when it is
	HashedBytes int64                `json:"hashed_bytes"`         // bytes read to verify checksums in this pass
	// Zero copy: pins added again because their blocks were referenced from a file that left the cache,
	// and references into the CacheDirs still pointing at no seeded file after that (unreadable blocks).
	RepairedRefs int `json:"repaired_refs,omitempty"`
	BrokenRefs   int `json:"broken_refs"`
}

// DirReport describes one CacheDir.
type DirReport struct {
	Dir    string `json:"dir"`
	NoCopy bool   `json:"zero_copy"` // files are referenced in place by the node's filestore
	Why    string `json:"mode"`      // why or why not
	Files  int    `json:"entries"`
	Err    string `json:"error,omitempty"`
}

// DBReport describes one sync db.
type DBReport struct {
	Repo     string `json:"repo"`
	Path     string `json:"path"`
	Packages int    `json:"packages"`
	Err      string `json:"error,omitempty"`
}

// FileNote names a file and what happened to it.
type FileNote struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// RepoCount is what is seeded from one repository.
type RepoCount struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Converged says whether every verifiable file is seeded and nothing else of ours is pinned.
func (r *Report) Converged() bool {
	if len(r.Failed) > 0 || r.BrokenRefs > 0 {
		return false
	}
	for _, d := range r.Dirs {
		if d.Err != "" {
			return false
		}
	}
	return true
}

func (r *Report) count(sd seed) {
	rc := r.Repos[sd.Repo]
	rc.Files++
	rc.Bytes += sd.size()
	r.Repos[sd.Repo] = rc
	if !sd.NoCopy {
		r.CopiedBytes += sd.size()
	}
}
