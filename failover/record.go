package failover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// State is what a node stores for one volume's failover: its voter record
// and the term whose acknowledged writes its replica holds. It lives in a
// small file of its own (StateFile), written with fsync and rename, so a
// crash leaves the old or the new version, never a mix.
type State struct {
	Version  int         `json:"version"`
	Cluster  string      `json:"cluster"`
	Volume   string      `json:"volume"`
	Node     string      `json:"node"`
	Voter    VoterRecord `json:"voter"`
	DataTerm uint64      `json:"data_term"`
}

const stateVersion = 1

// ErrBadState is wrapped by every error about a state file's content.
var ErrBadState = errors.New("failover: bad state file")

// LoadState reads a state file. A missing file is not an error: it returns
// a zero State for (cluster, volume, node) and found false. A file for
// another cluster, volume or node, or one that does not parse, is an
// error naming the file: blkrepd must not vote with somebody else's record.
func LoadState(path, cluster, volume, node string) (st State, found bool, err error) {
	st = State{Version: stateVersion, Cluster: cluster, Volume: volume, Node: node}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	var got State
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		return st, false, fmt.Errorf("%w %s: %v", ErrBadState, path, err)
	}
	switch {
	case got.Version != stateVersion:
		return st, false, fmt.Errorf("%w %s: version %d, this blkrepd reads version %d", ErrBadState, path, got.Version, stateVersion)
	case got.Cluster != cluster || got.Volume != volume || got.Node != node:
		return st, false, fmt.Errorf("%w %s: it belongs to cluster %q volume %q node %q, not cluster %q volume %q node %q",
			ErrBadState, path, got.Cluster, got.Volume, got.Node, cluster, volume, node)
	case got.Voter.VotedFor != "" && got.Voter.Term == 0,
		got.Voter.PrimaryTerm > got.Voter.Term,
		got.Voter.Primary == "" && got.Voter.PrimaryTerm != 0,
		!slices.IsSorted(got.Voter.Outdated):
		return st, false, fmt.Errorf("%w %s: inconsistent voter record %+v", ErrBadState, path, got.Voter)
	}
	return got, true, nil
}

// SaveState writes st to path durably: a temporary file in the same
// directory, fsynced, renamed over path, then the directory fsynced.
func SaveState(path string, st State) error {
	st.Version = stateVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
