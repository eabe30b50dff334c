// Package returnpath reads and writes the messages QEMU's post-copy destination sends back to
// the source on the migration return path (migration/migration.c, enum mig_rp_message_type in
// QEMU 7.2; ../shared/QEMU.md in the project's shared notes).
//
// # Wire format
//
// Every message is a frame `u16 type | u16 len | payload[len]`, integers big-endian:
//
//	1 SHUT            u32 error flag (0 = ok)                              len 4
//	2 PONG            u32 echoed ping value                                len 4
//	3 REQ_PAGES_ID    u64 start, u32 len, u8 n, n bytes of RAM block name  len 13+n
//	4 REQ_PAGES       u64 start, u32 len (block = last one named)          len 12
//	5 RECV_BITMAP     u8 n, n bytes of block name                          len 1+n
//	                  then OUTSIDE the frame: u64 size, size bytes of little-endian bitmap,
//	                  u64 0x0123456789abcdef
//	6 RESUME_ACK      u32 value (1)                                        len 4
//	7 SWITCHOVER_ACK  empty (QEMU 8.1+; 7.2's source rejects it)           len 0
//
// # Invariants
//
//   - Nothing is allocated from a length read off the wire: a frame's payload is at most
//     MaxPayload (512) bytes, read into a fixed buffer; a RECV_BITMAP tail is streamed through a
//     fixed buffer, never held, and its size is checked against Reader.MaxBitmap first.
//   - Anything QEMU's source would reject (type 0 or unknown, a wrong fixed length, len > 512, a
//     name length that disagrees with the frame length) is an error wrapping ErrMalformed; so is
//     an empty block name and a RECV_BITMAP tail whose end mark is wrong. Parsing never panics.
//   - Whatever Parse accepts, Message.Append re-encodes to the same bytes (FuzzParse).
//
// # Concurrency
//
// A Reader belongs to one goroutine. Parse and the Append functions are pure.
package returnpath
