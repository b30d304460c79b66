//go:build !linux

package config

import "errors"

// blockDeviceSize is implemented on Linux only.
func blockDeviceSize(path string) (int64, error) {
	return 0, errors.ErrUnsupported
}
