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
	PageSize = 4096
	// The per-CPU control blocks: CPU k's at ctlBase + k*ctlSize holds its visit counter
	// (TouchesAddr), its think count, and its header (HeaderAddr: magic, pattern, passes).
	ctlBase     = 0x9000
	ctlSize     = 0x100
	TouchesAddr = ctlBase      // CPU 0's u32 page visits so far (wraps)
	thinkAddr   = ctlBase + 4  // u32 delay-loop iterations per visit: 0 in the first pass, then Config.Think
	HeaderAddr  = ctlBase + 16 // CPU 0's u32 Magic, u32 pattern, u32 passes completed
	HeaderSize  = 12
	RegionStart = 1 << 20    // 1 MiB: above the BIOS areas
	Magic       = 0x31475750 // "PWG1" little-endian
	// MaxCPUs is the largest Config.CPUs.
	MaxCPUs = 2
	// ChaseA and ChaseC define the pointer-chase cycle x -> (ChaseA*x + ChaseC) mod N: with N a
	// power of two, ChaseA = 1 mod 4 and ChaseC odd give a full period (Hull-Dobell).
	ChaseA = 1103515245
	ChaseC = 12345

	comPort = 0x3f8
	// The boot sector loads stage2Sectors more sectors of the image at stage2Addr; the second
	// CPU starts (SIPI vector apEntry>>12) at apEntry, inside them.
	stage2Addr    = 0x7e00
	stage2Sectors = 8
	apEntry       = 0x8000
	apicICR       = 0xfee00300 // the local APIC's interrupt command register (low word)
)

// HeaderAddrOf and TouchesAddrOf are CPU cpu's header and visit counter.
func HeaderAddrOf(cpu int) uint64  { return HeaderAddr + uint64(cpu)*ctlSize }
func TouchesAddrOf(cpu int) uint64 { return TouchesAddr + uint64(cpu)*ctlSize }

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
	// CPUs is how many vCPUs run the pattern (1 or 2, default 1; QEMU needs -smp at least as
	// many). Each runs it over its own equal part of the region (Part), with its own header and
	// visit counter (HeaderAddrOf, TouchesAddrOf); Stride and Hot apply to each part.
	CPUs uint32

	base uint64 // a Part's first address (0: RegionStart)
}

