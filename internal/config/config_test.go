package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testDir = "/etc/blkrep"

// minimal is the smallest valid file; tests append to it or replace parts of it.
const minimal = `
[[node]]
name = "alpha"

[[volume]]
name = "r0"
size = "1MiB"

  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
`

// twoNodes has nodes alpha and beta, and no volume.
const twoNodes = `
[[node]]
name = "alpha"
[[node]]
name = "beta"
`

// vol returns a volume table named name with one replica on node and the given
// extra replica keys.
func vol(name, node, replicaKeys string) string {
	return `
[[volume]]
name = "` + name + `"
size = "1MiB"
  [[volume.replica]]
  node = "` + node + `"
  disk = "` + node + `-` + name + `.img"
` + replicaKeys + "\n"
}

// volKeys returns a volume r0 on alpha with the given extra volume keys.
func volKeys(volumeKeys string) string {
	return `
[[node]]
name = "alpha"
[[volume]]
name = "r0"
` + volumeKeys + `
  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
`
}

// volSize returns minimal with the volume's size line replaced.
func volSize(sizeLine string) string {
	return strings.Replace(minimal, `size = "1MiB"`, sizeLine, 1)
}

// parseErrorCases: each input must fail to parse with an error whose text holds
// every string in want and which matches every sentinel in is (ErrInvalid always).
var parseErrorCases = []struct {
	name string
	toml string
	want []string
	is   []error
}{
	// Syntax and structure.
	{"syntax", "[[node]\nname = 1\n", []string{"config: line 2: expected end of table array name"}, nil},
	{"duplicate key", minimal + "[cluster]\nname = \"a\"\nname = \"b\"\n", []string{"config: line", "name"}, nil},
	{"node as table", "[node]\nname = \"alpha\"\n" + vol("r0", "alpha", ""), []string{`config: node: must be written as [[node]], not as a table`}, nil},
	{"volume as value", "volume = 3\n[[node]]\nname = \"alpha\"\n", []string{`config: volume: must be written as [[volume]], not as an integer`}, nil},
	{"replica as table", "[[node]]\nname = \"alpha\"\n[[volume]]\nname = \"r0\"\nsize = 4096\n[volume.replica]\nnode = \"alpha\"\ndisk = \"x\"\n", []string{`config: volume.replica: must be written as [[volume.replica]], not as a table`}, nil},
	{"replica defined twice", volKeys(`size = "1MiB"`) + "\n[volume.replica]\nnode = \"alpha\"\n", []string{"config: line 11: Key 'volume.replica' has already been defined."}, nil},

	// Unknown keys.
	{"unknown top-level key", "foo = 1\n" + minimal, []string{`config: unknown key "foo"`}, []error{ErrUnknownKey}},
	{"unknown table", "[foo]\nbar = 1\nbaz = 2\n" + minimal, []string{`config: unknown key "foo" (known top-level keys: cluster, node, volume)`}, []error{ErrUnknownKey}},
	{"unknown cluster key", "[cluster]\nnmae = \"x\"\n" + minimal, []string{`config: unknown key "cluster.nmae" (did you mean "cluster.name"?)`}, []error{ErrUnknownKey}},
	{"unknown node key", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\ncontrol_sock = \"a.ctl\"", 1), []string{`config: unknown key "node.control_sock" (did you mean "node.control_socket"?)`}, []error{ErrUnknownKey}},
	{"unknown volume key", volKeys("size = \"1MiB\"\nblocksize = 512"), []string{`config: unknown key "volume.blocksize" (did you mean "volume.block_size"?)`}, []error{ErrUnknownKey}},
	{"unknown replica key", strings.Replace(minimal, `disk = `, `dsk = `, 1), []string{`config: unknown key "volume.replica.dsk" (did you mean "volume.replica.disk"?)`, `config: volume "r0" replica for node "alpha": disk: is required`}, []error{ErrUnknownKey}},
	{"key with wrong case", strings.Replace(minimal, `name = "alpha"`, `Name = "alpha"`, 1), []string{`config: unknown key "node.Name" (keys are case-sensitive: did you mean "node.name"?)`}, []error{ErrUnknownKey}},
	{"table with wrong case", strings.Replace(minimal, `[[volume.replica]]`, `[[volume.Replica]]`, 1), []string{`config: unknown key "volume.Replica"`}, []error{ErrUnknownKey}},

	// [cluster]
	{"cluster name upper case", "[cluster]\nname = \"Prod\"\n" + minimal, []string{`config: cluster: name: "Prod" must match [a-z0-9_-]+`}, nil},
	{"cluster name empty", "[cluster]\nname = \"\"\n" + minimal, []string{`config: cluster: name: "" must match`}, nil},
	{"cluster name type", "[cluster]\nname = 5\n" + minimal, []string{`config: cluster: name: must be a string, not an integer`}, nil},

	// [[node]]
	{"no node", vol("r0", "alpha", ""), []string{`config: node: at least one [[node]] is required`}, nil},
	{"node name missing", "[[node]]\nnbd_tcp = \":10809\"\n" + minimal, []string{`config: node #1: name: is required`}, nil},
	{"node name invalid", strings.Replace(minimal, `name = "alpha"`, `name = "al pha"`, 1), []string{`config: node #1: name: "al pha" must be 1 to 63 of A-Z a-z 0-9 _ . -`}, nil},
	{"node name too long", strings.Replace(minimal, `name = "alpha"`, `name = "`+strings.Repeat("a", 64)+`"`, 1), []string{`config: node #1: name: "aaaa`, "must be 1 to 63"}, nil},
	{"node name type", strings.Replace(minimal, `name = "alpha"`, `name = true`, 1), []string{`config: node #1: name: must be a string, not a boolean`}, nil},
	{"duplicate node", twoNodes + "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", ""), []string{`config: node "alpha": name: node "alpha" is declared twice (node #1 and #3)`}, nil},
	{"bad tables", "cluster = [{name = \"x\"}]\n" + minimal, []string{`config: cluster: must be written as [cluster], not as an array`}, nil},
	{"control_socket empty", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\ncontrol_socket = \"\"", 1), []string{`config: node "alpha": control_socket: must not be empty`}, nil},
	{"control_socket too long", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\ncontrol_socket = \""+strings.Repeat("s", 100)+"\"", 1), []string{`config: node "alpha": control_socket: unix socket path /etc/blkrep/sss`, "is 112 bytes long; the limit is 107"}, nil},
	{"duplicate control_socket", twoNodes + vol("r0", "alpha", ""), nil, nil}, // placeholder, replaced in init
	{"control_socket clashes with default", strings.Replace(twoNodes, `name = "beta"`, "name = \"beta\"\ncontrol_socket = \"/etc/blkrep/alpha.ctl\"", 1) + vol("r0", "alpha", ""), []string{`config: node "beta": control_socket: unix socket /etc/blkrep/alpha.ctl is also the control_socket (default) of node "alpha"`}, nil},
	{"nbd_tcp no port", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"10809\"", 1), []string{`config: node "alpha": nbd_tcp: "10809": must be host:port (missing port in address)`}, nil},
	{"nbd_tcp port 0", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"127.0.0.1:0\"", 1), []string{`config: node "alpha": nbd_tcp: "127.0.0.1:0": port "0" must be a number from 1 to 65535`}, nil},
	{"nbd_tcp port too big", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"127.0.0.1:65536\"", 1), []string{`nbd_tcp: "127.0.0.1:65536": port "65536" must be a number from 1 to 65535`}, nil},
	{"nbd_tcp port name", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"localhost:nbd\"", 1), []string{`nbd_tcp: "localhost:nbd": port "nbd" must be a number`}, nil},
	{"nbd_tcp bad host", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"a_b:10809\"", 1), []string{`nbd_tcp: "a_b:10809": host "a_b" is neither an IP address nor a host name`}, nil},
	{"nbd_tcp type", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = 10809", 1), []string{`config: node "alpha": nbd_tcp: must be a string, not an integer`}, nil},
	{"duplicate nbd_tcp", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"127.0.0.1:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \"127.0.0.1:10809\"", 1) + vol("r0", "alpha", ""), []string{`config: node "beta": nbd_tcp: 127.0.0.1:10809 clashes with nbd_tcp of node "alpha" (127.0.0.1:10809)`}, nil},
	{"nbd_tcp wildcard first", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"0.0.0.0:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \"10.0.0.2:10809\"", 1) + vol("r0", "alpha", ""), []string{`config: node "beta": nbd_tcp: 10.0.0.2:10809 clashes with nbd_tcp of node "alpha" (0.0.0.0:10809)`}, nil},
	{"nbd_tcp wildcard second", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"localhost:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \":10809\"", 1) + vol("r0", "alpha", ""), []string{`config: node "beta": nbd_tcp: :10809 clashes with nbd_tcp of node "alpha" (localhost:10809)`}, nil},
	{"nbd_tcp ipv6 wildcard", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"[::]:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \"[::1]:10809\"", 1) + vol("r0", "alpha", ""), []string{`nbd_tcp: [::1]:10809 clashes with nbd_tcp of node "alpha" ([::]:10809)`}, nil},
	{"nbd_tcp same address spelt twice", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"[::ffff:127.0.0.1]:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \"127.0.0.1:10809\"", 1) + vol("r0", "alpha", ""), []string{`nbd_tcp: 127.0.0.1:10809 clashes`}, nil},

	// [[volume]]
	{"no volume", "[[node]]\nname = \"alpha\"\n", []string{`config: volume: at least one [[volume]] is required`}, nil},
	{"volume name missing", "[[node]]\nname = \"alpha\"\n[[volume]]\nsize = 4096\n[[volume.replica]]\nnode = \"alpha\"\ndisk = \"a\"\n", []string{`config: volume #1: name: is required`}, nil},
	{"volume name invalid", strings.Replace(minimal, `name = "r0"`, `name = "r0/x"`, 1), []string{`config: volume #1: name: "r0/x" must be 1 to 63`}, nil},
	{"duplicate volume", minimal + vol("r0", "alpha", `  disk = "other.img"`), nil, nil}, // placeholder, replaced in init
	{"size missing", volKeys(""), []string{`config: volume "r0": size: is required`}, nil},
	{"size not aligned int", volSize(`size = 1000`), []string{`config: volume "r0": size: 1000 bytes is not a multiple of 4096`}, nil},
	{"size not aligned string", volSize(`size = "1000KB"`), []string{`config: volume "r0": size: "1000KB" (1000000 bytes) is not a multiple of 4096`}, nil},
	{"size zero", volSize(`size = 0`), []string{`config: volume "r0": size: 0 bytes must be positive`}, nil},
	{"size zero string", volSize(`size = "0MiB"`), []string{`config: volume "r0": size: "0MiB" (0 bytes) must be positive`}, nil},
	{"size negative", volSize(`size = -4096`), []string{`config: volume "r0": size: -4096 bytes must be positive`}, nil},
	{"size bad unit", volSize(`size = "1XB"`), []string{`config: volume "r0": size: invalid size "1XB": unknown unit "XB"`}, []error{ErrSize}},
	{"size fraction", volSize(`size = "1.5GiB"`), []string{`config: volume "r0": size: invalid size "1.5GiB": must be a whole number`}, []error{ErrSize}},
	{"size overflow", volSize(`size = "9999999999TiB"`), []string{`config: volume "r0": size: invalid size "9999999999TiB": too large`}, []error{ErrSize}},
	{"size float", volSize(`size = 1.5`), []string{`config: volume "r0": size: must be an integer number of bytes or a string such as "256MiB", not a float`}, nil},
	{"description too long", volKeys("size = 4096\ndescription = \"" + strings.Repeat("d", 4097) + "\""), []string{`config: volume "r0": description: is 4097 bytes long; the limit is 4096`}, nil},
	{"description type", volKeys("size = 4096\ndescription = [1]"), []string{`config: volume "r0": description: must be a string, not an array`}, nil},
	{"block_size not power of two", volKeys("size = 4096\nblock_size = 1000"), []string{`config: volume "r0": block_size: 1000 must be a power of two from 512 to 4096`}, nil},
	{"block_size too big", volKeys("size = 4096\nblock_size = 8192"), []string{`block_size: 8192 must be a power of two from 512 to 4096`}, nil},
	{"block_size too small", volKeys("size = 4096\nblock_size = 256"), []string{`block_size: 256 must be a power of two`}, nil},
	{"block_size string", volKeys("size = 4096\nblock_size = \"4096\""), []string{`config: volume "r0": block_size: must be an integer, not a string`}, nil},
	{"device_timeout invalid", volKeys("size = 4096\ndevice_timeout = \"30\""), []string{`config: volume "r0": device_timeout: invalid duration "30" (use a Go duration such as "30s" or "2m")`}, nil},
	{"device_timeout negative", volKeys("size = 4096\ndevice_timeout = \"-1s\""), []string{`config: volume "r0": device_timeout: -1s must not be negative`}, nil},
	{"device_timeout fraction", volKeys("size = 4096\ndevice_timeout = \"1500ms\""), []string{`config: volume "r0": device_timeout: 1.5s must be a whole number of seconds`}, nil},
	{"device_timeout integer", volKeys("size = 4096\ndevice_timeout = 30"), []string{`config: volume "r0": device_timeout: 30 has no unit: use a string such as "30s"`}, nil},
	{"device_timeout bool", volKeys("size = 4096\ndevice_timeout = true"), []string{`config: volume "r0": device_timeout: must be a duration string such as "30s", not a boolean`}, nil},
	{"dead_conn_timeout invalid", volKeys("size = 4096\ndead_conn_timeout = \"2 minutes\""), []string{`config: volume "r0": dead_conn_timeout: invalid duration "2 minutes"`}, nil},
	{"dead_conn_timeout negative", volKeys("size = 4096\ndead_conn_timeout = \"-2m\""), []string{`config: volume "r0": dead_conn_timeout: -2m0s must not be negative`}, nil},
	{"no replica", "[[node]]\nname = \"alpha\"\n[[volume]]\nname = \"r0\"\nsize = 4096\n", []string{`config: volume "r0": replica: at least one [[volume.replica]] is required`}, nil},

	// [[volume.replica]]
	{"replica node missing", strings.Replace(minimal, `node = "alpha"`, ``, 1), []string{`config: volume "r0" replica #1: node: is required`}, nil},
	{"replica node empty", strings.Replace(minimal, `node = "alpha"`, `node = ""`, 1), []string{`config: volume "r0" replica #1: node: must not be empty`}, nil},
	{"replica unknown node", twoNodes + vol("r0", "gamma", ""), []string{`config: volume "r0" replica for node "gamma": node: no [[node]] is called "gamma" (known nodes: "alpha", "beta")`}, []error{ErrUnknownNode}},
	{"two replicas on one node", minimal + "  [[volume.replica]]\n  node = \"alpha\"\n  disk = \"other.img\"\n", []string{`config: volume "r0" replica for node "alpha": node: volume "r0" already has a replica on node "alpha"`}, nil},
	{"disk missing", strings.Replace(minimal, `disk = "alpha-r0.img"`, ``, 1), []string{`config: volume "r0" replica for node "alpha": disk: is required`}, nil},
	{"disk empty", strings.Replace(minimal, `disk = "alpha-r0.img"`, `disk = ""`, 1), []string{`config: volume "r0" replica for node "alpha": disk: must not be empty`}, nil},
	{"disk NUL", strings.Replace(minimal, `disk = "alpha-r0.img"`, `disk = "a\u0000b"`, 1), []string{`disk: path "a\x00b" contains a NUL byte`}, nil},
	{"create type", minimal + "  create = \"yes\"\n", []string{`config: volume "r0" replica for node "alpha": create: must be true or false, not a string`}, nil},
	{"duplicate disk on a node", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  disk = "/srv/same.img"`) + vol("r1", "alpha", `  disk = "../../srv/same.img"`), nil, nil}, // placeholder
	{"nbd_socket empty", minimal + "  nbd_socket = \"\"\n", []string{`config: volume "r0" replica for node "alpha": nbd_socket: must not be empty`}, nil},
	{"nbd_socket is a control socket", minimal + "  nbd_socket = \"alpha.ctl\"\n", []string{`config: volume "r0" replica for node "alpha": nbd_socket: unix socket /etc/blkrep/alpha.ctl is also the control_socket (default) of node "alpha"`}, nil},
	{"duplicate nbd_socket", twoNodes + vol("r0", "alpha", `  nbd_socket = "nbd.sock"`) + vol("r1", "beta", `  nbd_socket = "./sub/../nbd.sock"`), []string{`config: volume "r1" replica for node "beta": nbd_socket: unix socket /etc/blkrep/nbd.sock is also the nbd_socket of volume "r0" replica for node "alpha"`}, nil},
	{"duplicate nbd_socket absolute", twoNodes + vol("r0", "alpha", `  nbd_socket = "nbd.sock"`) + vol("r1", "beta", `  nbd_socket = "/etc/blkrep//nbd.sock"`), []string{`nbd_socket: unix socket /etc/blkrep/nbd.sock is also the nbd_socket of volume "r0"`}, nil},
	{"nbd_socket too long", minimal + "  nbd_socket = \"/" + strings.Repeat("x", 107) + "\"\n", []string{`nbd_socket: unix socket path /xxx`, "is 108 bytes long; the limit is 107"}, nil},
	{"device invalid", minimal + "  device = \"/dev/sda\"\n", []string{`config: volume "r0" replica for node "alpha": device: "/dev/sda" must be a kernel NBD device, /dev/nbdN`}, nil},
	{"device relative", minimal + "  device = \"nbd0\"\n", []string{`device: "nbd0" must be a kernel NBD device`}, nil},
	{"device type", minimal + "  device = 0\n", []string{`device: must be a string, not an integer`}, nil},
	{"duplicate device on a node", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  device = "/dev/nbd3"`) + vol("r1", "alpha", `  device = "/dev/nbd3"`), []string{`config: volume "r1" replica for node "alpha": device: /dev/nbd3 on node "alpha" is also the device of volume "r0"`}, nil},
	{"disk is a device of the node", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  device = "/dev/nbd3"`) + vol("r1", "alpha", `  disk = "/dev/nbd3"`), nil, nil}, // placeholder

	// Metadata: [[volume]] bytes_per_bit, al_extents, peer_slots.
	{"bytes_per_bit not power of two", volKeys("size = 4096\nbytes_per_bit = \"6KiB\""), []string{`config: volume "r0": bytes_per_bit: "6KiB" (6144 bytes) must be a power of two from 4096 (4KiB) to 1048576 (1MiB)`}, nil},
	{"bytes_per_bit too small", volKeys("size = 4096\nbytes_per_bit = 2048"), []string{`config: volume "r0": bytes_per_bit: 2048 bytes must be a power of two from 4096 (4KiB) to 1048576 (1MiB)`}, nil},
	{"bytes_per_bit too big", volKeys("size = 4096\nbytes_per_bit = \"2MiB\""), []string{`bytes_per_bit: "2MiB" (2097152 bytes) must be a power of two from 4096`}, nil},
	{"bytes_per_bit zero", volKeys("size = 4096\nbytes_per_bit = 0"), []string{`bytes_per_bit: 0 bytes must be a power of two`}, nil},
	{"bytes_per_bit negative", volKeys("size = 4096\nbytes_per_bit = -4096"), []string{`bytes_per_bit: -4096 bytes must be a power of two`}, nil},
	{"bytes_per_bit bad unit", volKeys("size = 4096\nbytes_per_bit = \"4KiBs\""), []string{`config: volume "r0": bytes_per_bit: invalid size "4KiBs": unknown unit "KiBs"`}, []error{ErrSize}},
	{"bytes_per_bit float", volKeys("size = 4096\nbytes_per_bit = 4096.0"), []string{`config: volume "r0": bytes_per_bit: must be an integer number of bytes or a string such as "4KiB", not a float`}, nil},
	{"bytes_per_bit bool", volKeys("size = 4096\nbytes_per_bit = true"), []string{`bytes_per_bit: must be an integer number of bytes or a string such as "4KiB", not a boolean`}, nil},
	{"al_extents zero", volKeys("size = 4096\nal_extents = 0"), []string{`config: volume "r0": al_extents: 0 is out of range: it must be from 1 to 65536`}, nil},
	{"al_extents too big", volKeys("size = 4096\nal_extents = 65537"), []string{`config: volume "r0": al_extents: 65537 is out of range: it must be from 1 to 65536`}, nil},
	{"al_extents string", volKeys("size = 4096\nal_extents = \"1237\""), []string{`config: volume "r0": al_extents: must be an integer, not a string`}, nil},
	{"al_extents float", volKeys("size = 4096\nal_extents = 1e3"), []string{`al_extents: must be an integer, not a float`}, nil},
	{"peer_slots too small", volKeys("size = 4096\npeer_slots = 2"), []string{`config: volume "r0": peer_slots: 2 is out of range: it must be from 3 to 32`}, nil},
	{"peer_slots too big", volKeys("size = 4096\npeer_slots = 33"), []string{`config: volume "r0": peer_slots: 33 is out of range: it must be from 3 to 32`}, nil},
	{"peer_slots string", volKeys("size = 4096\npeer_slots = \"3\""), []string{`config: volume "r0": peer_slots: must be an integer, not a string`}, nil},
	{"peer_slots fewer than peers", replicated(5, "peer_slots = 3"), []string{`config: volume "r0": peer_slots: 3 is fewer than the 4 peers of a volume with 5 replicas (each replica keeps a bitmap for every other one); set peer_slots = 4 or more`}, nil},
	{"default peer_slots fewer than peers", replicated(5, ""), []string{`config: volume "r0": peer_slots: the default of 3 is fewer than the 4 peers of a volume with 5 replicas (each replica keeps a bitmap for every other one); set peer_slots = 4 or more`}, nil},
	{"too many replicas", replicated(34, "peer_slots = 32"), []string{`config: volume "r0": replica: a volume has at most 33 replicas (one more than the largest peer_slots, 32), not 34`}, nil},
	{"size too large for internal metadata", volSize(`size = "8388607TiB"`), []string{`config: volume "r0": size: 9223370937343148032 bytes is too large to hold with internal metadata: with the metadata area, the disk would exceed 9223372036854775807 bytes; use external metadata (meta_disk = "<path>") or a smaller size`}, nil},

	// Metadata: [[volume.replica]] meta_disk.
	{"meta_disk type", minimal + "  meta_disk = 1\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: must be a string, not an integer`}, nil},
	{"meta_disk empty", minimal + "  meta_disk = \"\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: must not be empty (leave the key out instead)`}, nil},
	{"meta_disk NUL", minimal + "  meta_disk = \"a\\u0000b\"\n", []string{`meta_disk: path "a\x00b" contains a NUL byte`}, nil},
	{"meta_disk keyword case", minimal + "  meta_disk = \"Internal\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: "Internal" is neither "internal" nor "none" (for a metadata file of that name, write "./Internal")`}, nil},
	{"meta_disk keyword spaces", minimal + "  meta_disk = \"none \"\n", []string{`meta_disk: "none " is neither "internal" nor "none"`}, nil},
	{"meta_disk none replicated", twoNodes + vol("r0", "alpha", `  meta_disk = "none"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: "none": a volume without metadata cannot be replicated (volume "r0" has 2 replicas); use "internal" or a metadata file`}, nil},
	{"meta_disk is its own disk", minimal + "  meta_disk = \"./alpha-r0.img\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: /etc/blkrep/alpha-r0.img on node "alpha" is also the disk of volume "r0"`}, nil},
	{"meta_disk is a later disk", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  meta_disk = "alpha-r1.img"`) + vol("r1", "alpha", ""), []string{`config: volume "r1" replica for node "alpha": disk: /etc/blkrep/alpha-r1.img on node "alpha" is also the meta_disk of volume "r0"`}, nil},
	{"duplicate meta_disk on a node", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  meta_disk = "/srv/m"`) + vol("r1", "alpha", `  meta_disk = "/srv/x/../m"`), []string{`config: volume "r1" replica for node "alpha": meta_disk: /srv/m on node "alpha" is also the meta_disk of volume "r0"`}, nil},
	{"meta_disk is a device", "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", "  device = \"/dev/nbd1\"\n  meta_disk = \"/dev/nbd1\""), []string{`config: volume "r0" replica for node "alpha": meta_disk: /dev/nbd1 on node "alpha" is also the device of volume "r0"`}, nil},
	{"meta_disk is the nbd_socket", minimal + "  nbd_socket = \"r0.sock\"\n  meta_disk = \"r0.sock\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: /etc/blkrep/r0.sock on node "alpha" is also the nbd_socket of volume "r0" replica for node "alpha"`}, nil},
	{"meta_disk is the control_socket", minimal + "  meta_disk = \"alpha.ctl\"\n", []string{`config: volume "r0" replica for node "alpha": meta_disk: /etc/blkrep/alpha.ctl on node "alpha" is also the control_socket (default) of node "alpha"`}, nil},
	{"disk is a socket of the node", strings.Replace(minimal, `disk = "alpha-r0.img"`, `disk = "alpha.ctl"`, 1), []string{`config: volume "r0" replica for node "alpha": disk: /etc/blkrep/alpha.ctl on node "alpha" is also the control_socket (default) of node "alpha"`}, nil},
}

// replicated returns a volume r0 with n replicas on nodes n1..nN and the given
// extra volume keys.
func replicated(n int, volumeKeys string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "[[node]]\nname = \"n%d\"\n", i)
	}
	b.WriteString("[[volume]]\nname = \"r0\"\nsize = \"1MiB\"\n" + volumeKeys + "\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  [[volume.replica]]\n  node = \"n%d\"\n  disk = \"r0.img\"\n", i)
	}
	return b.String()
}

