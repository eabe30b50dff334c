// Package guest builds the test guest of the real-QEMU tests: an x86 disk image, assembled
// here from bytes (every instruction written out and commented in asm.go), whose boot sector
// loads the rest of the image, enters 32-bit protected mode and runs one memory access pattern
// over a region of guest RAM forever, on one vCPU or two (the second started with INIT and
// SIPI, each over its own half of the region), and the checker that verifies a dump of that
// RAM (pmemsave) after a migration.
//
// The idea is QEMU's own migration test guest (tests/migration/i386/a-b-bootblock.S): every
// pass increments a counter in every page of the region, so at any instant all counters are
// equal except that the pages not yet visited in the current pass are one step behind. A page
// lost or made stale by a migration breaks that shape.
//
// # Guest memory layout
//
//	0x7c00            the boot sector (loader, switch to protected mode, GDT)
//	0x7e00            stage 2 (8 sectors, loaded by the boot sector through BIOS int 13h);
//	                  0x8000: the second vCPU's real-mode entry (SIPI vector 8)
//	0x9000 + 0x100*k  vCPU k's control block: u32 page visits so far (TouchesAddrOf;
//	                  incremented just before each visit's own store), u32 think count (0 during
//	                  the first pass), and at +16 its header (HeaderAddrOf): u32 Magic, u32
//	                  pattern, u32 passes completed (incremented after each pass)
//	RegionStart       Config.Pages pages, split evenly between the vCPUs (Config.Part); in each
//	                  page: u32 counter at offset 0 (the pattern's visits), u32 next-page address
//	                  at offset 4 (pointer chase only), u32 Magic at offset 8 (hot set only)
//
// # Patterns and their invariants (per vCPU, over its part; P = passes completed, read from its header)
//
//   - Sequential: pages 0, 1, …, N-1 each pass. Along that order the counters are
//     non-increasing and all in {P, P+1}.
//   - Reverse: pages N-1, …, 1, 0 each pass. Same invariant along that order.
//   - Strided: page (j·Stride) mod N for j = 0…N-1 (Stride odd, N a power of two: a permutation).
//     Same invariant along that order.
//   - HotSet: a pass visits the Hot first pages in order, then ONE page of the cold rest (a cursor
//     that advances by one page per pass and wraps). Hot pages: the invariant above. Cold pages:
//     along the cold order, non-increasing with values in {q, q+1} for some q, and their sum (the
//     number of cold visits) in {P, P+1}.
//   - PointerChase: at boot the guest links every page to the next in the cycle
//     x → (ChaseA·x + ChaseC) mod N (full period), then each pass follows the stored pointers from
//     page 0 for N steps: dependent loads whose next address is known only from the page just
//     read. The invariant above along the cycle order, and every stored pointer intact.
//
// Every pattern: the visit counter equals the visits the page counters account for
// (CheckTouches), or one more.
//
// Think time: with Config.Think > 0 the guest runs a delay loop after every visit from the
// second pass on (the first pass runs flat out, so the whole region holds data).
//
// TLB: after every store the guest executes invlpg on the page it stored to, unless
// Config.KeepTLB: under TCG, QEMU before 9.0 loses stores made through a TLB entry that
// outlived a dirty-bitmap sync on a migration source (see Build).
//
// Progress: COM1 prints 'A' when the pattern starts and 'B' every 256 passes.
package guest
