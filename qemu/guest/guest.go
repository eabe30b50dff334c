package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Pattern is a memory access pattern of the guest.
type Pattern uint32

// The patterns (see the package documentation for each one's invariant).
const (
	Sequential Pattern = iota + 1
	Strided
	HotSet
	PointerChase
	Reverse
)

// Patterns lists every pattern.
var Patterns = []Pattern{Sequential, Strided, HotSet, PointerChase, Reverse}

var patternNames = map[Pattern]string{Sequential: "sequential", Strided: "strided", HotSet: "hotset", PointerChase: "chase", Reverse: "reverse"}

func (p Pattern) String() string {
	if s, ok := patternNames[p]; ok {
		return s
	}
	return fmt.Sprintf("pattern(%d)", uint32(p))
}

// ParsePattern returns the pattern called name (sequential, strided, hotset, chase, reverse).
func ParsePattern(name string) (Pattern, error) {
	for p, s := range patternNames {
		if s == name {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown guest pattern %q (valid: sequential, strided, hotset, chase, reverse)", name)
}

// Memory layout and constants of the guest.
const (
	PageSize    = 4096
	HeaderAddr  = 0x7e00     // just after the boot sector
	HeaderSize  = 12         // magic, pattern, passes
	TouchesAddr = 0x9000     // u32 page visits so far (wraps), in a page of its own
	thinkAddr   = 0x9004     // u32 delay-loop iterations per visit: 0 in the first pass, then Config.Think
	RegionStart = 1 << 20    // 1 MiB: above the BIOS areas
	Magic       = 0x31475750 // "PWG1" little-endian
	// ChaseA and ChaseC define the pointer-chase cycle x -> (ChaseA*x + ChaseC) mod N: with N a
	// power of two, ChaseA = 1 mod 4 and ChaseC odd give a full period (Hull-Dobell).
	ChaseA = 1103515245
	ChaseC = 12345

	comPort = 0x3f8
)

// Config sizes the guest's region. Zero values select the defaults.
type Config struct {
	// Pages is the region size in pages, a power of two, 16..65536 (default 16384: 64 MiB).
	Pages uint32
	// Stride is the step of Strided in pages, odd, < Pages (default 17, or Pages-1 if smaller).
	Stride uint32
	// Hot is the hot-set size of HotSet in pages, 1..Pages-1 (default 512, or Pages/2 if smaller).
	Hot uint32
	// Think is the guest's work between two page visits: iterations of a two-instruction delay
	// loop (0: none, the pattern runs flat out). It models a workload that computes on a page
	// before it moves to the next, so its page order, not only the link's bandwidth, decides how
	// often it waits during post-copy. The first pass runs flat out whatever Think is, so the
	// whole region holds data (is not zero pages) once the first pass completed. Under TCG on
	// this project's machines one iteration lasts about 2 ns; the guest's own rate is what to
	// quote (bench qemu measures it).
	Think uint32
	// KeepTLB leaves out the invlpg after every store (see Build), reproducing QEMU's lost
	// stores under TCG before 9.0.
	KeepTLB bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Pages == 0 {
		c.Pages = 16384
	}
	if c.Stride == 0 {
		c.Stride = min(17, c.Pages-1) // odd for any power of two >= 2
	}
	if c.Hot == 0 {
		c.Hot = min(512, c.Pages/2)
	}
	if c.Pages < 16 || c.Pages > 65536 || bits.OnesCount32(c.Pages) != 1 {
		return c, fmt.Errorf("guest: pages %d is not a power of two in 16..65536", c.Pages)
	}
	if c.Stride%2 == 0 || c.Stride >= c.Pages {
		return c, fmt.Errorf("guest: stride %d is not odd and below %d", c.Stride, c.Pages)
	}
	if c.Hot >= c.Pages {
		return c, fmt.Errorf("guest: hot set %d is not below %d pages", c.Hot, c.Pages)
	}
	return c, nil
}

// RegionEnd is the guest physical address just past the region of c.
func (c Config) RegionEnd() uint64 {
	c, _ = c.withDefaults()
	return RegionStart + uint64(c.Pages)*PageSize
}

// Build returns the 512-byte boot sector running pattern p over the region of c.
func Build(p Pattern, c Config) ([]byte, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, ok := patternNames[p]; !ok {
		return nil, fmt.Errorf("guest: unknown pattern %d", uint32(p))
	}
	n := c.Pages
	end := uint32(RegionStart + n*PageSize)
	a := newAsm()

	// Real mode, CS:IP = 0:0x7c00 (SeaBIOS). Interrupts off, A20 on, load the GDT, set CR0.PE,
	// far-jump into the 32-bit code segment (selector 0x08).
	a.cli()
	a.xorAXAX16()
	a.movDSAX() // lgdt reads gdtdesc through DS
	a.inAL92()
	a.orAL(0x02)
	a.outAL92()
	a.lgdt16("gdtdesc")
	a.movEAXCR0()
	a.orAL(0x01)
	a.movCR0EAX()
	a.ljmp32(0x08, "pm32")

	// Protected mode: flat data segment (selector 0x10) everywhere, a stack below the sector.
	a.label("pm32")
	a.movAX16(0x10)
	for _, seg := range []byte{3, 0, 2, 4, 5} { // ds es ss fs gs
		a.movSegAX(seg)
	}
	a.movESP(loadAddr)
	a.movMemAbs(HeaderAddr, Magic)
	a.movMemAbs(HeaderAddr+4, uint32(p))
	a.movMemAbs(HeaderAddr+8, 0) // passes
	a.movMemAbs(TouchesAddr, 0)
	a.movMemAbs(thinkAddr, 0)

	switch p {
	case PointerChase:
		// Link page x to page (A*x + C) mod N, walking the cycle from x = 0: eax = x, edx = next,
		// esi = &page[x], ebx = &page[next]; [esi+4] = ebx.
		a.xorEAXEAX()
		a.movECX(n)
		a.label("link")
		a.imulEDXEAX(ChaseA)
		a.addEDX(ChaseC)
		a.andEDX(n - 1)
		a.movESIEAX()
		a.shlESI(12)
		a.addESI(RegionStart)
		a.movEBXEDX()
		a.shlEBX(12)
		a.addEBX(RegionStart)
		a.movESI4EBX()
		a.movEAXEDX()
		a.decECX()
		a.jnz8("link")
	case HotSet:
		a.movEDI(RegionStart + c.Hot*PageSize) // the cold cursor
	}
	if p == HotSet {
		// Fill every page (a word at offset 8, which no pattern uses) so the region holds data
		// from the start: the hot set's first pass visits one cold page only, and zero pages
		// would cross a migration as markers, leaving post-copy nothing to move.
		a.movEAX(RegionStart)
		a.label("fill")
		a.movMemEAX8(Magic)
		a.addEAX(PageSize)
		a.cmpEAX(end)
		a.jb8("fill")
	}

	// 'A' on COM1: the pattern starts. bl counts passes modulo 256 for the 'B's.
	a.movDX16(comPort)
	a.movAL('A')
	a.outDXAL()
	a.xorEBXEBX()

	// visit counts a visit, then increments the counter of the page at [reg] (inc emits it and
	// flush the TLB entry of that page), then thinks.
	//
	// Every store is followed by invlpg of its page unless c.KeepTLB: QEMU before 9.0 under TCG
	// loses stores on a migration source (QEMU commit 03bfc2188f, "physmem: Fix migration dirty
	// bitmap coherency with TCG memory access"): its dirty-bitmap sync clears a page's dirty
	// bit without resetting the TCG TLB entry that lets stores skip dirty tracking, so a page
	// whose entry stays in the TLB from one sync on (the visit counter, a hot set) is never
	// marked dirty again and the destination keeps an old copy. A real guest flushes its TLB
	// all the time (every context switch); this one never would.
	visit := func(inc func(), flush func()) {
		a.incMemAbs(TouchesAddr)
		if !c.KeepTLB {
			a.invlpgAbs(TouchesAddr)
		}
		inc()
		if !c.KeepTLB {
			flush()
		}
		if c.Think > 0 {
			// esi = [thinkAddr] + 1; do esi-- while esi != 0: one iteration when it is 0.
			a.movESIMem(thinkAddr)
			a.incESI()
			l := fmt.Sprintf("think%d", len(a.b))
			a.label(l)
			a.decESI()
			a.jnz8(l)
		}
	}

	a.label("pass")
	switch p {
	case Sequential:
		a.movEAX(RegionStart)
		a.label("inner")
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(PageSize)
		a.cmpEAX(end)
		a.jb8("inner")
	case Reverse:
		a.movEAX(end - PageSize)
		a.label("inner")
		visit(a.incMemEAX, a.invlpgEAX)
		a.subEAX(PageSize)
		a.cmpEAX(RegionStart)
		a.jae8("inner") // unsigned: below RegionStart after the first page
	case Strided:
		// eax walks (j*Stride) mod N: add Stride pages, wrap by subtracting the region size.
		a.movEAX(RegionStart)
		a.movECX(n)
		a.label("inner")
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(c.Stride * PageSize)
		a.cmpEAX(end)
		a.jb8("nowrap")
		a.subEAX(n * PageSize)
		a.label("nowrap")
		a.decECX()
		a.jnz8("inner")
	case HotSet:
		a.movEAX(RegionStart)
		a.label("inner")
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(PageSize)
		a.cmpEAX(RegionStart + c.Hot*PageSize)
		a.jb8("inner")
		visit(a.incMemEDI, a.invlpgEDI) // one cold page per pass
		a.addEDI(PageSize)
		a.cmpEDI(end)
		a.jb8("coldok")
		a.movEDI(RegionStart + c.Hot*PageSize)
		a.label("coldok")
	case PointerChase:
		a.movEAX(RegionStart)
		a.movECX(n)
		a.label("inner")
		visit(a.incMemEAX, a.invlpgEAX)
		a.movEAXEAX4() // the next page is known only once this one is read
		a.decECX()
		a.jnz8("inner")
	}
	a.incMemAbs(HeaderAddr + 8)
	if !c.KeepTLB {
		a.invlpgAbs(HeaderAddr)
	}
	if c.Think > 0 {
		a.movMemAbs(thinkAddr, c.Think) // from the second pass on
	}
	a.incBL()
	a.jnz32("pass")
	a.movDX16(comPort)
	a.movAL('B')
	a.outDXAL()
	a.jmp32("pass")

	// GDT: null, code (base 0, limit 4 GiB, 32-bit, execute/read), data (read/write).
	a.align(8)
	a.label("gdt")
	a.emit(0, 0, 0, 0, 0, 0, 0, 0)
	a.emit(0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00)
	a.emit(0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00)
	a.label("gdtdesc")
	a.imm16(3*8 - 1)
	a.ref(4, "gdt", false)

	if err := a.link(); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	if len(a.b) > 510 {
		return nil, fmt.Errorf("guest: %d bytes of code do not fit a boot sector", len(a.b))
	}
	sector := make([]byte, 512)
	copy(sector, a.b)
	sector[510], sector[511] = 0x55, 0xaa
	return sector, nil
}

// ErrCorrupt is wrapped by Check's errors about memory that breaks the pattern's invariant.
var ErrCorrupt = errors.New("guest memory corrupt")

// Order returns the page indices one pass of p visits, in order (for HotSet: the hot pages,
// then the cold pages in cursor order).
func Order(p Pattern, c Config) ([]uint32, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	o := make([]uint32, 0, c.Pages)
	switch p {
	case Sequential, HotSet:
		for i := uint32(0); i < c.Pages; i++ {
			o = append(o, i)
		}
	case Reverse:
		for i := c.Pages; i > 0; i-- {
			o = append(o, i-1)
		}
	case Strided:
		for j := uint32(0); j < c.Pages; j++ {
			o = append(o, j*c.Stride%c.Pages)
		}
	case PointerChase:
		x := uint32(0)
		for j := uint32(0); j < c.Pages; j++ {
			o = append(o, x)
			x = (ChaseA*x + ChaseC) & (c.Pages - 1)
		}
	default:
		return nil, fmt.Errorf("guest: unknown pattern %d", uint32(p))
	}
	return o, nil
}

// Passes returns the pass count of a header dump (HeaderSize bytes at HeaderAddr), checking the
// magic and the pattern.
func Passes(p Pattern, header []byte) (uint32, error) {
	if len(header) < HeaderSize {
		return 0, fmt.Errorf("guest header of %d bytes", len(header))
	}
	if m := binary.LittleEndian.Uint32(header); m != Magic {
		return 0, fmt.Errorf("%w: magic %#x (the guest has not started?)", ErrCorrupt, m)
	}
	if got := Pattern(binary.LittleEndian.Uint32(header[4:])); got != p {
		return 0, fmt.Errorf("%w: header says pattern %v, want %v", ErrCorrupt, got, p)
	}
	return binary.LittleEndian.Uint32(header[8:]), nil
}

// Check verifies a dump of the guest (header: HeaderSize bytes at HeaderAddr; region: the
// region's bytes from RegionStart) against p's invariant and returns the passes completed.
// The guest must be stopped while both are dumped.
func Check(p Pattern, c Config, header, region []byte) (uint32, error) {
	c, err := c.withDefaults()
	if err != nil {
		return 0, err
	}
	passes, err := Passes(p, header)
	if err != nil {
		return 0, err
	}
	if len(region) != int(c.Pages)*PageSize {
		return 0, fmt.Errorf("guest region dump of %d bytes, want %d", len(region), int(c.Pages)*PageSize)
	}
	order, err := Order(p, c)
	if err != nil {
		return 0, err
	}
	counter := func(page uint32) uint32 { return binary.LittleEndian.Uint32(region[page*PageSize:]) }
	if p == HotSet {
		if err := checkPass(order[:c.Hot], counter, passes, "hot "); err != nil {
			return passes, err
		}
		cold := order[c.Hot:]
		q := counter(cold[len(cold)-1])
		var sum uint64
		for _, pg := range cold {
			sum += uint64(counter(pg))
		}
		if err := checkPass(cold, counter, q, "cold "); err != nil {
			return passes, err
		}
		if sum != uint64(passes) && sum != uint64(passes)+1 {
			return passes, fmt.Errorf("%w: %d cold visits after %d passes", ErrCorrupt, sum, passes)
		}
		return passes, nil
	}
	if err := checkPass(order, counter, passes, ""); err != nil {
		return passes, err
	}
	if p == PointerChase {
		for j, pg := range order {
			next := order[(j+1)%len(order)]
			got := binary.LittleEndian.Uint32(region[pg*PageSize+4:])
			if want := uint32(RegionStart) + next*PageSize; got != want {
				return passes, fmt.Errorf("%w: page %d links to %#x, want %#x", ErrCorrupt, pg, got, want)
			}
		}
	}
	return passes, nil
}

// CheckTouches checks the visit counter read at TouchesAddr against a dump that Check accepted:
// every visit counts once, so the counter is passes × visits per pass plus the visits of the
// pass in progress (the counter is incremented just before the page's own counter, so it may be
// one ahead), modulo 2^32. It catches page counters that stayed behind while the guest counted
// its visits: stores of the guest that did not reach the memory the dump reads.
func CheckTouches(p Pattern, c Config, header, region []byte, touches uint32) error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	passes, err := Passes(p, header)
	if err != nil {
		return err
	}
	if len(region) != int(c.Pages)*PageSize {
		return fmt.Errorf("guest region dump of %d bytes, want %d", len(region), int(c.Pages)*PageSize)
	}
	counter := func(page uint32) uint32 { return binary.LittleEndian.Uint32(region[page*PageSize:]) }
	perPass, ahead := c.Pages, uint32(0)
	pages := c.Pages
	if p == HotSet {
		perPass, pages = c.Hot+1, c.Hot
		var cold uint32
		for pg := c.Hot; pg < c.Pages; pg++ {
			cold += counter(pg)
		}
		ahead = cold - passes // the cold visit of the pass in progress, made before passes++
	}
	for pg := uint32(0); pg < pages; pg++ {
		if counter(pg) == passes+1 {
			ahead++
		}
	}
	want := passes*perPass + ahead
	if d := touches - want; d > 1 {
		return fmt.Errorf("%w: the guest counted %d page visits, its page counters show %d (passes %d)", ErrCorrupt, touches, want, passes)
	}
	return nil
}

// checkPass checks that the counters along order are non-increasing and all in {base, base+1}.
func checkPass(order []uint32, counter func(uint32) uint32, base uint32, what string) error {
	prev := base + 1
	for j, pg := range order {
		v := counter(pg)
		if v != base && v != base+1 {
			return fmt.Errorf("%w: %spage %d (visit %d) counter %d, want %d or %d", ErrCorrupt, what, pg, j, v, base, base+1)
		}
		if v > prev {
			return fmt.Errorf("%w: %spage %d (visit %d) counter %d after %d: visited out of order", ErrCorrupt, what, pg, j, v, prev)
		}
		prev = v
	}
	return nil
}
