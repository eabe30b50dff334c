package guest

import (
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
		if len(b) != 512 || b[510] != 0x55 || b[511] != 0xaa {
			t.Fatalf("%v: not a boot sector", p)
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
}

// simulate runs pattern p in Go for steps page visits, the way the boot sector does, and
// returns the header and region it leaves.
func simulate(p Pattern, c Config, steps int) (header, region []byte) {
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
	return header, region
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
