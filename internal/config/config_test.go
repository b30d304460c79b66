package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// testSecret is a valid inline secret.
const testSecret = "0123456789abcdef"

// twoPeers is twoNodes with what a replicated volume needs: a secret and an
// address on each node.
const twoPeers = `
[cluster]
secret = "` + testSecret + `"
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
`

// threeVoters is twoPeers with failover on: gossip addresses on alpha and beta,
// and a third voter, the witness.
const threeVoters = `
[cluster]
secret = "` + testSecret + `"
failover = true
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
gossip = "10.0.0.1:7946"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
gossip = "10.0.0.2:7946"
[[node]]
name = "witness"
witness = true
gossip = "10.0.0.3:7946"
`

// voters returns peers(threeVoters, volumeKeys) with the line of a node's
// gossip key (alpha, beta or witness; 10.0.0.1:7946 and so on) replaced by line.
func voters(name, line, volumeKeys string) string {
	old := map[string]string{"alpha": `gossip = "10.0.0.1:7946"`, "beta": `gossip = "10.0.0.2:7946"`, "witness": `gossip = "10.0.0.3:7946"`}[name]
	return peers(strings.Replace(threeVoters, old, line, 1), volumeKeys)
}

// peers returns volume r0 replicated on alpha and beta with the given extra
// volume keys, after head (twoPeers or a variant of it).
func peers(head, volumeKeys string) string {
	return head + `
[[volume]]
name = "r0"
size = "1MiB"
` + volumeKeys + `
  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  [[volume.replica]]
  node = "beta"
  disk = "beta-r0.img"
`
}

// peersAddress returns peers(twoPeers, "") with the address line of alpha
// (10.0.0.1:7789) or beta (10.0.0.2:7789) replaced by line.
func peersAddress(name, line string) string {
	old := map[string]string{"alpha": `address = "10.0.0.1:7789"`, "beta": `address = "10.0.0.2:7789"`}[name]
	return peers(strings.Replace(twoPeers, old, line, 1), "")
}