func init() {
	// Cases whose input is easier to build in code.
	for i := range parseErrorCases {
		c := &parseErrorCases[i]
		switch c.name {
		case "duplicate control_socket":
			c.toml = strings.ReplaceAll(twoNodes, `"`+"\n", "\"\ncontrol_socket = \"/run/blkrep.ctl\"\n") + vol("r0", "alpha", "")
			c.want = []string{`config: node "beta": control_socket: unix socket /run/blkrep.ctl is also the control_socket of node "alpha"`}
		case "duplicate volume":
			c.toml = "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", "") + strings.Replace(vol("r0", "alpha", ""), `disk = "alpha-r0.img"`, `disk = "other.img"`, 1)
			c.want = []string{`config: volume "r0": name: volume "r0" is declared twice (volume #1 and #2)`}
		case "duplicate disk on a node":
			// Both replicas keep their first disk key replaced.
			c.toml = "[[node]]\nname = \"alpha\"\n" +
				strings.Replace(vol("r0", "alpha", ""), `disk = "alpha-r0.img"`, `disk = "/srv/same.img"`, 1) +
				strings.Replace(vol("r1", "alpha", ""), `disk = "alpha-r1.img"`, `disk = "../../srv/same.img"`, 1)
			c.want = []string{`config: volume "r1" replica for node "alpha": disk: /srv/same.img on node "alpha" is also the disk of volume "r0"`}
		case "disk is a device of the node":
			c.toml = "[[node]]\nname = \"alpha\"\n" + vol("r0", "alpha", `  device = "/dev/nbd3"`) +
				strings.Replace(vol("r1", "alpha", ""), `disk = "alpha-r1.img"`, `disk = "/dev/nbd3"`, 1)
			c.want = []string{`config: volume "r1" replica for node "alpha": disk: /dev/nbd3 on node "alpha" is also the device of volume "r0"`}
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range parseErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.want) == 0 {
				t.Fatal("case has no expected text")
			}
			c, err := Parse([]byte(tc.toml), testDir)
			if err == nil {
				t.Fatalf("Parse succeeded, want an error; got %+v\ninput:\n%s", c, tc.toml)
			}
			if c != nil {
				t.Errorf("Parse returned a config with its error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, s := range append([]error{ErrInvalid}, tc.is...) {
				if !errors.Is(err, s) {
					t.Errorf("errors.Is(err, %v) = false; err:\n%v", s, err)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *config.Error: %T", err)
			}
		})
	}
}

