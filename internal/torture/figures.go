package torture

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Figures sum up many schedules for docs/reliability.md.
type Figures struct {
	Schedules  int
	ByProtocol map[byte]int
	ThreeNodes int
	Faults     map[string]int
	// From the checks' reports.
	Writes, Acked, InDoubt, Flushes, FlushesAcked int
	Required, Strong, Excused, SectorsChecked     int
	Torn                                          int
	Violations                                    int      // judged violations (must be 0)
	Failed                                        int      // schedules that failed: violations, harness
	Stuck                                         []uint64 // seeds of the liveness failures (Result.Stuck)
	Longest                                       time.Duration
	elapsed                                       time.Duration
}

func newFigures() *Figures {
	return &Figures{ByProtocol: map[byte]int{}, Faults: map[string]int{}}
}

func (f *Figures) add(r Result) {
	f.Schedules++
	f.ByProtocol[r.Protocol]++
	if r.DataNodes == 3 {
		f.ThreeNodes++
	}
	for k, v := range r.Faults {
		f.Faults[k] += v
	}
	if rp := r.Report; rp != nil {
		f.Writes += rp.Writes
		f.Acked += rp.Acked
		f.InDoubt += rp.Failed + rp.InFlight
		f.Flushes += rp.Flushes
		f.FlushesAcked += rp.FlushesAcked
		f.Required += rp.Required
		f.Strong += rp.Strong
		f.Excused += rp.Excused
		f.SectorsChecked += rp.Sectors
		f.Torn += rp.Torn
		f.Violations += len(rp.Violations)
	}
	switch {
	case r.Stuck:
		f.Stuck = append(f.Stuck, r.Seed)
	case r.Err != nil:
		f.Failed++
	}
	f.Longest = max(f.Longest, r.Duration)
}

// markdown is the figures as a table, with the command that produced
// them.
func (f *Figures) markdown(command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Command: `%s`\n\n", command)
	fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
	row := func(k string, v any) { fmt.Fprintf(&b, "| %s | %v |\n", k, v) }
	row("schedules run", fmt.Sprintf("%d in %s (protocol A %d, B %d, C %d; %d with three data nodes)",
		f.Schedules, f.elapsed.Round(time.Second), f.ByProtocol['A'], f.ByProtocol['B'], f.ByProtocol['C'], f.ThreeNodes))
	var kinds []string
	total := 0
	for k, v := range f.Faults {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
		total += v
	}
	slices.Sort(kinds)
	row("faults injected", fmt.Sprintf("%d: %s", total, strings.Join(kinds, ", ")))
	row("writes", fmt.Sprintf("%d issued, %d acknowledged, %d in doubt (failed or unanswered)", f.Writes, f.Acked, f.InDoubt))
	row("flushes", fmt.Sprintf("%d issued, %d acknowledged", f.Flushes, f.FlushesAcked))
	row("writes checked as required", fmt.Sprintf("%d (%d by the strong rule of B/C; %d acknowledged writes excused by a later power loss)", f.Required, f.Strong, f.Excused))
	row("sectors judged", fmt.Sprintf("%d (%d showing a torn write in doubt)", f.SectorsChecked, f.Torn))
	row("violations", f.Violations)
	row("failed schedules (safety or harness)", f.Failed)
	slices.Sort(f.Stuck)
	row("stuck schedules (no primary 20 s, or no sync 30 s, after the heal)", fmt.Sprintf("%d %v", len(f.Stuck), f.Stuck))
	row("longest schedule", f.Longest.Round(time.Millisecond))
	return b.String()
}
