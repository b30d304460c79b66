module github.com/blkrep/blkrep

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/pmorjan/kmod v1.1.1 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
