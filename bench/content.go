package bench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// Content describes the deterministic content of a demo region.
type Content struct {
	Seed uint64
	// ZeroFraction of the pages are all zero bytes (chosen by a hash of the
	// page number, so they are scattered, not contiguous).
	ZeroFraction float64
}

// isZeroPage reports whether page is one of the zero pages.
func (c Content) isZeroPage(page uint64) bool {
	if c.ZeroFraction <= 0 {
		return false
	}
	h := mix(c.Seed ^ 0x9e3779b97f4a7c15*(page+1))
	return float64(h>>11)/float64(1<<53) < c.ZeroFraction
}

// FillPage writes page's content into dst (one page).
func (c Content) FillPage(dst []byte, page uint64) {
	if c.isZeroPage(page) {
		clear(dst)
		return
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], c.Seed)
	binary.LittleEndian.PutUint64(key[8:], page)
	binary.LittleEndian.PutUint64(key[16:], 0x7061676577617270) // "pagewarp"
	r := rand.NewChaCha8(key)
	r.Read(dst)
	if allZero(dst) { // astronomically unlikely; keep "non-zero page" true
		dst[0] = 1
	}
}

// Fill writes the content of every page of mem, using all cores.
func (c Content) Fill(mem []byte, pageSize int) {
	pages := len(mem) / pageSize
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := w; p < pages; p += workers {
				c.FillPage(mem[p*pageSize:(p+1)*pageSize], uint64(p))
			}
		}()
	}
	wg.Wait()
}

// Check compares mem with the content and returns the first page that
// differs, or -1.
func (c Content) Check(mem []byte, pageSize int) int {
	want := make([]byte, pageSize)
	for p := 0; p < len(mem)/pageSize; p++ {
		c.FillPage(want, uint64(p))
		if string(want) != string(mem[p*pageSize:(p+1)*pageSize]) {
			return p
		}
	}
	return -1
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// mix is SplitMix64's finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ParseSize parses a byte size such as 4096, 64KiB, 256MiB or 1GiB
// (binary units; KB/MB/GB are accepted as the same binary units).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional KiB, MiB or GiB suffix", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// FormatSize formats n bytes with a binary unit.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
