package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/atomicfile"
	"os"
	"path/filepath"
)

// stateVersion changes when the state file's meaning does; an older file is then discarded, which costs
// one re-hash of the cache and nothing else.
const stateVersion = 1

// StateFile is the name of the seeder's state in its state directory.
const StateFile = "state.json"

// record is what the seeder remembers of one cache file between passes.
type record struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64
	Hashed       bool
	SHA256       digest
	Repo         string `json:",omitempty"` // set once the bytes matched this repo's db entry
	Why          string `json:",omitempty"` // why a signature the db does not carry was refused
}

// digest is a sha256 that reads as hex in the state file.
type digest [sha256.Size]byte

func (d digest) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(d[:])), nil }

func (d *digest) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(d) {
		return fmt.Errorf("sha256 %q: want %d hex digits", b, 2*len(d))
	}
	_, err := hex.Decode(d[:], b)
	return err
}

func (r *record) matches(s fileStat) bool {
	return r.Dev == s.Dev && r.Ino == s.Ino && r.Size == s.Size && r.Mtime == s.Mtime && r.Ctime == s.Ctime
}

// state is the seeder's memory: hash results by file identity, and the CIDs learned for large files.
// Losing it loses nothing but time: the next pass re-hashes and re-adds (adds of pinned content are
// idempotent).
type state struct {
	Version int
	Files   map[string]*record // by absolute path
	CIDs    map[string]string  // sha256 (hex) to CID, for files of more than one block
	Last    *Report            `json:",omitempty"`
	// The index last written to the node, and a fingerprint of what it holds.
	Index, IndexSum, IndexName string `json:",omitempty"`
	// BrokenRefs is what the last reference check left unrepaired: the next pass checks again.
	BrokenRefs int `json:",omitempty"`
	// Gone is when each of our pins that no file accounts for was first missed (CID to Unix seconds):
	// with Options.Retain it stays pinned until then plus Retain.
	Gone map[string]int64 `json:",omitempty"`
}

func newState() *state {
	return &state{Version: stateVersion, Files: map[string]*record{}, CIDs: map[string]string{}}
}

// loadState reads the state in dir. A missing, unreadable or outdated file yields an empty state and,
// for the unreadable case, an error the caller logs: it is never a reason to stop.
func loadState(dir string) (*state, error) {
	path := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return newState(), fmt.Errorf("read state %s: %w", path, err)
	}
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return newState(), fmt.Errorf("state %s is damaged, starting afresh: %w", path, err)
	}
	if st.Version != stateVersion {
		return newState(), nil
	}
	if st.Files == nil {
		st.Files = map[string]*record{}
	}
	if st.CIDs == nil {
		st.CIDs = map[string]string{}
	}
	return st, nil
}

// save writes the state atomically: a crash leaves the old file or the new one, never half of one.
func (st *state) save(dir string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(dir, StateFile), b)
}

// ReadLastReport returns the report of the last pass recorded in stateDir, or nil if there is none.
func ReadLastReport(stateDir string) (*Report, error) {
	st, err := loadState(stateDir)
	if err != nil {
		return nil, err
	}
	return st.Last, nil
}
