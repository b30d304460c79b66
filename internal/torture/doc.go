// Package torture is the in-process torture harness (issue 7): seeded
// schedules of random faults against a simulated cluster made of the
// real parts, judged by internal/torture/check. See docs/reliability.md.
package torture
