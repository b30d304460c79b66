module github.com/blkrep/blkrep

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/bits-and-blooms/bitset v1.29.0
	github.com/pmorjan/kmod v1.1.1
	github.com/sirupsen/logrus v1.10.2
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/sys v0.49.0
)

require github.com/vishvananda/netns v0.0.5 // indirect
