package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestBuild(t *testing.T) {
	for _, p := range Patterns {
		b, err := Build(p, Config{})
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if len(b) != 512*(1+stage2Sectors) || b[510] != 0x55 || b[511] != 0xaa {
			t.Fatalf("%v: not a boot sector and its stage 2", p)
		}
		two, err := Build(p, Config{CPUs: 2})
		if err != nil {
			t.Fatalf("%v with 2 CPUs: %v", p, err)
		}
		// The second CPU's code starts at apEntry; with one CPU it only halts.
		if bytes.Equal(two, b) || two[apEntry-loadAddr] != 0xfa || b[apEntry-loadAddr] != 0xfa {
			t.Fatalf("%v: no second CPU entry (cli) at %#x", p, apEntry)
		}
	}
	if _, err := Build(Sequential, Config{Pages: 1000}); err == nil {
		t.Fatal("accepted 1000 pages")
	}
	if _, err := Build(Strided, Config{Stride: 16}); err == nil {
		t.Fatal("accepted an even stride")
	}
	if _, err := Build(Pattern(9), Config{}); err == nil {
		t.Fatal("accepted an unknown pattern")
	}
	if _, err := Build(Sequential, Config{CPUs: 3}); err == nil {
		t.Fatal("accepted 3 CPUs")
	}
	if _, err := Build(Strided, Config{Pages: 32, CPUs: 2, Stride: 17}); err == nil {
		t.Fatal("accepted a stride beyond a CPU's part")
	}
	// Parts: equal halves, one after the other.
	c := Config{Pages: 1024, CPUs: 2}
	p0, p1 := c.Part(0), c.Part(1)
	if p0.PartStart() != RegionStart || p1.PartStart() != RegionStart+512*PageSize || p0.RegionBytes() != 512*PageSize ||
		p1.RegionEnd() != c.RegionEnd() || HeaderAddrOf(1) != HeaderAddr+ctlSize || TouchesAddrOf(1) != TouchesAddr+ctlSize {
		t.Fatalf("parts %+v %+v", p0, p1)
	}
	if _, err := Check(Sequential, c, nil, nil); err == nil {
		t.Fatal("Check accepted a two-CPU config")
	}
}

// simulate runs pattern p in Go for steps page visits, the way the boot sector does, and
// returns the header and region it leaves.
func simulate(p Pattern, c Config, steps int) (header, region []byte) {
	header, region, _ = simulateTouches(p, c, steps)
	return header, region
}

// simulateTouches is simulate, also returning the visit counter.
func simulateTouches(p Pattern, c Config, steps int) (header, region []byte, touches uint32) {
	c, _ = c.withDefaults()
	header = make([]byte, HeaderSize)
	binary.LittleEndian.PutUint32(header, Magic)
	binary.LittleEndian.PutUint32(header[4:], uint32(p))
	region = make([]byte, int(c.Pages)*PageSize)
	order, _ := Order(p, c)
	if p == PointerChase {
		for j, pg := range order {
			binary.LittleEndian.PutUint32(region[pg*PageSize+4:], RegionStart+order[(j+1)%len(order)]*PageSize)
		}
	}
	inc := func(pg uint32) {
		touches++
		o := pg * PageSize
		binary.LittleEndian.PutUint32(region[o:], binary.LittleEndian.Uint32(region[o:])+1)
	}
	passes := uint32(0)
	cold := c.Hot
	for s := 0; s < steps; {
		visits := order
		if p == HotSet {
			visits = order[:c.Hot]
		}
		for _, pg := range visits {
			if s == steps {
				break
			}
			inc(pg)
			s++
		}
		if s == steps {
			break
		}
		if p == HotSet {
			inc(cold)
			s++
			if cold++; cold == c.Pages {
				cold = c.Hot
			}
		}
		passes++
		binary.LittleEndian.PutUint32(header[8:], passes)
	}
	return header, region, touches
}