// peersNode returns peers(twoPeers, "") with extra keys for node name.
func peersNode(name, nodeKeys string) string {
	return peers(strings.Replace(twoPeers, `name = "`+name+`"`, `name = "`+name+`"`+"\n"+nodeKeys, 1), "")
}

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

	// Replication: [cluster] secret, secret_file.
	{"secret missing", peers(strings.Replace(twoPeers, "secret = \""+testSecret+"\"", "", 1), ""), []string{`config: cluster: secret: is required because volume "r0" has 2 replicas (the nodes authenticate each other with it): set secret, or secret_file to the path of a file holding it; generate one with: head -c 32 /dev/urandom | base64`}, nil},
	{"secret too short", peers(strings.Replace(twoPeers, testSecret, "hunter2", 1), ""), []string{`config: cluster: secret: is 7 bytes long; it must be 16 to 1024 bytes (generate one with: head -c 32 /dev/urandom | base64)`}, nil},
	{"secret too long", "[cluster]\nsecret = \"" + strings.Repeat("s", 1025) + "\"\n" + minimal, []string{`config: cluster: secret: is 1025 bytes long; it must be 16 to 1024 bytes`}, nil},
	{"secret empty", "[cluster]\nsecret = \"\"\n" + minimal, []string{`config: cluster: secret: is 0 bytes long; it must be 16 to 1024 bytes`}, nil},
	{"secret type", "[cluster]\nsecret = 1234567890123456789\n" + minimal, []string{`config: cluster: secret: must be a string, not an integer`}, nil},
	{"secret_file empty", "[cluster]\nsecret_file = \"\"\n" + minimal, []string{`config: cluster: secret_file: must not be empty (leave the key out instead)`}, nil},
	{"secret_file type", "[cluster]\nsecret_file = true\n" + minimal, []string{`config: cluster: secret_file: must be a string, not a boolean`}, nil},
	{"secret_file NUL", "[cluster]\nsecret_file = \"a\\u0000b\"\n" + minimal, []string{`config: cluster: secret_file: path "a\x00b" contains a NUL byte`}, nil},
	{"secret and secret_file", peers(strings.Replace(twoPeers, "[cluster]", "[cluster]\nsecret_file = \"secret\"", 1), ""), []string{`config: cluster: secret_file: cannot be set together with secret: keep one (secret_file keeps the secret out of this file, which every node has)`}, nil},

	// Replication: [[node]] address, metrics.
	{"address missing", peers(strings.Replace(twoPeers, "address = \"10.0.0.2:7789\"", "", 1), ""), []string{`config: node "beta": address: is required because it holds a replica of replicated volume "r0"`}, nil},
	{"address missing on both", peers(strings.NewReplacer("address = \"10.0.0.1:7789\"", "", "address = \"10.0.0.2:7789\"", "").Replace(twoPeers), ""), []string{`config: node "alpha": address: is required because it holds a replica of replicated volume "r0"` + "\n" + `config: node "beta": address: is required because it holds a replica of replicated volume "r0"`}, nil},
	{"address empty host", peersAddress("alpha", `address = ":7789"`), []string{`config: node "alpha": address: ":7789": the host must be an address the peers can dial, not a wildcard (empty, 0.0.0.0 or ::); write this node's own IP address or host name, e.g. "10.0.0.1:7789"`}, nil},
	{"address 0.0.0.0", peersAddress("alpha", `address = "0.0.0.0:7789"`), []string{`config: node "alpha": address: "0.0.0.0:7789": the host must be an address the peers can dial, not a wildcard`}, nil},
	{"address ::", peersAddress("alpha", `address = "[::]:7789"`), []string{`config: node "alpha": address: "[::]:7789": the host must be an address the peers can dial, not a wildcard`}, nil},
	{"address mapped 0.0.0.0", peersAddress("alpha", `address = "[::ffff:0.0.0.0]:7789"`), []string{`config: node "alpha": address: "[::ffff:0.0.0.0]:7789": the host must be an address the peers can dial`}, nil},
	{"address no port", peersAddress("alpha", `address = "10.0.0.1"`), []string{`config: node "alpha": address: "10.0.0.1": must be host:port (missing port in address)`}, nil},
	{"address port 0", peersAddress("alpha", `address = "10.0.0.1:0"`), []string{`config: node "alpha": address: "10.0.0.1:0": port "0" must be a number from 1 to 65535`}, nil},
	{"address port name", peersAddress("alpha", `address = "10.0.0.1:drbd"`), []string{`config: node "alpha": address: "10.0.0.1:drbd": port "drbd" must be a number from 1 to 65535`}, nil},
	{"address bad host", peersAddress("alpha", `address = "a_b:7789"`), []string{`config: node "alpha": address: "a_b:7789": host "a_b" is neither an IP address nor a host name`}, nil},
	{"address empty", peersAddress("alpha", `address = ""`), []string{`config: node "alpha": address: must not be empty (leave the key out instead)`}, nil},
	{"address type", peersAddress("alpha", `address = 7789`), []string{`config: node "alpha": address: must be a string, not an integer`}, nil},
	{"address twice", peersAddress("beta", `address = "10.0.0.1:7789"`), []string{`config: node "beta": address: 10.0.0.1:7789 clashes with address of node "alpha" (10.0.0.1:7789)`}, nil},
	{"address is own nbd_tcp", peersNode("alpha", `nbd_tcp = "10.0.0.1:7789"`), []string{`config: node "alpha": address: 10.0.0.1:7789 clashes with nbd_tcp of node "alpha" (10.0.0.1:7789)`}, nil},
	{"address is another's nbd_tcp wildcard", peersNode("alpha", `nbd_tcp = ":7789"`), []string{`config: node "beta": address: 10.0.0.2:7789 clashes with nbd_tcp of node "alpha" (:7789)`}, nil},
	{"metrics no port", peersNode("alpha", `metrics = "localhost"`), []string{`config: node "alpha": metrics: "localhost": must be host:port (missing port in address)`}, nil},
	{"metrics type", peersNode("alpha", `metrics = 9100`), []string{`config: node "alpha": metrics: must be a string, not an integer`}, nil},
	{"metrics empty", peersNode("alpha", `metrics = ""`), []string{`config: node "alpha": metrics: must not be empty`}, nil},
	{"metrics is the address", peersNode("alpha", `metrics = "10.0.0.1:7789"`), []string{`config: node "alpha": metrics: 10.0.0.1:7789 clashes with address of node "alpha" (10.0.0.1:7789)`}, nil},
	{"metrics wildcards on one port", strings.Replace(peersNode("alpha", `metrics = ":9100"`), `address = "10.0.0.2:7789"`, "address = \"10.0.0.2:7789\"\nmetrics = \"[::]:9100\"", 1), []string{`config: node "beta": metrics: [::]:9100 clashes with metrics of node "alpha" (:9100)`}, nil},

	// Replication: [[volume]] keys.
	{"protocol unknown", peers(twoPeers, `protocol = "D"`), []string{`config: volume "r0": protocol: "D" must be "A", "B" or "C" (a write completes once written locally and A: sent to the peers, B: received by them, C: written by them)`}, nil},
	{"protocol long", peers(twoPeers, `protocol = "protocol C"`), []string{`config: volume "r0": protocol: "protocol C" must be "A", "B" or "C"`}, nil},
	{"protocol type", peers(twoPeers, `protocol = 3`), []string{`config: volume "r0": protocol: must be a string, not an integer`}, nil},
	{"ping_interval too short", peers(twoPeers, `ping_interval = "500ms"`), []string{`config: volume "r0": ping_interval: "500ms" is out of range: it must be from 1s to 10m`}, nil},
	{"ping_interval too long", peers(twoPeers, `ping_interval = "1h"`), []string{`config: volume "r0": ping_interval: "1h" is out of range: it must be from 1s to 10m`}, nil},
	{"ping_interval negative", peers(twoPeers, `ping_interval = "-10s"`), []string{`config: volume "r0": ping_interval: "-10s" is out of range`}, nil},
	{"ping_interval invalid", peers(twoPeers, `ping_interval = "10"`), []string{`config: volume "r0": ping_interval: invalid duration "10" (use a Go duration such as "500ms" or "10s")`}, nil},
	{"ping_interval integer", peers(twoPeers, `ping_interval = 10`), []string{`config: volume "r0": ping_interval: 10 has no unit: use a string such as "10s" or "10ms"`}, nil},
	{"ping_interval bool", peers(twoPeers, `ping_interval = true`), []string{`config: volume "r0": ping_interval: must be a duration string such as "500ms", not a boolean`}, nil},
	{"ping_timeout too short", peers(twoPeers, `ping_timeout = "50ms"`), []string{`config: volume "r0": ping_timeout: "50ms" is out of range: it must be from 100ms to 1m`}, nil},
	{"ping_timeout too long", peers(twoPeers, "ping_interval = \"5m\"\nping_timeout = \"90s\""), []string{`config: volume "r0": ping_timeout: "90s" is out of range: it must be from 100ms to 1m`}, nil},
	{"ping_timeout not less than ping_interval", peers(twoPeers, "ping_interval = \"5s\"\nping_timeout = \"5s\""), []string{`config: volume "r0": ping_timeout: 5s must be less than ping_interval (5s): a ping is answered before the next one is due`}, nil},
	{"ping_timeout not less than default ping_interval", peers(twoPeers, `ping_timeout = "30s"`), []string{`config: volume "r0": ping_timeout: 30s must be less than ping_interval (10s, the default): a ping is answered before the next one is due`}, nil},
	{"ping_interval less than default ping_timeout", peers(twoPeers, `ping_interval = "1s"`+"\n"+`ping_timeout = "1.5s"`), []string{`config: volume "r0": ping_timeout: 1.5s must be less than ping_interval (1s)`}, nil},
	{"timeout too short", peers(twoPeers, `timeout = "999ms"`), []string{`config: volume "r0": timeout: "999ms" is out of range: it must be from 1s to 10m`}, nil},
	{"timeout too long", peers(twoPeers, `timeout = "10m1s"`), []string{`config: volume "r0": timeout: "10m1s" is out of range: it must be from 1s to 10m`}, nil},
	{"timeout zero", peers(twoPeers, `timeout = 0`), []string{`config: volume "r0": timeout: 0 has no unit`}, nil},
	{"connect_interval too short", peers(twoPeers, `connect_interval = "10ms"`), []string{`config: volume "r0": connect_interval: "10ms" is out of range: it must be from 100ms to 10m`}, nil},
	{"connect_interval too long", peers(twoPeers, `connect_interval = "2h"`), []string{`config: volume "r0": connect_interval: "2h" is out of range: it must be from 100ms to 10m`}, nil},
	{"connect_interval type", peers(twoPeers, `connect_interval = 1.5`), []string{`config: volume "r0": connect_interval: must be a duration string such as "500ms", not a float`}, nil},
	{"max_epoch_writes zero", peers(twoPeers, `max_epoch_writes = 0`), []string{`config: volume "r0": max_epoch_writes: 0 is out of range: it must be from 1 to 65536`}, nil},
	{"max_epoch_writes too big", peers(twoPeers, `max_epoch_writes = 65537`), []string{`config: volume "r0": max_epoch_writes: 65537 is out of range: it must be from 1 to 65536`}, nil},
	{"max_epoch_writes string", peers(twoPeers, `max_epoch_writes = "2048"`), []string{`config: volume "r0": max_epoch_writes: must be an integer, not a string`}, nil},
	{"resync_rate_max zero", peers(twoPeers, `resync_rate_max = 0`), []string{`config: volume "r0": resync_rate_max: 0 bytes/s must be positive (write "unlimited" for no limit)`}, nil},
	{"resync_rate_max zero string", peers(twoPeers, `resync_rate_max = "0MiB/s"`), []string{`config: volume "r0": resync_rate_max: "0MiB/s" (0 bytes/s) must be positive (write "unlimited" for no limit)`}, nil},
	{"resync_rate_max negative", peers(twoPeers, `resync_rate_max = -1`), []string{`config: volume "r0": resync_rate_max: -1 bytes/s must be positive`}, nil},
	{"resync_rate_max per minute", peers(twoPeers, `resync_rate_max = "100MiB/min"`), []string{`config: volume "r0": resync_rate_max: invalid rate "100MiB/min" (write a size per second such as "100MiB/s"): unknown unit "MiB/min" (use B, KiB`}, []error{ErrSize}},
	{"resync_rate_max word", peers(twoPeers, `resync_rate_max = "fast"`), []string{`config: volume "r0": resync_rate_max: invalid rate "fast" (write a size per second such as "100MiB/s"): must start with a number`}, []error{ErrSize}},
	{"resync_rate_max only unit", peers(twoPeers, `resync_rate_max = "/s"`), []string{`config: volume "r0": resync_rate_max: invalid rate "/s" (write a size per second such as "100MiB/s"): must start with a number`}, []error{ErrSize}},
	{"resync_rate_max float", peers(twoPeers, `resync_rate_max = 1e8`), []string{`config: volume "r0": resync_rate_max: must be "unlimited", an integer number of bytes per second or a string such as "100MiB/s", not a float`}, nil},
	{"resync_rate_min unlimited", peers(twoPeers, `resync_rate_min = "unlimited"`), []string{`config: volume "r0": resync_rate_min: "unlimited": a minimum cannot be unlimited; write a rate such as "4MiB/s"`}, nil},
	{"resync_rate_min zero", peers(twoPeers, `resync_rate_min = "0"`), []string{`config: volume "r0": resync_rate_min: "0" (0 bytes/s) must be positive`}, nil},
	{"resync_rate_min type", peers(twoPeers, `resync_rate_min = [1]`), []string{`config: volume "r0": resync_rate_min: must be an integer number of bytes per second or a string such as "4MiB/s", not an array`}, nil},
	{"resync_rate_min bad unit", peers(twoPeers, `resync_rate_min = "4Mbit/s"`), []string{`config: volume "r0": resync_rate_min: invalid rate "4Mbit/s" (write a size per second such as "100MiB/s"): unknown unit "Mbit"`}, []error{ErrSize}},
	{"resync_rate_min above max", peers(twoPeers, "resync_rate_max = \"50MiB/s\"\nresync_rate_min = \"60MiB/s\""), []string{`config: volume "r0": resync_rate_min: "60MiB/s" (62914560 bytes/s) is more than resync_rate_max, "50MiB/s" (52428800 bytes/s); the minimum must not exceed the limit`}, nil},
	{"default resync_rate_min above max", peers(twoPeers, `resync_rate_max = "1MiB/s"`), []string{`config: volume "r0": resync_rate_min: the default of "4MiB/s" (4194304 bytes/s) is more than resync_rate_max, "1MiB/s" (1048576 bytes/s); the minimum must not exceed the limit`}, nil},
	{"resync_in_flight too small", peers(twoPeers, `resync_in_flight = "32KiB"`), []string{`config: volume "r0": resync_in_flight: "32KiB" (32768 bytes) is out of range: it must be from 65536 (64KiB) to 1073741824 (1GiB)`}, nil},
	{"resync_in_flight too big", peers(twoPeers, `resync_in_flight = 1073741825`), []string{`config: volume "r0": resync_in_flight: 1073741825 bytes is out of range: it must be from 65536 (64KiB) to 1073741824 (1GiB)`}, nil},
	{"resync_in_flight bad unit", peers(twoPeers, `resync_in_flight = "8MiB/s"`), []string{`config: volume "r0": resync_in_flight: invalid size "8MiB/s": unknown unit "MiB/s"`}, []error{ErrSize}},
	{"resync_in_flight float", peers(twoPeers, `resync_in_flight = 8.0`), []string{`config: volume "r0": resync_in_flight: must be an integer number of bytes or a string such as "8MiB", not a float`}, nil},
	{"resync_checksums unknown", peers(twoPeers, `resync_checksums = "sometimes"`), []string{`config: volume "r0": resync_checksums: "sometimes" must be "after-crash", "always" or "never"`}, nil},
	{"resync_checksums underscore", peers(twoPeers, `resync_checksums = "after_crash"`), []string{`config: volume "r0": resync_checksums: "after_crash" must be "after-crash", "always" or "never" (did you mean "after-crash"?)`}, nil},
	{"resync_checksums type", peers(twoPeers, `resync_checksums = false`), []string{`config: volume "r0": resync_checksums: must be a string, not a boolean`}, nil},
	{"after_split_brain unknown", peers(twoPeers, `after_split_brain = "discard-everything"`), []string{`config: volume "r0": after_split_brain: "discard-everything" must be "disconnect", "discard-zero-changes", "discard-least-changes", "discard-younger-primary" or "discard-secondary"`}, nil},
	{"after_split_brain case", peers(twoPeers, `after_split_brain = "Discard_Secondary"`), []string{`after_split_brain: "Discard_Secondary" must be "disconnect", `, `(did you mean "discard-secondary"?)`}, nil},
	{"after_split_brain type", peers(twoPeers, `after_split_brain = 1`), []string{`config: volume "r0": after_split_brain: must be a string, not an integer`}, nil},
	{"split_brain_handler empty", peers(twoPeers, `split_brain_handler = ""`), []string{`config: volume "r0": split_brain_handler: must not be empty (leave the key out instead)`}, nil},
	{"split_brain_handler NUL", peers(twoPeers, `split_brain_handler = "a\u0000b"`), []string{`config: volume "r0": split_brain_handler: command "a\x00b" contains a NUL byte`}, nil},
	{"split_brain_handler type", peers(twoPeers, `split_brain_handler = ["/bin/true"]`), []string{`config: volume "r0": split_brain_handler: must be a string, not an array`}, nil},

	// Failover: [cluster] failover, failover_profile.
	{"failover type", peers(strings.Replace(threeVoters, "failover = true", `failover = "yes"`, 1), `quorum_loss = "fail"`), []string{`config: cluster: failover: must be true or false, not a string`}, nil},
	{"failover_profile without failover", "[cluster]\nfailover_profile = \"fast\"\n" + minimal, []string{`config: cluster: failover_profile: needs failover = true (the profile sets the timings of automatic failover, which is off)`}, nil},
	{"failover_profile with failover false", "[cluster]\nfailover = false\nfailover_profile = \"default\"\n" + minimal, []string{`config: cluster: failover_profile: needs failover = true (the profile sets the timings of automatic failover, which is off)`}, nil},
	{"failover_profile unknown", peers(strings.Replace(threeVoters, "failover = true", "failover = true\nfailover_profile = \"slow\"", 1), ""), []string{`config: cluster: failover_profile: "slow" must be "default" or "fast"`}, nil},
	{"failover_profile case", peers(strings.Replace(threeVoters, "failover = true", "failover = true\nfailover_profile = \"Fast\"", 1), ""), []string{`config: cluster: failover_profile: "Fast" must be "default" or "fast" (did you mean "fast"?)`}, nil},
	{"failover_profile type", peers(strings.Replace(threeVoters, "failover = true", "failover = true\nfailover_profile = 1", 1), ""), []string{`config: cluster: failover_profile: must be a string, not an integer`}, nil},

	// Failover: [[node]] gossip, witness.
	{"gossip empty host", voters("alpha", `gossip = ":7946"`, ""), []string{`config: node "alpha": gossip: ":7946": the host must be this node's own IP address, where the other nodes reach it: not a wildcard (empty, 0.0.0.0 or ::), a host name (the gossip layer resolves no names) or an address with a zone; e.g. "10.0.0.1:7946"`}, nil},
	{"gossip 0.0.0.0", voters("alpha", `gossip = "0.0.0.0:7946"`, ""), []string{`config: node "alpha": gossip: "0.0.0.0:7946": the host must be this node's own IP address, where the other nodes reach it: not a wildcard`}, nil},
	{"gossip ::", voters("alpha", `gossip = "[::]:7946"`, ""), []string{`config: node "alpha": gossip: "[::]:7946": the host must be this node's own IP address`}, nil},
	{"gossip host name", voters("alpha", `gossip = "alpha.example.com:7946"`, ""), []string{`config: node "alpha": gossip: "alpha.example.com:7946": the host must be this node's own IP address, where the other nodes reach it: not a wildcard (empty, 0.0.0.0 or ::), a host name (the gossip layer resolves no names) or an address with a zone; e.g. "10.0.0.1:7946"`}, nil},
	{"gossip zone", voters("alpha", `gossip = "[fe80::1%eth0]:7946"`, ""), []string{`config: node "alpha": gossip: "[fe80::1%eth0]:7946": the host must be this node's own IP address`}, nil},
	{"gossip no port", voters("alpha", `gossip = "10.0.0.1"`, ""), []string{`config: node "alpha": gossip: "10.0.0.1": must be host:port (missing port in address)`}, nil},
	{"gossip port 0", voters("alpha", `gossip = "10.0.0.1:0"`, ""), []string{`config: node "alpha": gossip: "10.0.0.1:0": port "0" must be a number from 1 to 65535`}, nil},
	{"gossip bad host", voters("alpha", `gossip = "a_b:7946"`, ""), []string{`config: node "alpha": gossip: "a_b:7946": host "a_b" is neither an IP address nor a host name`}, nil},
	{"gossip empty", voters("alpha", `gossip = ""`, ""), []string{`config: node "alpha": gossip: must not be empty (leave the key out instead)`}, nil},
	{"gossip type", voters("alpha", `gossip = 7946`, ""), []string{`config: node "alpha": gossip: must be a string, not an integer`}, nil},
	{"gossip is own address", voters("alpha", `gossip = "10.0.0.1:7789"`, ""), []string{`config: node "alpha": gossip: 10.0.0.1:7789 clashes with address of node "alpha" (10.0.0.1:7789)`}, nil},
	{"gossip twice", voters("beta", `gossip = "10.0.0.1:7946"`, ""), []string{`config: node "beta": gossip: 10.0.0.1:7946 clashes with gossip of node "alpha" (10.0.0.1:7946)`}, nil},
	{"gossip on a metrics wildcard port", strings.Replace(peers(threeVoters, ""), `name = "beta"`, "name = \"beta\"\nmetrics = \":7946\"", 1), []string{`config: node "beta": metrics: :7946 clashes with gossip of node "alpha" (10.0.0.1:7946)`}, nil},
	{"gossip missing", voters("beta", "", ""), []string{`config: node "beta": gossip: is required because failover needs every voter's gossip address (it holds a replica of replicated volume "r0")`}, nil},
	{"gossip missing on a witness", voters("witness", "", ""), []string{`config: node "witness": gossip: is required because failover needs every voter's gossip address (it is a witness)`}, nil},
	{"witness type", peers(strings.Replace(threeVoters, "witness = true", `witness = "yes"`, 1), ""), []string{`config: node "witness": witness: must be true or false, not a string`}, nil},
	{"witness without failover", peers(twoPeers+"[[node]]\nname = \"w\"\nwitness = true\n", ""), []string{`config: node "w": witness: witness = true needs [cluster] failover = true (a witness holds no data: it only votes in failover elections)`}, nil},
	{"witness holds a replica", threeVoters + vol("r0", "alpha", "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"") + vol("r1", "witness", ""), []string{`config: node "witness": witness: a witness holds no data, but node "witness" holds a replica of volume "r1"; remove witness = true or that replica`}, nil},
	{"two voters", peers(strings.Replace(strings.Replace(twoPeers, "[cluster]", "[cluster]\nfailover = true", 1), `address = "10.0.0.2:7789"`, "address = \"10.0.0.2:7789\"\ngossip = \"10.0.0.2:7946\"", 1), ""), nil, nil}, // placeholder, replaced in init

	// Failover: [[volume]] keys.
	{"failover key without failover", peers(twoPeers, "auto_promote = false"), []string{`config: volume "r0": auto_promote: needs [cluster] failover = true (automatic failover is off)`}, nil},
	{"failover key on a single replica", threeVoters + strings.Replace(vol("r1", "alpha", ""), `size = "1MiB"`, "size = \"1MiB\"\nquorum_loss = \"fail\"", 1) + vol("r0", "alpha", "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\""), []string{`config: volume "r1": quorum_loss: only applies to a replicated volume (volume "r1" has 1 replica: failover moves the primary role between replicas)`}, nil},
	{"failover key on a single replica without failover", volKeys("size = 4096\nfence_peer = \"/bin/true\""), []string{`config: volume "r0": fence_peer: only applies to a replicated volume (volume "r0" has 1 replica) and needs [cluster] failover = true`}, nil},
	{"auto_promote type", peers(threeVoters, `auto_promote = "no"`), []string{`config: volume "r0": auto_promote: must be true or false, not a string`}, nil},
	{"preferred witness", peers(threeVoters, `preferred = "witness"`), []string{`config: volume "r0": preferred: node "witness" holds no replica of volume "r0"; the preferred node must be one of its replicas' nodes: "alpha", "beta"`}, nil},
	{"preferred unknown", peers(threeVoters, `preferred = "gamma"`), []string{`config: volume "r0": preferred: node "gamma" holds no replica of volume "r0"; the preferred node must be one of its replicas' nodes: "alpha", "beta"`}, nil},
	{"preferred empty", peers(threeVoters, `preferred = ""`), []string{`config: volume "r0": preferred: must not be empty (leave the key out instead)`}, nil},
	{"preferred type", peers(threeVoters, `preferred = 1`), []string{`config: volume "r0": preferred: must be a string, not an integer`}, nil},
	{"quorum_loss unknown", peers(threeVoters, `quorum_loss = "panic"`), []string{`config: volume "r0": quorum_loss: "panic" must be "suspend" or "fail"`}, nil},
	{"quorum_loss case", peers(threeVoters, `quorum_loss = "Suspend"`), []string{`config: volume "r0": quorum_loss: "Suspend" must be "suspend" or "fail" (did you mean "suspend"?)`}, nil},
	{"quorum_loss type", peers(threeVoters, `quorum_loss = false`), []string{`config: volume "r0": quorum_loss: must be a string, not a boolean`}, nil},
	{"after_promote empty", peers(threeVoters, `after_promote = ""`), []string{`config: volume "r0": after_promote: must not be empty (leave the key out instead)`}, nil},
	{"before_demote NUL", peers(threeVoters, `before_demote = "a\u0000b"`), []string{`config: volume "r0": before_demote: command "a\x00b" contains a NUL byte`}, nil},
	{"fence_peer type", peers(threeVoters, `fence_peer = ["/usr/lib/blkrep/fence"]`), []string{`config: volume "r0": fence_peer: must be a string, not an array`}, nil},
	{"quorum_lost empty", peers(threeVoters, `quorum_lost = ""`), []string{`config: volume "r0": quorum_lost: must not be empty (leave the key out instead)`}, nil},
	{"handler_timeout too short", peers(threeVoters, `handler_timeout = "999ms"`), []string{`config: volume "r0": handler_timeout: "999ms" is out of range: it must be from 1s to 10m`}, nil},
	{"handler_timeout too long", peers(threeVoters, `handler_timeout = "1h"`), []string{`config: volume "r0": handler_timeout: "1h" is out of range: it must be from 1s to 10m`}, nil},
	{"handler_timeout integer", peers(threeVoters, `handler_timeout = 30`), []string{`config: volume "r0": handler_timeout: 30 has no unit: use a string such as "30s" or "30ms"`}, nil},
	{"handler_timeout invalid", peers(threeVoters, `handler_timeout = "30 s"`), []string{`config: volume "r0": handler_timeout: invalid duration "30 s" (use a Go duration such as "500ms" or "10s")`}, nil},
}

// replicatedFailover is replicated(n, volumeKeys) with failover on and a gossip
// address on every node (no witness).
func replicatedFailover(n int, volumeKeys string) string {
	in := strings.Replace(replicated(n, volumeKeys), "[cluster]", "[cluster]\nfailover = true", 1)
	for i := 1; i <= n; i++ {
		a := fmt.Sprintf("address = \"10.0.0.%d:7789\"\n", i)
		in = strings.Replace(in, a, a+fmt.Sprintf("gossip = \"10.0.0.%d:7946\"\n", i), 1)
	}
	return in
}

// replicated returns a volume r0 with n replicas on nodes n1..nN (with
// addresses, and a cluster secret) and the given extra volume keys.
func replicated(n int, volumeKeys string) string {
	var b strings.Builder
	b.WriteString("[cluster]\nsecret = \"" + testSecret + "\"\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "[[node]]\nname = \"n%d\"\naddress = \"10.0.0.%d:7789\"\n", i, i)
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
		case "two voters":
			// Failover on, alpha and beta with gossip, no witness.
			c.toml = voters("witness", "", "")
			c.toml = strings.Replace(c.toml, "witness = true\n", "", 1)
			c.toml = strings.Replace(c.toml, "[[node]]\nname = \"witness\"\n", "", 1)
			c.want = []string{`config: volume "r0": replica: failover needs at least 3 voters (the nodes holding a replica, and the witnesses), but volume "r0" has 2, "alpha" and "beta": ` +
				`losing either node would stop writes on the other; add a node with witness = true (or, at your own risk, two_node = true with a fence_peer handler)`}
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
	for _, name := range []string{"no node", "node name missing", "node name invalid", "node name type", "duplicate node",
		"secret too short", "secret_file empty", "secret and secret_file", "address empty host", "address no port", "address type",
		"address twice", "ping_interval invalid", "ping_timeout too long", "ping_timeout not less than ping_interval",
		"resync_rate_max zero", "resync_rate_min above max", "resync_rate_min unlimited",
		"failover type", "failover_profile without failover", "gossip empty host", "gossip host name", "gossip type", "gossip twice",
		"gossip missing", "gossip missing on a witness", "witness type", "witness without failover", "witness holds a replica", "two voters",
		"failover key without failover", "failover key on a single replica", "failover key on a single replica without failover",
		"preferred witness", "quorum_loss unknown", "handler_timeout integer"} {
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
		{"same disk on two nodes", twoPeers + vol("r0", "alpha", "") + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"alpha-r0.img\"\n"},
		{"same device on two nodes", twoPeers + vol("r0", "alpha", `  device = "/dev/nbd0"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n  device = \"/dev/nbd0\"\n"},
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
		{"same meta_disk on two nodes", twoPeers + vol("r0", "alpha", `  meta_disk = "r0.meta"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n  meta_disk = \"r0.meta\"\n"},
		{"meta_disk on another node's disk", twoPeers + vol("r0", "alpha", `  meta_disk = "b.img"`) + "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"\n"},
		{"huge size with external metadata", volSize(`size = "8388607TiB"`) + "  meta_disk = \"/srv/r0.meta\"\n"},
		{"huge size without metadata", volSize(`size = "8388607TiB"`) + "  meta_disk = \"none\"\n"},

		// Replication.
		{"replicated", peers(twoPeers, "")},
		{"replication keys on a single replica", volKeys("size = 4096\nprotocol = \"A\"\nping_interval = \"1s\"\nresync_rate_max = \"1MiB/s\"\nresync_rate_min = 1")},
		{"secret shortest", peers(strings.Replace(twoPeers, testSecret, strings.Repeat("s", 16), 1), "")},
		{"secret longest", peers(strings.Replace(twoPeers, testSecret, strings.Repeat("s", 1024), 1), "")},
		{"secret_file", peers(strings.Replace(twoPeers, `secret = "`+testSecret+`"`, `secret_file = "/etc/blkrep/secret"`, 1), "")},
		{"secret without replication", "[cluster]\nsecret = \"" + testSecret + "\"\n" + minimal},
		{"witness without address", peers(twoPeers+"[[node]]\nname = \"witness\"\n", "")},
		{"address on a node without replica", minimal + "[[node]]\nname = \"beta\"\naddress = \"10.0.0.2:7789\"\n"},
		{"addresses on one host", peers(strings.NewReplacer("10.0.0.1:7789", "127.0.0.1:7789", "10.0.0.2:7789", "127.0.0.1:7790").Replace(twoPeers), "")},
		{"address host names and IPv6", peers(strings.NewReplacer("10.0.0.1:7789", "alpha.example.com:7789", "10.0.0.2:7789", "[fd00::2]:7789").Replace(twoPeers), "")},
		{"address and nbd_tcp on one host", peersNode("alpha", `nbd_tcp = "10.0.0.1:10809"`)},
		{"metrics wildcard", peersNode("alpha", `metrics = ":9100"`)},
		{"protocol lower case", peers(twoPeers, `protocol = "a"`)},
		{"durations shortest", peers(twoPeers, "ping_interval = \"1s\"\nping_timeout = \"999ms\"\ntimeout = \"1s\"\nconnect_interval = \"100ms\"")},
		{"durations longest", peers(twoPeers, "ping_interval = \"10m\"\nping_timeout = \"1m\"\ntimeout = \"10m\"\nconnect_interval = \"10m\"")},
		{"max_epoch_writes bounds", peers(twoPeers, "max_epoch_writes = 1") + strings.Replace(strings.Replace(vol("r1", "alpha", ""), `size = "1MiB"`, "size = \"1MiB\"\nmax_epoch_writes = 65536", 1), "alpha-r1", "a1", 1)},
		{"resync rates equal", peers(twoPeers, "resync_rate_max = \"4MiB/s\"\nresync_rate_min = \"4MiB\"")},
		{"resync_in_flight bounds", peers(twoPeers, `resync_in_flight = "64KiB"`) + strings.Replace(vol("r1", "alpha", ""), `size = "1MiB"`, "size = \"1MiB\"\nresync_in_flight = \"1GiB\"", 1)},

		// Failover.
		{"failover", peers(threeVoters, "")},
		{"failover fast", peers(strings.Replace(threeVoters, "failover = true", "failover = true\nfailover_profile = \"fast\"", 1), "")},
		{"failover false", "[cluster]\nfailover = false\n" + minimal},
		{"failover without a replicated volume", "[cluster]\nfailover = true\n" + minimal},
		{"failover with a volume of one replica", peers(threeVoters, "") + vol("r1", "alpha", "")},
		{"failover with three data nodes", replicatedFailover(3, "")},
		{"failover with two witnesses", strings.Replace(peers(threeVoters, ""), "[[volume]]", "[[node]]\nname = \"w2\"\nwitness = true\ngossip = \"10.0.0.4:7946\"\n[[volume]]", 1)},
		{"witness false without failover", strings.Replace(minimal, `name = "alpha"`, "name = \"alpha\"\nwitness = false", 1)},
		{"gossip without failover", peersNode("alpha", `gossip = "10.0.0.1:7946"`)},
		{"gossip on a node that is no voter", peers(threeVoters, "") + "[[node]]\nname = \"spare\"\ngossip = \"10.0.0.9:7946\"\n"},
		{"gossip IPv6 and mapped IPv4", peers(strings.NewReplacer("10.0.0.1:7946", "[fd00::1]:7946", "10.0.0.2:7946", "[::ffff:10.0.0.2]:7946").Replace(threeVoters), "")},
		{"gossip on the address host", voters("alpha", `gossip = "10.0.0.1:7790"`, "")},
		{"failover keys", peers(threeVoters, "auto_promote = true\npreferred = \"alpha\"\nquorum_loss = \"suspend\"\nhandler_timeout = \"1s\"")},
		{"handler_timeout longest", peers(threeVoters, `handler_timeout = "10m"`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.toml), testDir); err != nil {
				t.Errorf("Parse: %v\ninput:\n%s", err, tc.toml)
			}
		})
	}
}

// TestReplicationValues: the replication keys of [[volume]], their forms and
// defaults.
func TestReplicationValues(t *testing.T) {
	type repl struct {
		protocol                                 string
		pingInterval, pingTimeout, timeout, conn time.Duration
		epoch                                    int
		rateMax, rateMin, inFlight               int64
		checksums, afterSplitBrain, handler      string
	}
	def := repl{"C", 10 * time.Second, 500 * time.Millisecond, 6 * time.Second, 3 * time.Second, 2048, 0, 4 << 20, 8 << 20, "after-crash", "disconnect", ""}
	with := func(f func(*repl)) repl {
		r := def
		f(&r)
		return r
	}
	for _, tc := range []struct {
		keys string
		want repl
	}{
		{"", def},
		{`protocol = "A"`, with(func(r *repl) { r.protocol = "A" })},
		{`protocol = "b"`, with(func(r *repl) { r.protocol = "B" })},
		{`protocol = "c"`, def},
		{`ping_interval = "1m30s"`, with(func(r *repl) { r.pingInterval = 90 * time.Second })},
		{`ping_timeout = "1.5s"`, with(func(r *repl) { r.pingTimeout = 1500 * time.Millisecond })},
		{`timeout = "2500ms"`, with(func(r *repl) { r.timeout = 2500 * time.Millisecond })},
		{`connect_interval = "250ms"`, with(func(r *repl) { r.conn = 250 * time.Millisecond })},
		{`max_epoch_writes = 100`, with(func(r *repl) { r.epoch = 100 })},
		{`resync_rate_max = "unlimited"`, def},
		{`resync_rate_max = " Unlimited "`, def},
		{`resync_rate_max = "100MiB/s"`, with(func(r *repl) { r.rateMax = 100 << 20 })},
		{`resync_rate_max = "100 MiB/s"`, with(func(r *repl) { r.rateMax = 100 << 20 })},
		{`resync_rate_max = "1G/S"`, with(func(r *repl) { r.rateMax = 1 << 30 })},
		{`resync_rate_max = "100MB"`, with(func(r *repl) { r.rateMax = 100e6 })},
		{`resync_rate_max = "5000000"`, with(func(r *repl) { r.rateMax = 5e6 })},
		{`resync_rate_max = 5000000`, with(func(r *repl) { r.rateMax = 5e6 })},
		{`resync_rate_min = "1KiB/s"`, with(func(r *repl) { r.rateMin = 1 << 10 })},
		{`resync_rate_min = 1`, with(func(r *repl) { r.rateMin = 1 })},
		{"resync_rate_max = \"8MiB/s\"\nresync_rate_min = \"8MiB/s\"", with(func(r *repl) { r.rateMax, r.rateMin = 8<<20, 8<<20 })},
		{`resync_rate_min = "1GiB/s"`, with(func(r *repl) { r.rateMin = 1 << 30 })}, // any minimum with no limit
		{`resync_in_flight = 65536`, with(func(r *repl) { r.inFlight = 64 << 10 })},
		{`resync_in_flight = "1GiB"`, with(func(r *repl) { r.inFlight = 1 << 30 })},
		{`resync_checksums = "always"`, with(func(r *repl) { r.checksums = "always" })},
		{`resync_checksums = "never"`, with(func(r *repl) { r.checksums = "never" })},
		{`resync_checksums = "after-crash"`, def},
		{`after_split_brain = "disconnect"`, def},
		{`after_split_brain = "discard-zero-changes"`, with(func(r *repl) { r.afterSplitBrain = "discard-zero-changes" })},
		{`after_split_brain = "discard-least-changes"`, with(func(r *repl) { r.afterSplitBrain = "discard-least-changes" })},
		{`after_split_brain = "discard-younger-primary"`, with(func(r *repl) { r.afterSplitBrain = "discard-younger-primary" })},
		{`after_split_brain = "discard-secondary"`, with(func(r *repl) { r.afterSplitBrain = "discard-secondary" })},
		{`split_brain_handler = "logger -t blkrep 'split brain'"`, with(func(r *repl) { r.handler = "logger -t blkrep 'split brain'" })},
	} {
		c, err := Parse([]byte(peers(twoPeers, tc.keys)), testDir)
		if err != nil {
			t.Errorf("%q: %v", tc.keys, err)
			continue
		}
		v := c.Volumes[0]
		got := repl{v.Protocol, v.PingInterval, v.PingTimeout, v.Timeout, v.ConnectInterval, v.MaxEpochWrites,
			v.ResyncRateMax, v.ResyncRateMin, v.ResyncInFlight, v.ResyncChecksums, v.AfterSplitBrain, v.SplitBrainHandler}
		if got != tc.want {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.keys, got, tc.want)
		}
	}
}