// TestDefaultSocketTooLong: the default control socket is checked like any other.
func TestDefaultSocketTooLong(t *testing.T) {
	dir := "/" + strings.Repeat("d", 39)
	in := strings.ReplaceAll(minimal, `"alpha"`, `"`+strings.Repeat("a", 63)+`"`)
	_, err := Parse([]byte(in), dir)
	want := `config: node "` + strings.Repeat("a", 63) + `": control_socket (default): unix socket path ` + dir + "/" + strings.Repeat("a", 63) + ".ctl is 108 bytes long; the limit is 107"
	if err == nil || err.Error() != want {
		t.Errorf("Parse: %v\nwant %s", err, want)
	}
}

// TestParseReportsAll checks that independent problems are all reported, one per line.
func TestParseReportsAll(t *testing.T) {
	in := `
[cluster]
name = "Bad"
[[node]]
name = "alpha"
nbd_tcp = "nope"
[[volume]]
name = "r0"
size = 1000
block_size = 3
device_timeout = "x"
  [[volume.replica]]
  node = "gamma"
  disk = "g.img"
  device = "/dev/sda"
`
	_, err := Parse([]byte(in), testDir)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		`config: cluster: name: "Bad" must match [a-z0-9_-]+`,
		`config: node "alpha": nbd_tcp: "nope": must be host:port (missing port in address)`,
		`config: volume "r0": size: 1000 bytes is not a multiple of 4096`,
		`config: volume "r0": block_size: 3 must be a power of two from 512 to 4096`,
		`config: volume "r0": device_timeout: invalid duration "x" (use a Go duration such as "30s" or "2m")`,
		`config: volume "r0" replica for node "gamma": node: no [[node]] is called "gamma" (known nodes: "alpha")`,
		`config: volume "r0" replica for node "gamma": device: "/dev/sda" must be a kernel NBD device, /dev/nbdN`,
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// TestNoCascade: a problem with a node is reported once, not again by every
// replica that names it.
func TestNoCascade(t *testing.T) {
	for _, name := range []string{"no node", "node name missing", "node name invalid", "node name type", "duplicate node"} {
		for _, tc := range parseErrorCases {
			if tc.name != name {
				continue
			}
			_, err := Parse([]byte(tc.toml), testDir)
			if err == nil || strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("%s: want one error, got:\n%v", name, err)
			}
		}
	}
}

