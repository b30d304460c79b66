package volume

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/store"
)

// Disks are a replica's open stores.
type Disks struct {
	Data *store.File
	// Meta is the external metadata file; nil for internal or none.
	Meta *store.File
	// Created is set when Open created the data disk or the external
	// metadata file just now: its metadata must be created before use.
	Created bool
}

// Close closes both stores.
func (d *Disks) Close() error {
	var errs []error
	if d.Data != nil {
		errs = append(errs, d.Data.Close())
	}
	if d.Meta != nil {
		errs = append(errs, d.Meta.Close())
	}
	return errors.Join(errs...)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// OpenDisks opens (creating them when the config says create = true) and
// locks the replica's data disk and external metadata file. o carries
// OnFail; Create, AtLeast and Lock are set here.
func OpenDisks(lr config.LocalReplica, o store.Options) (*Disks, error) {
	r := lr.Replica
	size, err := lr.DiskBytes()
	if err != nil {
		return nil, err
	}
	d := &Disks{}
	o.Create, o.Lock, o.AtLeast = r.Create, true, r.MetaInternal()
	d.Created = r.Create && !exists(r.Disk) && r.MetaInternal()
	if d.Data, err = store.Open(r.Disk, size, o); err != nil {
		return nil, err
	}
	if r.MetaExternal() {
		d.Created = r.Create && !exists(r.MetaDisk)
		mo := o
		mo.AtLeast = true
		if d.Meta, err = store.Open(r.MetaDisk, lr.MetaFileBytes(), mo); err != nil {
			d.Data.Close()
			return nil, fmt.Errorf("meta_disk: %w", err)
		}
	}
	return d, nil
}

// SpecFor describes the replica lr of cfg on its open disks.
func SpecFor(cfg *config.Config, lr config.LocalReplica, data Disk, dataBytes int64, md Disk) Spec {
	v, r := lr.Volume, lr.Replica
	s := Spec{
		Cluster: cfg.Cluster.Name, Volume: v.Name, Node: r.Node, SizeBytes: v.SizeBytes,
		Data: data, DataBytes: dataBytes, MetaPath: r.Disk,
		PeerSlots: v.PeerSlots, BytesPerBit: v.BytesPerBit, ALExtents: v.ALExtents,
	}
	if md != nil {
		s.Meta, s.MetaPath = md, r.MetaDisk
	}
	for _, p := range v.Replicas {
		if p.Node != r.Node {
			s.Peers = append(s.Peers, p.Node)
		}
	}
	return s
}

// Spec describes the replica on the open disks.
func (d *Disks) Spec(cfg *config.Config, lr config.LocalReplica) Spec {
	var md Disk
	if d.Meta != nil {
		md = d.Meta
	}
	return SpecFor(cfg, lr, d.Data, d.Data.Size(), md)
}

// ReadOnlyDisks opens the replica's disks for reading only (dump-md): it
// never writes, even by accident. inUse reports that another process (a
// running blkrepd) holds the disk.
func ReadOnlyDisks(cfg *config.Config, lr config.LocalReplica) (s Spec, closeFn func(), inUse bool, err error) {
	r := lr.Replica
	data, err := os.Open(r.Disk)
	if err != nil {
		return s, nil, false, err
	}
	size, err := data.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		data.Close()
		return s, nil, false, err
	}
	inUse, _ = store.InUse(r.Disk)
	closeFn = func() { data.Close() }
	var md Disk
	if r.MetaExternal() {
		f, err := os.Open(r.MetaDisk)
		if err != nil {
			data.Close()
			return s, nil, false, fmt.Errorf("meta_disk: %w", err)
		}
		md = ReadOnlyFile{f}
		closeFn = func() { data.Close(); f.Close() }
	}
	return SpecFor(cfg, lr, ReadOnlyFile{data}, size, md), closeFn, inUse, nil
}