// TestReplicationReportsAll: a missing secret is reported once however many
// volumes are replicated, a missing address once per node, after the other
// problems; nodes without a replicated replica need no address.
func TestReplicationReportsAll(t *testing.T) {
	in := twoNodes + "[[node]]\nname = \"gamma\"\n[[node]]\nname = \"witness\"\n" +
		vol("r0", "alpha", "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"") +
		vol("r1", "gamma", "") +
		strings.Replace(vol("r2", "gamma", "  [[volume.replica]]\n  node = \"alpha\"\n  disk = \"a2.img\"\n  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b2.img\""),
			`size = "1MiB"`, "size = \"1MiB\"\nprotocol = \"D\"", 1)
	_, err := Parse([]byte(in), testDir)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		`config: volume "r2": protocol: "D" must be "A", "B" or "C" (a write completes once written locally and A: sent to the peers, B: received by them, C: written by them)`,
		`config: cluster: secret: is required because volume "r0" has 2 replicas (the nodes authenticate each other with it): set secret, or secret_file to the path of a file holding it; generate one with: head -c 32 /dev/urandom | base64`,
		`config: node "alpha": address: is required because it holds a replica of replicated volume "r0"`,
		`config: node "beta": address: is required because it holds a replica of replicated volume "r0"`,
		`config: node "gamma": address: is required because it holds a replica of replicated volume "r2"`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestSecretNotEchoed: no message about a secret repeats it.
func TestSecretNotEchoed(t *testing.T) {
	for _, secret := range []string{"hunter2", strings.Repeat("x", 1025)} {
		_, err := Parse([]byte(peers(strings.Replace(twoPeers, testSecret, secret, 1), "")), testDir)
		if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "cluster: secret: is ") {
			t.Errorf("secret of %d bytes: %v", len(secret), err)
		}
	}
}

func TestPeers(t *testing.T) {
	c, err := Parse([]byte(replicated(3, "")+vol("r1", "n2", "")), testDir)
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := &c.Volumes[0], &c.Volumes[1]
	for _, tc := range []struct {
		v    *Volume
		node string
		want []string
	}{
		{r0, "n1", []string{"n2", "n3"}},
		{r0, "n2", []string{"n1", "n3"}},
		{r0, "n3", []string{"n1", "n2"}},
		{r0, "witness", []string{"n1", "n2", "n3"}},
		{r1, "n2", nil},
		{r1, "n1", []string{"n2"}},
	} {
		if got := tc.v.Peers(tc.node); !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%s.Peers(%q) = %q, want %q", tc.v.Name, tc.node, got, tc.want)
		}
	}
	if !r0.Replicated() || r1.Replicated() {
		t.Errorf("Replicated: r0 %v, r1 %v", r0.Replicated(), r1.Replicated())
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
	if v.Protocol != "C" || v.PingInterval != 10*time.Second || v.PingTimeout != 500*time.Millisecond || v.Timeout != 6*time.Second ||
		v.ConnectInterval != 3*time.Second || v.MaxEpochWrites != 2048 || v.ResyncRateMax != 0 || v.ResyncRateMin != 4<<20 ||
		v.ResyncInFlight != 8<<20 || v.ResyncChecksums != "after-crash" || v.AfterSplitBrain != "disconnect" || v.SplitBrainHandler != "" {
		t.Errorf("volume replication = %+v", v)
	}
	if v.Replicated() || v.Peers("alpha") != nil {
		t.Errorf("Replicated %v, Peers(alpha) %q", v.Replicated(), v.Peers("alpha"))
	}
	if c.Cluster.Secret != "" || c.Cluster.SecretFile != "" {
		t.Errorf("cluster = %+v", c.Cluster)
	}
	// Failover is off; its fields still hold the defaults.
	if c.Cluster.Failover || c.Cluster.FailoverProfile != "default" || c.Cluster.FailoverProbeInterval != time.Second ||
		c.Cluster.FailoverProbeTimeout != 500*time.Millisecond || c.Cluster.FailoverSuspicionMult != 4 || c.Cluster.FailoverLease != 3*time.Second {
		t.Errorf("cluster failover = %+v", c.Cluster)
	}
	if v.Failover || !v.AutoPromote || v.Preferred != "alpha" || v.QuorumLoss != "suspend" || v.AfterPromote != "" || v.BeforeDemote != "" ||
		v.FencePeer != "" || v.QuorumLost != "" || v.HandlerTimeout != 30*time.Second {
		t.Errorf("volume failover = %+v", v)
	}
	if w, voters := c.Witnesses(), v.Voters(c); w != nil || !slices.Equal(voters, []string{"alpha"}) {
		t.Errorf("Witnesses %q, Voters %q", w, voters)
	}
	if s, err := c.LoadSecret(); s != nil || err != nil {
		t.Errorf("LoadSecret = %q, %v", s, err)
	}
	wantRep := Replica{Node: "alpha", Disk: "/etc/blkrep/alpha-r0.img", MetaDisk: "internal"}
	if len(v.Replicas) != 1 || v.Replicas[0] != wantRep {
		t.Errorf("replicas = %+v, want [%+v]", v.Replicas, wantRep)
	}
}

// allKeys is a two-node cluster with a witness (a node holding no replica, so
// needing no address) and every key set.
const allKeys = `
[cluster]
name = "prod_1"
secret_file = "secret"
failover = true
failover_profile = "fast"

[[node]]
name = "alpha"
control_socket = "/run/blkrep/alpha.ctl"
nbd_tcp = "10.0.0.1:10809"
address = "10.0.0.1:7789"
metrics = "10.0.0.1:9100"
gossip = "10.0.0.1:7946"

[[node]]
name = "beta"
nbd_tcp = "10.0.0.2:10809"
address = "beta.example.com:7789"
metrics = ":9101"
gossip = "[fd00::2]:7946"

[[node]]
name = "witness"
metrics = "10.0.0.3:9100"
gossip = "10.0.0.3:7946"
witness = true

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
protocol = "b"
ping_interval = "2s"
ping_timeout = "250ms"
timeout = "1500ms"
connect_interval = "500ms"
max_epoch_writes = 512
resync_rate_max = "100MiB/s"
resync_rate_min = 10485760
resync_in_flight = "16MiB"
resync_checksums = "always"
after_split_brain = "discard-zero-changes"
split_brain_handler = "/usr/local/bin/notify-split-brain r0"
auto_promote = false
preferred = "beta"
quorum_loss = "fail"
after_promote = "/usr/local/bin/notify promoted r0"
before_demote = "sync"
fence_peer = "/usr/lib/blkrep/fence-peer r0"
quorum_lost = "logger -t blkrep 'r0 lost quorum'"
handler_timeout = "2m30s"

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

func TestAllKeys(t *testing.T) {
	in := allKeys
	c, err := Parse([]byte(in), testDir)
	if err != nil {
		t.Fatal(err)
	}
	wantCluster := Cluster{Name: "prod_1", SecretFile: "/etc/blkrep/secret", Failover: true, FailoverProfile: "fast",
		FailoverProbeInterval: 200 * time.Millisecond, FailoverProbeTimeout: 100 * time.Millisecond, FailoverSuspicionMult: 2, FailoverLease: time.Second}
	if c.Cluster != wantCluster {
		t.Errorf("cluster = %+v, want %+v", c.Cluster, wantCluster)
	}
	wantNodes := []Node{
		{Name: "alpha", ControlSocket: "/run/blkrep/alpha.ctl", NBDTCP: "10.0.0.1:10809", Address: "10.0.0.1:7789", Metrics: "10.0.0.1:9100", Gossip: "10.0.0.1:7946"},
		{Name: "beta", ControlSocket: "/etc/blkrep/beta.ctl", NBDTCP: "10.0.0.2:10809", Address: "beta.example.com:7789", Metrics: ":9101", Gossip: "[fd00::2]:7946"},
		{Name: "witness", ControlSocket: "/etc/blkrep/witness.ctl", Metrics: "10.0.0.3:9100", Gossip: "10.0.0.3:7946", Witness: true},
	}
	if len(c.Nodes) != len(wantNodes) {
		t.Fatalf("nodes = %+v", c.Nodes)
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
	if v.Protocol != "B" || v.PingInterval != 2*time.Second || v.PingTimeout != 250*time.Millisecond ||
		v.Timeout != 1500*time.Millisecond || v.ConnectInterval != 500*time.Millisecond || v.MaxEpochWrites != 512 ||
		v.ResyncRateMax != 100<<20 || v.ResyncRateMin != 10<<20 || v.ResyncInFlight != 16<<20 ||
		v.ResyncChecksums != "always" || v.AfterSplitBrain != "discard-zero-changes" ||
		v.SplitBrainHandler != "/usr/local/bin/notify-split-brain r0" {
		t.Errorf("volume replication = %+v", v)
	}
	if !v.Failover || v.AutoPromote || v.Preferred != "beta" || v.QuorumLoss != "fail" ||
		v.AfterPromote != "/usr/local/bin/notify promoted r0" || v.BeforeDemote != "sync" ||
		v.FencePeer != "/usr/lib/blkrep/fence-peer r0" || v.QuorumLost != "logger -t blkrep 'r0 lost quorum'" ||
		v.HandlerTimeout != 150*time.Second {
		t.Errorf("volume failover = %+v", v)
	}
	if got := v.Voters(c); !slices.Equal(got, []string{"alpha", "beta", "witness"}) {
		t.Errorf("Voters = %q", got)
	}
	if got := c.Witnesses(); !slices.Equal(got, []string{"witness"}) {
		t.Errorf("Witnesses = %q", got)
	}
	if !v.Replicated() || !slices.Equal(v.Peers("alpha"), []string{"beta"}) || !slices.Equal(v.Peers("witness"), []string{"alpha", "beta"}) {
		t.Errorf("Replicated %v, Peers(alpha) %q, Peers(witness) %q", v.Replicated(), v.Peers("alpha"), v.Peers("witness"))
	}
	if lr := c.LocalReplicas("witness"); lr != nil {
		t.Errorf("LocalReplicas(witness) = %+v", lr)
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
		"":        "cluster node volume",
		"cluster": "name secret secret_file failover failover_profile",
		"node":    "name control_socket nbd_tcp address metrics gossip witness",
		"volume": "name size description block_size device_timeout dead_conn_timeout bytes_per_bit al_extents peer_slots " +
			"protocol ping_interval ping_timeout timeout connect_interval max_epoch_writes " +
			"resync_rate_max resync_rate_min resync_in_flight resync_checksums after_split_brain split_brain_handler " +
			"auto_promote preferred quorum_loss after_promote before_demote fence_peer two_node quorum_lost handler_timeout replica",
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

// TestDocExamples: every TOML example in docs/config.md parses.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```toml\n")[1:]
	if len(blocks) < 2 {
		t.Fatalf("docs/config.md has %d TOML examples, want the standalone and the replicated one", len(blocks))
	}
	for i, b := range blocks {
		b, _, _ = strings.Cut(b, "```")
		if _, err := Parse([]byte(b), testDir); err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, b)
		}
	}
}