func (c Config) withDefaults() (Config, error) {
	if c.Pages == 0 {
		c.Pages = 16384
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.CPUs > MaxCPUs {
		return c, fmt.Errorf("guest: %d CPUs, at most %d", c.CPUs, MaxCPUs)
	}
	part := c.Pages / c.CPUs
	if c.Stride == 0 {
		c.Stride = min(17, part-1) // odd for any power of two >= 2
	}
	if c.Hot == 0 {
		c.Hot = min(512, part/2)
	}
	if c.Pages < 16 || c.Pages > 65536 || bits.OnesCount32(c.Pages) != 1 || part < 16 {
		return c, fmt.Errorf("guest: pages %d is not a power of two in 16..65536 (at least 16 per CPU)", c.Pages)
	}
	if c.Stride%2 == 0 || c.Stride >= part {
		return c, fmt.Errorf("guest: stride %d is not odd and below %d", c.Stride, part)
	}
	if c.Hot >= part {
		return c, fmt.Errorf("guest: hot set %d is not below %d pages", c.Hot, part)
	}
	return c, nil
}

// Part returns the part of the region that CPU cpu runs the pattern over, as a one-CPU
// Config: the one to give Order, Check and CheckTouches with that CPU's header, visit
// counter and RegionBytes of the dump from PartStart.
func (c Config) Part(cpu int) Config {
	c, _ = c.withDefaults()
	n := c.Pages / c.CPUs
	p := c
	p.Pages, p.CPUs = n, 1
	p.base = c.regionStart() + uint64(cpu)*uint64(n)*PageSize
	return p
}

// PartStart is the guest physical address where a Config's region (or Part) starts.
func (c Config) PartStart() uint64 { return c.regionStart() }

// RegionBytes is the size of a Config's region (or Part) in bytes.
func (c Config) RegionBytes() uint64 {
	c, _ = c.withDefaults()
	return uint64(c.Pages) * PageSize
}

func (c Config) regionStart() uint64 {
	if c.base != 0 {
		return c.base
	}
	return RegionStart
}

// RegionEnd is the guest physical address just past the region of c.
func (c Config) RegionEnd() uint64 {
	c, _ = c.withDefaults()
	return c.regionStart() + uint64(c.Pages)*PageSize
}

// Build returns the disk image running pattern p over the region of c: a boot sector that
// loads the rest of the image (stage 2) with the BIOS, enters 32-bit protected mode and runs
// CPU 0's part; with c.CPUs 2 it first starts the second CPU (INIT, then two SIPIs) at a
// real-mode entry in stage 2 that enters protected mode too and runs CPU 1's part.
func Build(p Pattern, c Config) ([]byte, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, ok := patternNames[p]; !ok {
		return nil, fmt.Errorf("guest: unknown pattern %d", uint32(p))
	}
	a := newAsm()

	// Sector 0, real mode, CS:IP = 0:0x7c00 (SeaBIOS), DL = the boot drive. Load stage 2 (BIOS
	// int 13h, AH=2: AL sectors from CHS 0/0/2 to ES:BX), then interrupts off, A20 on, the GDT,
	// CR0.PE, and a far jump into the 32-bit code segment (selector 0x08). A failed read hangs
	// before printing 'A'.
	a.xorAXAX16()
	a.movDSAX()
	a.movESAX()
	a.movBX16(stage2Addr)
	a.movAX16r(0x0200 | stage2Sectors)
	a.movCX16r(0x0002)
	a.movDH(0)
	a.int13()
	a.label("readfail")
	a.jc8("readfail")
	a.protectedMode("pm32")

	// GDT: null, code (base 0, limit 4 GiB, 32-bit, execute/read), data (read/write).
	a.align(8)
	a.label("gdt")
	a.emit(0, 0, 0, 0, 0, 0, 0, 0)
	a.emit(0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00)
	a.emit(0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00)
	a.label("gdtdesc")
	a.imm16(3*8 - 1)
	a.ref(4, "gdt", false)
	if len(a.b) > 510 {
		return nil, fmt.Errorf("guest: %d bytes of code do not fit a boot sector", len(a.b))
	}
	a.padTo(510)
	a.emit(0x55, 0xaa)

	// Stage 2, loaded at stage2Addr. The second CPU's entry must be at apEntry, page-aligned:
	// after INIT and SIPI vector apEntry>>12 it runs in real mode from CS:IP = apEntry>>4:0.
	a.padTo(apEntry - loadAddr)
	a.label("ap16")
	a.protectedMode("ap32")
	a.label("ap32")
	a.flatSegments()
	a.movESP(apEntry - 0x800) // a stack of its own (the pattern code pushes nothing)
	if c.CPUs > 1 {
		emitPattern(a, p, c, 1)
	} else {
		a.label("aphalt")
		a.hlt()
		a.jmp32("aphalt")
	}

	a.label("pm32")
	a.flatSegments()
	a.movESP(loadAddr)
	if c.CPUs > 1 {
		// INIT to all but self puts the other CPU (halted by SeaBIOS after it counted the
		// CPUs) into wait-for-SIPI; then two start-up IPIs, ~10 ms apart as the MP
		// specification asks (QEMU would not need the wait).
		a.movMemAbs(apicICR, 0x000c4500) // all excluding self, level assert, INIT
		a.delay(5_000_000)
		for range 2 {
			a.movMemAbs(apicICR, 0x000c4600|apEntry>>12) // all excluding self, level assert, SIPI
			a.delay(100_000)
		}
	}
	emitPattern(a, p, c, 0)

	if err := a.link(); err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	if max := 512 * (1 + stage2Sectors); len(a.b) > max {
		return nil, fmt.Errorf("guest: an image of %d bytes, more than the %d the boot sector loads", len(a.b), max)
	}
	a.padTo(512 * (1 + stage2Sectors))
	return a.b, nil
}

// emitPattern emits CPU cpu's code: initialise its control block (and for the pointer chase
// link its pages; for the hot set fill them), print 'A' (CPU 0), then run pattern p over its
// part of the region forever. Labels are prefixed with the CPU.
func emitPattern(a *asm, p Pattern, c Config, cpu int) {
	part := c.Part(cpu)
	l := func(s string) string { return fmt.Sprintf("c%d.%s", cpu, s) }
	n := part.Pages
	start := uint32(part.regionStart())
	end := start + n*PageSize
	ctl := uint32(ctlBase + cpu*ctlSize)
	touches, think, header := ctl, ctl+4, ctl+16

	a.movMemAbs(header, Magic)
	a.movMemAbs(header+4, uint32(p))
	a.movMemAbs(header+8, 0) // passes
	a.movMemAbs(touches, 0)
	a.movMemAbs(think, 0)

	switch p {
	case PointerChase:
		// Link page x to page (A*x + C) mod N, walking the cycle from x = 0: eax = x, edx = next,
		// esi = &page[x], ebx = &page[next]; [esi+4] = ebx.
		a.xorEAXEAX()
		a.movECX(n)
		a.label(l("link"))
		a.imulEDXEAX(ChaseA)
		a.addEDX(ChaseC)
		a.andEDX(n - 1)
		a.movESIEAX()
		a.shlESI(12)
		a.addESI(start)
		a.movEBXEDX()
		a.shlEBX(12)
		a.addEBX(start)
		a.movESI4EBX()
		a.movEAXEDX()
		a.decECX()
		a.jnz8(l("link"))
	case HotSet:
		// Fill every page (a word at offset 8, which no pattern uses) so the region holds data
		// from the start: the hot set's first pass visits one cold page only, and zero pages
		// would cross a migration as markers, leaving post-copy nothing to move.
		a.movEAX(start)
		a.label(l("fill"))
		a.movMemEAX8(Magic)
		a.addEAX(PageSize)
		a.cmpEAX(end)
		a.jb8(l("fill"))
		a.movEDI(start + part.Hot*PageSize) // the cold cursor
	}

	// 'A' on COM1: the pattern starts. bl counts passes modulo 256 for the 'B's.
	if cpu == 0 {
		a.movDX16(comPort)
		a.movAL('A')
		a.outDXAL()
	}
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
		a.incMemAbs(touches)
		if !c.KeepTLB {
			a.invlpgAbs(touches)
		}
		inc()
		if !c.KeepTLB {
			flush()
		}
		if c.Think > 0 {
			// esi = [think] + 1; do esi-- while esi != 0: one iteration when it is 0.
			a.movESIMem(think)
			a.incESI()
			t := l(fmt.Sprintf("think%d", len(a.b)))
			a.label(t)
			a.decESI()
			a.jnz8(t)
		}
	}

	a.label(l("pass"))
	switch p {
	case Sequential:
		a.movEAX(start)
		a.label(l("inner"))
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(PageSize)
		a.cmpEAX(end)
		a.jb8(l("inner"))
	case Reverse:
		a.movEAX(end - PageSize)
		a.label(l("inner"))
		visit(a.incMemEAX, a.invlpgEAX)
		a.subEAX(PageSize)
		a.cmpEAX(start)
		a.jae8(l("inner")) // unsigned: below start after the first page
	case Strided:
		// eax walks (j*Stride) mod N: add Stride pages, wrap by subtracting the region size.
		a.movEAX(start)
		a.movECX(n)
		a.label(l("inner"))
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(part.Stride * PageSize)
		a.cmpEAX(end)
		a.jb8(l("nowrap"))
		a.subEAX(n * PageSize)
		a.label(l("nowrap"))
		a.decECX()
		a.jnz8(l("inner"))
	case HotSet:
		a.movEAX(start)
		a.label(l("inner"))
		visit(a.incMemEAX, a.invlpgEAX)
		a.addEAX(PageSize)
		a.cmpEAX(start + part.Hot*PageSize)
		a.jb8(l("inner"))
		visit(a.incMemEDI, a.invlpgEDI) // one cold page per pass
		a.addEDI(PageSize)
		a.cmpEDI(end)
		a.jb8(l("coldok"))
		a.movEDI(start + part.Hot*PageSize)
		a.label(l("coldok"))
	case PointerChase:
		a.movEAX(start)
		a.movECX(n)
		a.label(l("inner"))
		visit(a.incMemEAX, a.invlpgEAX)
		a.movEAXEAX4() // the next page is known only once this one is read
		a.decECX()
		a.jnz8(l("inner"))
	}
	a.incMemAbs(header + 8)
	if !c.KeepTLB {
		a.invlpgAbs(header)
	}
	if c.Think > 0 {
		a.movMemAbs(think, c.Think) // from the second pass on
	}
	a.incBL()
	a.jnz32(l("pass"))
	if cpu == 0 {
		a.movDX16(comPort)
		a.movAL('B')
		a.outDXAL()
	}
	a.jmp32(l("pass"))
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
// With more than one CPU check each CPU's Part with its own header instead.
// The guest must be stopped while both are dumped.
func Check(p Pattern, c Config, header, region []byte) (uint32, error) {
	c, passes, err := checkDump(p, c, header, region)
	if err != nil {
		return 0, err
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
			if want := uint32(c.regionStart()) + next*PageSize; got != want {
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
	c, passes, err := checkDump(p, c, header, region)
	if err != nil {
		return err
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

// checkDump validates what Check and CheckTouches share: a one-CPU config (with its defaults),
// the header of pattern p (whose pass count it returns), a region dump of the config's size.
func checkDump(p Pattern, c Config, header, region []byte) (Config, uint32, error) {
	c, err := c.withDefaults()
	if err != nil {
		return c, 0, err
	}
	if c.CPUs > 1 {
		return c, 0, fmt.Errorf("guest: %d CPUs: check each CPU's Config.Part", c.CPUs)
	}
	passes, err := Passes(p, header)
	if err != nil {
		return c, 0, err
	}
	if len(region) != int(c.Pages)*PageSize {
		return c, 0, fmt.Errorf("guest region dump of %d bytes, want %d", len(region), int(c.Pages)*PageSize)
	}
	return c, passes, nil
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
