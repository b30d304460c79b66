package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/blkrep/blkrep/activelog"
	"github.com/blkrep/blkrep/internal/config"
	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/internal/store"
	"github.com/blkrep/blkrep/internal/volume"
)

// parseVolumeCmd parses "VOLUME [flags]" or "[flags] VOLUME".
func parseVolumeCmd(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name := rest[0]
		if err := fs.Parse(rest[1:]); err != nil {
			return "", err
		}
		if fs.NArg() > 0 {
			return "", fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
		}
		return name, nil
	}
	return "", errors.New("missing VOLUME")
}

// localReplica finds this node's replica of the named volume.
func localReplica(cfgPath, node, name string) (*config.Config, config.LocalReplica, error) {
	cfg, n, err := loadNode(cfgPath, node)
	if err != nil {
		return nil, config.LocalReplica{}, err
	}
	var names []string
	for _, lr := range cfg.LocalReplicas(n.Name) {
		if lr.Volume.Name == name {
			if lr.Replica.MetaNone() {
				return nil, lr, fmt.Errorf("volume %q has meta_disk = \"none\" on node %q: it has no metadata", name, n.Name)
			}
			return cfg, lr, nil
		}
		names = append(names, lr.Volume.Name)
	}
	if len(names) == 0 {
		return nil, config.LocalReplica{}, fmt.Errorf("node %q holds no volume in %s", n.Name, cfgPath)
	}
	return nil, config.LocalReplica{}, fmt.Errorf("node %q holds no volume %q (it holds: %s)", n.Name, name, strings.Join(names, ", "))
}

func createMD(args []string, cfgPath, node string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("create-md", flag.ContinueOnError)
	fs.SetOutput(stderr)
	force := fs.Bool("force", false, "replace existing metadata, or data where internal metadata goes")
	name, err := parseVolumeCmd(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "blkrep create-md: %v\nusage: blkrep create-md VOLUME [--force]\n", err)
		return 2
	}
	cfg, lr, err := localReplica(cfgPath, node, name)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep create-md:", err)
		return 2
	}
	disks, err := volume.OpenDisks(lr, store.Options{})
	if errors.Is(err, store.ErrInUse) {
		fmt.Fprintf(stderr, "blkrep create-md: %v: stop blkrepd on this node first\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "blkrep create-md:", err)
		return 1
	}
	defer disks.Close()
	spec := disks.Spec(cfg, lr)
	c, err := volume.Create(&spec, *force)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep create-md:", err)
		return 1
	}
	l := c.Layout
	fmt.Fprintf(stdout, "created metadata for volume %s on node %s\n", lr.Volume.Name, lr.Replica.Node)
	if lr.Replica.MetaExternal() {
		fmt.Fprintf(stdout, "  placement   external: %s (%d bytes); %s is exported whole\n", spec.MetaPath, l.AreaBytes, lr.Replica.Disk)
	} else {
		fmt.Fprintf(stdout, "  placement   internal: the last %d bytes (%s) of %s, from offset %d to its end (%d bytes)\n",
			l.AreaBytes, human(uint64(l.AreaBytes)), lr.Replica.Disk, l.AreaOffset, spec.DataBytes)
		fmt.Fprintf(stdout, "              data must end before offset %d; the volume exports the first %d bytes\n", l.AreaOffset, spec.SizeBytes)
	}
	fmt.Fprintf(stdout, "  size        %s (%d bytes) exported\n", human(uint64(spec.SizeBytes)), spec.SizeBytes)
	fmt.Fprintf(stdout, "  bitmaps     %d peer slots, %s per bit (%s per slot, on disk and in memory)\n",
		l.PeerSlots, human(uint64(l.BytesPerBit)), human(uint64(l.BitmapBytes)))
	ext := lr.Volume.ALExtents
	fmt.Fprintf(stdout, "  activity    %d extents of 4 MiB (a hot set of %s), ring of %d records\n",
		ext, human(uint64(ext)*activelog.ExtentSize), l.ALRecords)
	if c.Replaced {
		fmt.Fprintln(stdout, "  replaced    the previous metadata: its bitmaps and generation identifiers are gone; every peer needs a full resync")
	}
	if c.DataOverwritten {
		fmt.Fprintf(stdout, "  WARNING     the metadata area held data, which was overwritten (--force)\n")
	}
	return 0
}

func dumpMD(args []string, cfgPath, node string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dump-md", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the dump as JSON (schema "+volume.SchemaDump+")")
	name, err := parseVolumeCmd(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "blkrep dump-md: %v\nusage: blkrep dump-md VOLUME [--json]\n", err)
		return 2
	}
	cfg, lr, err := localReplica(cfgPath, node, name)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep dump-md:", err)
		return 2
	}
	spec, closeFn, inUse, err := volume.ReadOnlyDisks(cfg, lr)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep dump-md:", err)
		return 1
	}
	defer closeFn()
	d, err := volume.Inspect(&spec)
	if err != nil {
		fmt.Fprintln(stderr, "blkrep dump-md:", err)
		return 1
	}
	d.InUse = inUse
	if *asJSON {
		return printJSON(stdout, stderr, d)
	}
	printDump(stdout, d)
	return 0
}

