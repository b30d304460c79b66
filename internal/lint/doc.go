// Package lint holds tests that enforce the codebase's structure: which
// packages may import what. It has no code of its own.
//
//   - Only cmd/blkrepd imports logrus; everything else logs through an
//     injected *slog.Logger.
//   - nbd/ knows nothing of the daemon or replication: it imports no
//     internal/ package.
//   - The pure packages (bitmap, activelog, protocol, meta) import nothing that
//     does I/O, starts goroutines by design, reads the clock or logs.
package lint