// TestUnknownKeysReportedFirst: typos come before the problems they cause, and a
// key repeated in several tables is reported once.
func TestUnknownKeysReportedFirst(t *testing.T) {
	in := strings.ReplaceAll(twoNodes+vol("r0", "alpha", "")+vol("r1", "beta", ""), "disk =", "dsk =")
	_, err := Parse([]byte(in), testDir)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || lines[0] != `config: unknown key "volume.replica.dsk" (did you mean "volume.replica.disk"?)` ||
		!strings.HasSuffix(lines[1], "disk: is required") || !strings.HasSuffix(lines[2], "disk: is required") {
		t.Errorf("errors:\n%s", err)
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct{ name, toml string }{
		{"minimal", minimal},
		{"integer size", volSize("size = 1048576")},
		{"size with space", volSize(`size = "1 MiB"`)},
		{"durations zero", volKeys("size = 4096\ndevice_timeout = 0\ndead_conn_timeout = \"0s\"")},
		{"durations long", volKeys("size = 4096\ndevice_timeout = \"1h30m\"\ndead_conn_timeout = \"10m\"")},
		{"block sizes", volKeys("size = 4096\nblock_size = 512") + strings.Replace(vol("r1", "alpha", ""), `size = "1MiB"`, "size = 4096\nblock_size = 1024", 1)},
		{"description limit", volKeys("size = 4096\ndescription = \"" + strings.Repeat("d", 4096) + "\"")},
		{"same disk on two nodes", twoNodes + vol("r0", "alpha", "") + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"alpha-r0.img\"\n"},
		{"same device on two nodes", twoNodes + vol("r0", "alpha", `  device = "/dev/nbd0"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n  device = \"/dev/nbd0\"\n"},
		{"nbd_tcp distinct hosts", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \"127.0.0.1:10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \"127.0.0.2:10809\"", 1) + vol("r0", "alpha", "")},
		{"nbd_tcp distinct ports", strings.Replace(strings.Replace(twoNodes, `name = "alpha"`, "name = \"alpha\"\nnbd_tcp = \":10809\"", 1), `name = "beta"`, "name = \"beta\"\nnbd_tcp = \":10810\"", 1) + vol("r0", "alpha", "")},
		{"node without replica", twoNodes + vol("r0", "alpha", "")},
		{"inline array of tables", `node = [{name = "alpha"}]` + "\n" + vol("r0", "alpha", "")},
		{"names with dots", strings.ReplaceAll(minimal, `"alpha"`, `"alpha.example_1-x"`)},
		{"empty description", volKeys("size = 4096\ndescription = \"\"")},
		{"metadata keys", volKeys("size = 4096\nbytes_per_bit = \"1 MiB\"\nal_extents = 65536\npeer_slots = 32")},
		{"peer_slots for every peer", replicated(5, "peer_slots = 4")},
		{"33 replicas", replicated(33, "peer_slots = 32")},
		{"4 replicas with default peer_slots", replicated(4, "")},
		{"meta_disk none alone", minimal + "  meta_disk = \"none\"\n"},
		{"meta_disk file called internal", minimal + "  meta_disk = \"./internal\"\n"},
		{"same meta_disk on two nodes", twoNodes + vol("r0", "alpha", `  meta_disk = "r0.meta"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n  meta_disk = \"r0.meta\"\n"},
		{"meta_disk on another node's disk", twoNodes + vol("r0", "alpha", `  meta_disk = "b.img"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n"},
		{"huge size with external metadata", volSize(`size = "8388607TiB"`) + "  meta_disk = \"/srv/r0.meta\"\n"},
		{"huge size without metadata", volSize(`size = "8388607TiB"`) + "  meta_disk = \"none\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.toml), testDir); err != nil {
				t.Errorf("Parse: %v\ninput:\n%s", err, tc.toml)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != "" || c.Dir != testDir {
		t.Errorf("Path, Dir = %q, %q", c.Path, c.Dir)
	}
	if c.Cluster.Name != "blkrep" {
		t.Errorf("cluster name = %q, want blkrep", c.Cluster.Name)
	}
	wantNode := Node{Name: "alpha", ControlSocket: "/etc/blkrep/alpha.ctl"}
	if len(c.Nodes) != 1 || c.Nodes[0] != wantNode {
		t.Errorf("nodes = %+v, want [%+v]", c.Nodes, wantNode)
	}
	if len(c.Volumes) != 1 {
		t.Fatalf("volumes = %+v", c.Volumes)
	}
	v := c.Volumes[0]
	if v.Name != "r0" || v.Description != "" || v.SizeBytes != 1<<20 || v.BlockSize != 4096 ||
		v.DeviceTimeout != 30*time.Second || v.DeadConnTimeout != 120*time.Second ||
		v.BytesPerBit != 4096 || v.ALExtents != 1237 || v.PeerSlots != 3 {
		t.Errorf("volume = %+v", v)
	}
	wantRep := Replica{Node: "alpha", Disk: "/etc/blkrep/alpha-r0.img", MetaDisk: "internal"}
	if len(v.Replicas) != 1 || v.Replicas[0] != wantRep {
		t.Errorf("replicas = %+v, want [%+v]", v.Replicas, wantRep)
	}
}

func TestAllKeys(t *testing.T) {
	in := `
[cluster]
name = "prod_1"

[[node]]
name = "alpha"
control_socket = "/run/blkrep/alpha.ctl"
nbd_tcp = "10.0.0.1:10809"

[[node]]
name = "beta"
nbd_tcp = "10.0.0.2:10809"

[[volume]]
name = "r0"
size = "2GiB"
description = "database"
block_size = 512
device_timeout = "0s"
dead_conn_timeout = "5m"
bytes_per_bit = "64KiB"
al_extents = 4000
peer_slots = 5

  [[volume.replica]]
  node = "alpha"
  disk = "/dev/vg0/r0"
  nbd_socket = "sockets/alpha-r0.sock"
  device = "/dev/nbd7"
  meta_disk = "meta/alpha-r0.meta"

  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
  create = true
`
	c, err := Parse([]byte(in), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Name != "prod_1" {
		t.Errorf("cluster = %+v", c.Cluster)
	}
	wantNodes := []Node{
		{Name: "alpha", ControlSocket: "/run/blkrep/alpha.ctl", NBDTCP: "10.0.0.1:10809"},
		{Name: "beta", ControlSocket: "/etc/blkrep/beta.ctl", NBDTCP: "10.0.0.2:10809"},
	}
	for i := range wantNodes {
		if c.Nodes[i] != wantNodes[i] {
			t.Errorf("node %d = %+v, want %+v", i, c.Nodes[i], wantNodes[i])
		}
	}
	v := c.Volumes[0]
	if v.Description != "database" || v.SizeBytes != 2<<30 || v.BlockSize != 512 || v.DeviceTimeout != 0 || v.DeadConnTimeout != 5*time.Minute ||
		v.BytesPerBit != 64<<10 || v.ALExtents != 4000 || v.PeerSlots != 5 {
		t.Errorf("volume = %+v", v)
	}
	wantReps := []Replica{
		{Node: "alpha", Disk: "/dev/vg0/r0", NBDSocket: "/etc/blkrep/sockets/alpha-r0.sock", Device: "/dev/nbd7", MetaDisk: "/etc/blkrep/meta/alpha-r0.meta"},
		{Node: "beta", Disk: "/etc/blkrep/beta-r0.img", Create: true, MetaDisk: "internal"},
	}
	for i := range wantReps {
		if v.Replicas[i] != wantReps[i] {
			t.Errorf("replica %d = %+v, want %+v", i, v.Replicas[i], wantReps[i])
		}
	}

	n, ok := c.Node("beta")
	if !ok || n != &c.Nodes[1] {
		t.Errorf("Node(beta) = %v, %v", n, ok)
	}
	if _, ok := c.Node("gamma"); ok {
		t.Errorf("Node(gamma) found")
	}
	lr := c.LocalReplicas("beta")
	if len(lr) != 1 || lr[0].Volume != &c.Volumes[0] || lr[0].Replica != &c.Volumes[0].Replicas[1] {
		t.Errorf("LocalReplicas(beta) = %+v", lr)
	}
	if lr := c.LocalReplicas("gamma"); lr != nil {
		t.Errorf("LocalReplicas(gamma) = %+v", lr)
	}
}

func TestRelativePaths(t *testing.T) {
	for _, tc := range []struct{ dir, path, want string }{
		{"/etc/blkrep", "a.img", "/etc/blkrep/a.img"},
		{"/etc/blkrep", "./data/a.img", "/etc/blkrep/data/a.img"},
		{"/etc/blkrep", "../a.img", "/etc/a.img"},
		{"/etc/blkrep/", "a.img", "/etc/blkrep/a.img"},
		{"/etc/blkrep", "/srv//a.img", "/srv/a.img"},
		{"/etc/blkrep", "/dev/sdb", "/dev/sdb"},
		{"/", "a.img", "/a.img"},
	} {
		in := strings.Replace(minimal, `disk = "alpha-r0.img"`, `disk = "`+tc.path+`"`, 1) + `  nbd_socket = "` + tc.path + `.sock"` + "\n"
		c, err := Parse([]byte(in), tc.dir)
		if err != nil {
			t.Errorf("dir %q path %q: %v", tc.dir, tc.path, err)
			continue
		}
		r := c.Volumes[0].Replicas[0]
		if r.Disk != tc.want || r.NBDSocket != tc.want+".sock" {
			t.Errorf("dir %q path %q: disk %q, nbd_socket %q; want %q", tc.dir, tc.path, r.Disk, r.NBDSocket, tc.want)
		}
		if want := filepath.Join(tc.dir, "alpha.ctl"); c.Nodes[0].ControlSocket != want {
			t.Errorf("dir %q: control socket %q, want %q", tc.dir, c.Nodes[0].ControlSocket, want)
		}
	}
	if _, err := Parse([]byte(minimal), "relative/dir"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"relative/dir"`) {
		t.Errorf("Parse with a relative dir: %v", err)
	}
}

func TestLoadRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "conf")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sub, "cluster.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load("conf/cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != path || c.Dir != sub || c.Volumes[0].Replicas[0].Disk != filepath.Join(sub, "alpha-r0.img") {
		t.Errorf("Path %q, Dir %q, disk %q", c.Path, c.Dir, c.Volumes[0].Replicas[0].Disk)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{"4096B", 4096},
		{"4096 b", 4096},
		{" 1K ", 1 << 10},
		{"1KiB", 1 << 10},
		{"1kib", 1 << 10},
		{"1KB", 1000},
		{"256MiB", 256 << 20},
		{"256M", 256 << 20},
		{"256MB", 256e6},
		{"3GiB", 3 << 30},
		{"3G", 3 << 30},
		{"3GB", 3e9},
		{"2TiB", 2 << 40},
		{"2T", 2 << 40},
		{"2TB", 2e12},
		{"8388607TiB", 8388607 << 40},
		{"9223372036854775807", 1<<63 - 1},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", `config: invalid size "": must start with a number`},
		{"MiB", `must start with a number`},
		{"-1", `must start with a number`},
		{"+1", `must start with a number`},
		{"1.5G", `must be a whole number`},
		{"1,5G", `must be a whole number`},
		{"1PiB", `unknown unit "PiB"`},
		{"1 Mi B", `unknown unit "Mi B"`},
		{"1e3", `unknown unit "e3"`},
		{"0x1000", `unknown unit "x1000"`},
		{"8388608TiB", `too large`},
		{"9223372036854775808", `too large`},
	} {
		_, err := ParseSize(tc.in)
		if err == nil || !errors.Is(err, ErrSize) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSize(%q) = %v; want an ErrSize containing %q", tc.in, err, tc.want)
		}
	}
}

// TestSchemaKeys guards the reflection that drives unknown-key hints.
func TestSchemaKeys(t *testing.T) {
	want := map[string]string{
		"":               "cluster node volume",
		"cluster":        "name",
		"node":           "name control_socket nbd_tcp",
		"volume":         "name size description block_size device_timeout dead_conn_timeout bytes_per_bit al_extents peer_slots replica",
		"volume.replica": "node disk create nbd_socket device meta_disk",
	}
	if len(schema) != len(want) {
		t.Errorf("schema has %d tables, want %d: %v", len(schema), len(want), schema)
	}
	for table, keys := range want {
		if got := strings.Join(schema[table], " "); got != keys {
			t.Errorf("schema[%q] = %q, want %q", table, got, keys)
		}
	}
}

// TestMetaKeys: the metadata keys of [[volume]], their defaults and forms.
func TestMetaKeys(t *testing.T) {
	for _, tc := range []struct {
		name, keys   string
		bytesPerBit  uint32
		alExtents    int
		peerSlots    int
		replicaCount int
	}{
		{"defaults", "", 4096, 1237, 3, 1},
		{"bytes_per_bit integer", "bytes_per_bit = 8192", 8192, 1237, 3, 1},
		{"bytes_per_bit string", `bytes_per_bit = "4KiB"`, 4096, 1237, 3, 1},
		{"bytes_per_bit largest", `bytes_per_bit = "1M"`, 1 << 20, 1237, 3, 1},
		{"al_extents smallest", "al_extents = 1", 4096, 1, 3, 1},
		{"al_extents largest", "al_extents = 65536", 4096, 65536, 3, 1},
		{"peer_slots largest", "peer_slots = 32", 4096, 1237, 32, 1},
		{"peer_slots 5 with 6 replicas", "peer_slots = 5", 4096, 1237, 5, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(replicated(tc.replicaCount, tc.keys)), testDir)
			if err != nil {
				t.Fatal(err)
			}
			v := c.Volumes[0]
			if v.BytesPerBit != tc.bytesPerBit || v.ALExtents != tc.alExtents || v.PeerSlots != tc.peerSlots {
				t.Errorf("bytes_per_bit %d, al_extents %d, peer_slots %d; want %d, %d, %d",
					v.BytesPerBit, v.ALExtents, v.PeerSlots, tc.bytesPerBit, tc.alExtents, tc.peerSlots)
			}
		})
	}
}