// TestFailoverValues: the failover keys, their defaults, the two profiles, and
// Voters and Witnesses.
func TestFailoverValues(t *testing.T) {
	type timings struct {
		profile        string
		probe, timeout time.Duration
		mult           int
		lease          time.Duration
	}
	def := timings{"default", time.Second, 500 * time.Millisecond, 4, 3 * time.Second}
	fast := timings{"fast", 200 * time.Millisecond, 100 * time.Millisecond, 2, time.Second}
	for _, tc := range []struct {
		line string
		want timings
	}{
		{"", def},
		{`failover_profile = "default"`, def},
		{`failover_profile = "fast"`, fast},
	} {
		c, err := Parse([]byte(peers(strings.Replace(threeVoters, "failover = true", "failover = true\n"+tc.line, 1), "")), testDir)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		cl := c.Cluster
		if got := (timings{cl.FailoverProfile, cl.FailoverProbeInterval, cl.FailoverProbeTimeout, cl.FailoverSuspicionMult, cl.FailoverLease}); !cl.Failover || got != tc.want {
			t.Errorf("%q: failover %v, timings %+v, want %+v", tc.line, cl.Failover, got, tc.want)
		}
	}

	// Defaults with failover on.
	c, err := Parse([]byte(peers(threeVoters, "")+vol("r1", "beta", "")), testDir)
	if err != nil {
		t.Fatal(err)
	}
	v, single := &c.Volumes[0], &c.Volumes[1]
	if !v.Failover || !v.AutoPromote || v.Preferred != "alpha" || v.QuorumLoss != "suspend" || v.AfterPromote != "" || v.BeforeDemote != "" ||
		v.FencePeer != "" || v.QuorumLost != "" || v.HandlerTimeout != 30*time.Second {
		t.Errorf("volume failover = %+v", v)
	}
	// A volume with one replica does not fail over; its voters would be its
	// node and the witnesses.
	if single.Failover || single.Preferred != "beta" || !slices.Equal(single.Voters(c), []string{"beta", "witness"}) {
		t.Errorf("single-replica volume: failover %v, preferred %q, voters %q", single.Failover, single.Preferred, single.Voters(c))
	}
	wantNodes := []Node{
		{Name: "alpha", ControlSocket: "/etc/blkrep/alpha.ctl", Address: "10.0.0.1:7789", Gossip: "10.0.0.1:7946"},
		{Name: "beta", ControlSocket: "/etc/blkrep/beta.ctl", Address: "10.0.0.2:7789", Gossip: "10.0.0.2:7946"},
		{Name: "witness", ControlSocket: "/etc/blkrep/witness.ctl", Gossip: "10.0.0.3:7946", Witness: true},
	}
	if !slices.Equal(c.Nodes, wantNodes) {
		t.Errorf("nodes = %+v\nwant %+v", c.Nodes, wantNodes)
	}

	// Each key on its own.
	for _, tc := range []struct {
		line  string
		check func(v *Volume) bool
	}{
		{"auto_promote = false", func(v *Volume) bool { return !v.AutoPromote }},
		{"auto_promote = true", func(v *Volume) bool { return v.AutoPromote }},
		{`preferred = "beta"`, func(v *Volume) bool { return v.Preferred == "beta" }},
		{`quorum_loss = "fail"`, func(v *Volume) bool { return v.QuorumLoss == "fail" }},
		{`quorum_loss = "suspend"`, func(v *Volume) bool { return v.QuorumLoss == "suspend" }},
		{`after_promote = "/bin/true"`, func(v *Volume) bool { return v.AfterPromote == "/bin/true" }},
		{`before_demote = "sync; sync"`, func(v *Volume) bool { return v.BeforeDemote == "sync; sync" }},
		{`fence_peer = "/usr/lib/blkrep/fence"`, func(v *Volume) bool { return v.FencePeer == "/usr/lib/blkrep/fence" }},
		{`quorum_lost = "logger lost"`, func(v *Volume) bool { return v.QuorumLost == "logger lost" }},
		{`handler_timeout = "1s"`, func(v *Volume) bool { return v.HandlerTimeout == time.Second }},
		{`handler_timeout = "1.5s"`, func(v *Volume) bool { return v.HandlerTimeout == 1500*time.Millisecond }},
		{`handler_timeout = "10m"`, func(v *Volume) bool { return v.HandlerTimeout == 10*time.Minute }},
	} {
		c, err := Parse([]byte(peers(threeVoters, tc.line)), testDir)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
		} else if !tc.check(&c.Volumes[0]) {
			t.Errorf("%q: volume %+v", tc.line, c.Volumes[0])
		}
	}
}

