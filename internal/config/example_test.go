package config_test

import (
	"fmt"

	"github.com/blkrep/blkrep/internal/config"
)

func ExampleParse() {
	cfg, err := config.Parse([]byte(`
[[node]]
name = "alpha"

[[volume]]
name = "r0"
size = "256MiB"

  [[volume.replica]]
  node = "alpha"
  disk = "alpha-r0.img"
  nbd_socket = "/run/blkrep/r0.sock"
`), "/etc/blkrep")
	if err != nil {
		fmt.Println(err)
		return
	}
	n, _ := cfg.Node("alpha")
	fmt.Println(cfg.Cluster.Name, n.ControlSocket)
	for _, lr := range cfg.LocalReplicas("alpha") {
		fmt.Println(lr.Volume.Name, lr.Volume.SizeBytes, lr.Volume.DeviceTimeout, lr.Replica.Disk, lr.Replica.NBDSocket)
	}
	// Output:
	// blkrep /etc/blkrep/alpha.ctl
	// r0 268435456 30s /etc/blkrep/alpha-r0.img /run/blkrep/r0.sock
}

func ExampleParse_errors() {
	_, err := config.Parse([]byte(`
[[node]]
name = "alpha"

[[volume]]
name = "r0"
size = "1000KB"

  [[volume.replica]]
  node = "beta"
  dsk = "r0.img"
`), "/etc/blkrep")
	fmt.Println(err)
	// Output:
	// config: unknown key "volume.replica.dsk" (did you mean "volume.replica.disk"?)
	// config: volume "r0": size: "1000KB" (1000000 bytes) is not a multiple of 4096
	// config: volume "r0" replica for node "beta": node: no [[node]] is called "beta" (known nodes: "alpha")
	// config: volume "r0" replica for node "beta": disk: is required
}

func ExampleParseSize() {
	for _, s := range []string{"256MiB", "256M", "256MB", "4096"} {
		n, _ := config.ParseSize(s)
		fmt.Println(s, n)
	}
	// Output:
	// 256MiB 268435456
	// 256M 268435456
	// 256MB 256000000
	// 4096 4096
}

func ExampleVolume_Peers() {
	cfg, err := config.Parse([]byte(`
[cluster]
secret = "kP2jq9X0vL7mN4rT8wY1zB6cD3fG5hJ0sA2eU9iO4k="

[[node]]
name = "alpha"
address = "10.0.0.1:7789"
[[node]]
name = "beta"
address = "10.0.0.2:7789"
[[node]]
name = "witness"

[[volume]]
name = "r0"
size = "256MiB"
protocol = "b"
  [[volume.replica]]
  node = "alpha"
  disk = "/dev/vg0/r0"
  [[volume.replica]]
  node = "beta"
  disk = "/dev/vg0/r0"
`), "/etc/blkrep")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, lr := range cfg.LocalReplicas("alpha") {
		v := lr.Volume
		fmt.Println(v.Name, v.Replicated(), v.Protocol, v.Timeout, v.Peers("alpha"))
		for _, peer := range v.Peers("alpha") {
			n, _ := cfg.Node(peer)
			fmt.Println(peer, n.Address)
		}
	}
	fmt.Println(len(cfg.LocalReplicas("witness")))
	// Output:
	// r0 true B 6s [beta]
	// beta 10.0.0.2:7789
	// 0
}