func TestCheck(t *testing.T) {
	c := Config{Pages: 64, Stride: 5, Hot: 8}
	for _, p := range Patterns {
		for _, steps := range []int{0, 1, 63, 64, 65, 1000, 12345} {
			h, r := simulate(p, c, steps)
			passes, err := Check(p, c, h, r)
			if err != nil {
				t.Fatalf("%v after %d steps: %v", p, steps, err)
			}
			_ = passes
		}
		h, r := simulate(p, c, 5000)
		// A stale page (one pass behind where it should be) and a zeroed page are caught.
		order, _ := Order(p, c)
		pg := order[len(order)/2]
		if p == HotSet {
			pg = order[3]
		}
		binary.LittleEndian.PutUint32(r[pg*PageSize:], binary.LittleEndian.Uint32(r[pg*PageSize:])-1)
		if _, err := Check(p, c, h, r); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v: stale page not caught: %v", p, err)
		}
		h, r = simulate(p, c, 5000)
		clear(r[order[0]*PageSize : (order[0]+1)*PageSize])
		if _, err := Check(p, c, h, r); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v: zero page not caught: %v", p, err)
		}
	}
	h, r := simulate(HotSet, c, 5000)
	binary.LittleEndian.PutUint32(r[(c.Hot+3)*PageSize:], 1000) // a cold page off by a lot
	if _, err := Check(HotSet, c, h, r); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("cold corruption not caught: %v", err)
	}
	h, _ = simulate(Sequential, c, 10)
	if _, err := Check(Strided, c, h, r); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong pattern in header not caught: %v", err)
	}
}

// The visit counter matches the page counters after any number of visits (and one visit
// more, the guest stopped between the two increments); pages whose stores were lost since some
// pass, with their counters still consistent among themselves, are caught by it alone.
func TestCheckTouches(t *testing.T) {
	c := Config{Pages: 64, Stride: 5, Hot: 8}
	for _, p := range Patterns {
		for _, steps := range []int{0, 1, 63, 64, 65, 1000, 12345} {
			h, r, n := simulateTouches(p, c, steps)
			if err := CheckTouches(p, c, h, r, n); err != nil {
				t.Fatalf("%v after %d steps: %v", p, steps, err)
			}
			if err := CheckTouches(p, c, h, r, n+1); err != nil {
				t.Fatalf("%v after %d steps, counter one ahead: %v", p, steps, err)
			}
			if steps > 0 {
				if err := CheckTouches(p, c, h, r, n+2); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%v after %d steps: counter two ahead not caught: %v", p, steps, err)
				}
			}
		}
	}
	// Stores lost since some pass: region and pass count both from an old state, consistent
	// among themselves, while the guest went on counting its visits. Check cannot tell; the
	// visit counter can.
	for _, p := range Patterns {
		_, _, n := simulateTouches(p, c, 9000)
		h, r, _ := simulateTouches(p, c, 4500)
		if _, err := Check(p, c, h, r); err != nil {
			t.Fatalf("%v: old state not consistent: %v", p, err)
		}
		if err := CheckTouches(p, c, h, r, n); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%v: lost stores not caught by the visit counter: %v", p, err)
		}
	}
}

func TestReverseOrder(t *testing.T) {
	o, err := Order(Reverse, Config{Pages: 16})
	if err != nil {
		t.Fatal(err)
	}
	if o[0] != 15 || o[15] != 0 {
		t.Fatalf("reverse order %v", o)
	}
	if p, err := ParsePattern("reverse"); err != nil || p != Reverse {
		t.Fatalf("ParsePattern(reverse) = %v, %v", p, err)
	}
}

// The think loop is in the sector when asked for, and every pattern still fits with it.
func TestBuildThink(t *testing.T) {
	for _, p := range Patterns {
		flat, err := Build(p, Config{})
		if err != nil {
			t.Fatal(err)
		}
		slow, err := Build(p, Config{Think: 1000})
		if err != nil {
			t.Fatalf("%v with think: %v", p, err)
		}
		if bytes.Equal(flat, slow) {
			t.Fatalf("%v: think changed nothing", p)
		}
		// mov esi, [0x9004]; inc esi; dec esi; jnz -3 ... mov dword [0x9004], 1000
		if !bytes.Contains(slow, []byte{0x8b, 0x35, 0x04, 0x90, 0, 0, 0x46, 0x4e, 0x75, 0xfd}) {
			t.Fatalf("%v: no delay loop in the sector", p)
		}
		if !bytes.Contains(slow, []byte{0xc7, 0x05, 0x04, 0x90, 0, 0, 0xe8, 0x03, 0, 0}) {
			t.Fatalf("%v: the delay is never armed", p)
		}
	}
}

// The chase cycle visits every page once per pass (full period).
func TestChaseFullPeriod(t *testing.T) {
	for _, n := range []uint32{16, 1024, 65536} {
		o, err := Order(PointerChase, Config{Pages: n})
		if err != nil {
			t.Fatal(err)
		}
		seen := make([]bool, n)
		for _, pg := range o {
			if seen[pg] {
				t.Fatalf("n=%d: page %d visited twice", n, pg)
			}
			seen[pg] = true
		}
		if last := o[n-1]; (ChaseA*last+ChaseC)&(n-1) != 0 {
			t.Fatalf("n=%d: cycle does not return to page 0", n)
		}
	}
}