// TestVoters: Voters is sorted and includes every witness; Witnesses is in file
// order.
func TestVoters(t *testing.T) {
	in := `
[cluster]
secret = "` + testSecret + `"
failover = true
[[node]]
name = "zeta"
address = "10.0.0.1:7789"
gossip = "10.0.0.1:7946"
[[node]]
name = "w2"
witness = true
gossip = "10.0.0.2:7946"
[[node]]
name = "beta"
address = "10.0.0.3:7789"
gossip = "10.0.0.3:7946"
[[node]]
name = "idle"
[[node]]
name = "a-witness"
witness = true
gossip = "10.0.0.4:7946"
[[volume]]
name = "r0"
size = "1MiB"
  [[volume.replica]]
  node = "zeta"
  disk = "r0.img"
  [[volume.replica]]
  node = "beta"
  disk = "r0.img"
`
	c, err := Parse([]byte(in), testDir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Volumes[0].Voters(c), []string{"a-witness", "beta", "w2", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("Voters = %q, want %q", got, want)
	}
	if got, want := c.Witnesses(), []string{"w2", "a-witness"}; !slices.Equal(got, want) {
		t.Errorf("Witnesses = %q, want %q", got, want)
	}
	if v := &c.Volumes[0]; v.Preferred != "zeta" || !v.Failover {
		t.Errorf("volume = %+v", v)
	}
}

// TestFailoverKeysApply: each failover key of [[volume]] is refused, with one
// message, on a volume it does not apply to.
func TestFailoverKeysApply(t *testing.T) {
	keys := map[string]string{
		"auto_promote":    "auto_promote = false",
		"preferred":       `preferred = "alpha"`,
		"quorum_loss":     `quorum_loss = "fail"`,
		"after_promote":   `after_promote = "/bin/true"`,
		"before_demote":   `before_demote = "/bin/true"`,
		"fence_peer":      `fence_peer = "/bin/true"`,
		"quorum_lost":     `quorum_lost = "/bin/true"`,
		"handler_timeout": `handler_timeout = "1m"`,
		"two_node":        "two_node = true",
	}
	single := func(head, line string) string {
		return head + strings.Replace(vol("r0", "alpha", ""), `size = "1MiB"`, "size = \"1MiB\"\n"+line, 1)
	}
	for key, line := range keys {
		for _, tc := range []struct{ in, want string }{
			{peers(twoPeers, line), `config: volume "r0": ` + key + `: needs [cluster] failover = true (automatic failover is off)`},
			{single(threeVoters, line), `config: volume "r0": ` + key + `: only applies to a replicated volume (volume "r0" has 1 replica: failover moves the primary role between replicas)`},
			{single(twoNodes, line), `config: volume "r0": ` + key + `: only applies to a replicated volume (volume "r0" has 1 replica) and needs [cluster] failover = true`},
		} {
			_, err := Parse([]byte(tc.in), testDir)
			if err == nil || err.Error() != tc.want {
				t.Errorf("%s: %v\nwant %s", line, err, tc.want)
			}
		}
	}
	// Even a wrong value gets only that message.
	if _, err := Parse([]byte(peers(twoPeers, "handler_timeout = 5")), testDir); err == nil ||
		err.Error() != `config: volume "r0": handler_timeout: needs [cluster] failover = true (automatic failover is off)` {
		t.Errorf("handler_timeout = 5 without failover: %v", err)
	}
}

// TestFailoverReportsAll: missing gossip addresses are reported once per node,
// voter counts once per volume, after the other problems.
func TestFailoverReportsAll(t *testing.T) {
	in := `
[cluster]
secret = "` + testSecret + `"
failover = true
[[node]]
name = "alpha"
address = "10.0.0.1:7789"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
[[node]]
name = "gamma"
address = "10.0.0.3:7789"
gossip = "10.0.0.3:7946"
` + vol("r0", "alpha", "  [[volume.replica]]\n  node = \"beta\"\n  disk = \"b.img\"") +
		strings.Replace(vol("r1", "beta", "  [[volume.replica]]\n  node = \"alpha\"\n  disk = \"a1.img\"\n  [[volume.replica]]\n  node = \"gamma\"\n  disk = \"g1.img\""),
			`size = "1MiB"`, "size = \"1MiB\"\nquorum_loss = \"never\"", 1)
	_, err := Parse([]byte(in), testDir)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		`config: volume "r1": quorum_loss: "never" must be "suspend" or "fail"`,
		`config: node "alpha": gossip: is required because failover needs every voter's gossip address (it holds a replica of replicated volume "r0")`,
		`config: node "beta": gossip: is required because failover needs every voter's gossip address (it holds a replica of replicated volume "r0")`,
		`config: volume "r0": replica: failover needs at least 3 voters (the nodes holding a replica, and the witnesses), but volume "r0" has 2, "alpha" and "beta": ` +
			`losing either node would stop writes on the other; add a node with witness = true (or, at your own risk, two_node = true with a fence_peer handler)`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestTwoNode: two_node = true lets two voters fail over, only with a
// fence_peer handler and only without a witness.
func TestTwoNode(t *testing.T) {
	noWitness := func(keys string) string {
		s := voters("witness", "", keys)
		s = strings.Replace(s, "witness = true\n", "", 1)
		return strings.Replace(s, "[[node]]\nname = \"witness\"\n", "", 1)
	}
	c, err := Parse([]byte(noWitness("two_node = true\nfence_peer = \"/usr/local/bin/fence\"\n")), testDir)
	if err != nil || !c.Volumes[0].TwoNode || c.Volumes[0].FencePeer == "" {
		t.Fatalf("two nodes with two_node and fence_peer: %v", err)
	}
	for _, tc := range []struct{ in, want string }{
		{noWitness("two_node = true\n"), `config: volume "r0": two_node: two_node = true needs a fence_peer handler`},
		{voters("witness", `gossip = "10.0.0.3:7946"`, "two_node = true\nfence_peer = \"/bin/true\"\n"),
			`config: volume "r0": two_node: applies only to a volume with exactly two voters (two replicas and no witness), but volume "r0" has 3: alpha, beta, witness`},
		{noWitness("two_node = \"yes\"\nfence_peer = \"/bin/true\"\n"), `two_node`},
	} {
		_, err := Parse([]byte(tc.in), testDir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v\nwant %s", err, tc.want)
		}
	}
}
