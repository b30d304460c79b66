// Package faultnet is the fake network of the fault and torture tests
// (internal/repl, internal/torture): a relay injected through
// repl.Config.Dial on the dialing node. Dial connects
// to the peer's real listener (the accepting side goes through Listener
// unchanged) and hands the dialer one end of a net.Pipe; two pump
// goroutines carry the bytes between that pipe and the TCP connection,
// one per direction, and apply the faults:
//
//	dialer ──pipe── [up pump ──▶]  ──tcp── acceptor
//	       ◀──────  [◀── down pump] ◀─────
//
//   - delay: every chunk read from one side is delivered no earlier than
//     its latency (per direction, plus a seeded jitter) after it was read.
//     Chunks stay in order (a byte stream) and in flight concurrently (a
//     pipeline, not one sleep per write); at most maxInFlight chunks wait,
//     which is the relay's window: a writer beyond it blocks.
//   - blackhole: a direction stops delivering without closing anything;
//     the bytes are dropped. A direction of a connection that dropped a
//     byte never delivers again (the stream has a gap: resuming it would
//     hand the peer garbage), so Heal does not revive it: the endpoints
//     must notice by their ping or ack timeouts and reconnect.
//   - cut: every live connection is closed abruptly (RST on the TCP side,
//     the pipe closed on the dialer's side); bytes in flight are lost.
//   - partition: dials fail at once, and every direction is blackholed.
//   - heal: dials succeed again and new connections deliver normally.
//
// A side that closes its connection is seen by the other side (the close
// travels like data) unless its direction is blackholed.
//
// Time is real: what is deterministic is the seeded jitter and what the
// tests decide at named hook points (cut at the Nth call of a point), not
// goroutine scheduling. Every wait is bounded: latencies are capped at
// MaxLatency, and tests time out.

package faultnet