// TestMetaDisk: the values of meta_disk and the methods that tell them apart.
func TestMetaDisk(t *testing.T) {
	for _, tc := range []struct {
		line, want               string
		internal, none, external bool
	}{
		{"", "internal", true, false, false},
		{`meta_disk = "internal"`, "internal", true, false, false},
		{`meta_disk = "none"`, "none", false, true, false},
		{`meta_disk = "r0.meta"`, "/etc/blkrep/r0.meta", false, false, true},
		{`meta_disk = "./internal"`, "/etc/blkrep/internal", false, false, true},
		{`meta_disk = "../none"`, "/etc/none", false, false, true},
		{`meta_disk = "/dev/vg0/r0-meta"`, "/dev/vg0/r0-meta", false, false, true},
	} {
		c, err := Parse([]byte(minimal+"  "+tc.line+"\n"), testDir)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		r := &c.Volumes[0].Replicas[0]
		if r.MetaDisk != tc.want || r.MetaInternal() != tc.internal || r.MetaNone() != tc.none || r.MetaExternal() != tc.external {
			t.Errorf("%q: MetaDisk %q internal %v none %v external %v; want %q %v %v %v", tc.line,
				r.MetaDisk, r.MetaInternal(), r.MetaNone(), r.MetaExternal(), tc.want, tc.internal, tc.none, tc.external)
		}
	}
}
