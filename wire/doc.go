// Package wire implements the pagewarp wire protocol, version 3, as specified in docs/protocol.md:
// length-prefixed frames whose body is a type byte and one msgpack array.
//
// The spec comes first; this package follows it. Encoding and decoding use msgpack's low-level
// Encoder/Decoder methods, not reflection, and decoded byte strings alias the frame, so the hot path
// (Request in, Pages out) allocates little and never copies page data.
//
// # Invariants
//
//   - Nothing is allocated from an unchecked length: Reader checks 1 <= length <= MaxFrameSize before
//     reading a body, grows its buffer only as bytes arrive, and every str/bin/array length is checked
//     against its limit and against the bytes left in the frame first.
//   - Decode never panics on any input, and everything it accepts re-encodes (AppendFrame) to a frame
//     that decodes to an equal message (FuzzDecode checks both).
//   - Every decoding or validation failure is a *Error whose Code is the one the spec names, so a
//     server can send it back as is: errors.As(err, &werr).
//   - AppendFrame and Writer validate messages with the same rules as Decode, so a peer never receives
//     a frame this package would reject.
//
// # Concurrency
//
// Decode and AppendFrame are safe for concurrent use. A Reader and a Writer are not: each connection
// has one receive loop that owns its Reader and one send loop that owns its Writer. There are no locks
// and no goroutines in this package.
package wire