func printDump(w io.Writer, d *volume.Dump) {
	fmt.Fprintf(w, "volume %s on node %s: %s metadata in %s\n", d.Volume, d.Node, d.Placement, d.Path)
	if d.InUse {
		fmt.Fprintln(w, "NOTE: a running blkrepd holds this disk; bits it has not yet written back are not shown")
	}
	for _, p := range d.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
	sb := d.Superblock
	fmt.Fprintf(w, "superblock   format %d, copy %d in use (seq %d)", sb.FormatVersion, sb.CopyUsed, sb.Seq)
	if e := sb.CopyErrors[1-sb.CopyUsed]; e != "" {
		fmt.Fprintf(w, "; copy %d unusable: %s", 1-sb.CopyUsed, e)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "volume uuid  %s\n", sb.VolumeUUID)
	fmt.Fprintf(w, "size         %s (%d bytes) exported; metadata computed for a device of %d bytes\n", human(uint64(sb.SizeBytes)), sb.SizeBytes, sb.DeviceBytes)
	fmt.Fprintf(w, "flags        %s\n", orNone(strings.Join(d.Flags, ", ")))
	fmt.Fprintf(w, "generation   current %s; history %s\n", d.Current, orNone(strings.Join(d.History, " ")))
	l := d.Layout
	fmt.Fprintf(w, "layout       area of %d bytes at offset %d: activity log %d records at %d, bitmaps %d slots x %d pages at %d\n",
		l.AreaBytes, l.AreaOffset, l.ALRecords, l.ALOffset, l.PeerSlots, l.BitmapPages, l.BitmapOffset)
	fmt.Fprintf(w, "bitmaps      %s per bit", human(uint64(d.BytesPerBit)))
	if d.BadBitmapPages > 0 {
		fmt.Fprintf(w, "; %d pages failed their checksum (counted all out of sync)", d.BadBitmapPages)
	}
	fmt.Fprintln(w)
	printPeers(w, "  ", d.Peers)
	al := d.ActivityLog
	state := "clean (shut down cleanly)"
	if !al.Clean {
		state = "NOT clean (crash: every hot extent is out of sync with every peer)"
	}
	if al.Error != "" {
		state = "UNRECOVERABLE: " + al.Error
	}
	fmt.Fprintf(w, "activity log %d extents of 4 MiB; newest record seq %d; %s; records: %d valid, %d blank, %d corrupt\n",
		al.Extents, al.NewestSeq, state, al.Valid, al.Blank, al.Corrupt)
	var total int64
	ext := make([]uint64, len(al.Hot))
	for i, h := range al.Hot {
		ext[i] = h.Extent
		total += h.Bytes
	}
	fmt.Fprintf(w, "  hot        %d extents (%s): %s\n", len(al.Hot), human(uint64(total)), orNone(ranges(ext)))
}

func printPeers(w io.Writer, indent string, peers []control.PeerSlot) {
	for _, p := range peers {
		name := p.Node
		if name == "" {
			name = "(unused)"
		}
		fmt.Fprintf(w, "%sslot %d  %-12s out of sync %s (%d bytes)  bitmap id %s", indent, p.Slot, name, human(uint64(p.DirtyBytes)), p.DirtyBytes, p.BitmapID)
		if len(p.Flags) > 0 {
			fmt.Fprintf(w, "  [%s]", strings.Join(p.Flags, ", "))
		}
		fmt.Fprintln(w)
	}
}

func printMetadata(w io.Writer, size int64, m *control.Metadata) {
	if m.Placement == "internal" {
		fmt.Fprintf(w, "    metadata internal: the last %s of the %d-byte disk; %d bytes exported\n", human(uint64(m.AreaBytes)), m.DiskBytes, size)
	} else {
		fmt.Fprintf(w, "    metadata external in %s (%s); the %d-byte disk is exported whole\n", m.Path, human(uint64(m.AreaBytes)), m.DiskBytes)
	}
	fmt.Fprintf(w, "             flags %s; generation %s; last shutdown %s\n", orNone(strings.Join(m.Flags, ", ")), m.Current, m.LastShutdown)
	if m.Error != "" {
		fmt.Fprintf(w, "             FAILED: %s\n", m.Error)
	}
	a := m.ActivityLog
	fmt.Fprintf(w, "    al       %d/%d hot extents, %d writes in flight, %d waiting; %d log writes, %d evictions\n",
		a.Hot, a.Extents, a.InFlight, a.Waiting, a.Writes, a.Evictions)
	fmt.Fprintf(w, "    bitmap   %s per bit; %d page writes, %d superblock writes since start\n", human(uint64(m.BytesPerBit)), m.BitmapPageWrites, m.SuperblockWrites)
	printPeers(w, "             ", m.Peers)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// ranges prints sorted numbers compactly: "0-3, 7, 12-15".
func ranges(xs []uint64) string {
	var parts []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(xs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", xs[i], xs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
