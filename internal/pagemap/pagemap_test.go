package pagemap

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewarp/pagewarp/internal/uffd"
)

var pageSize = os.Getpagesize()

// openOrSkip opens /proc/self/pagemap, skipping only when the kernel has no
// PAGEMAP_SCAN; any other failure fails the test.
func openOrSkip(t *testing.T) *File {
	t.Helper()
	if err := Probe(); errors.Is(err, ErrUnsupported) {
		t.Skipf("kernel without PAGEMAP_SCAN: %v", err)
	} else if err != nil {
		t.Fatalf("probe: %v", err)
	}
	f, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func mmapRegion(t *testing.T, pages int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, pages*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	// Keep the test's page-granular expectations independent of THP.
	if err := unix.Madvise(b, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	return b
}

// scanAll scans [start, end) with a vector of vecLen regions, looping on
// walk_end, and returns the pages (indices from start) of every region.
func scanAll(t *testing.T, f *File, start, end uintptr, flags, mask, ret uint64, vecLen int) []int {
	t.Helper()
	vec := make([]Region, vecLen)
	var pages []int
	for at := start; at < end; {
		regions, walkEnd, err := f.Scan(at, end, flags, mask, 0, 0, ret, vec)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range regions {
			if r.Categories&ret != r.Categories {
				t.Errorf("region %#x-%#x has categories %#x outside the return mask %#x", r.Start, r.End, r.Categories, ret)
			}
			for a := r.Start; a < r.End; a += uint64(pageSize) {
				pages = append(pages, int((uintptr(a)-start)/uintptr(pageSize)))
			}
		}
		if walkEnd <= at {
			t.Fatalf("scan from %#x made no progress (walk_end %#x)", at, walkEnd)
		}
		at = walkEnd
	}
	return pages
}

// storeByte stores v at *b; being out of line, it keeps the compiler from
// dropping a store of the value already there.
//
//go:noinline
func storeByte(b *byte, v byte) { *b = v }

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProbe(t *testing.T) {
	err := Probe()
	if errors.Is(err, ErrUnsupported) {
		if !errors.Is(err, unix.ENOTTY) {
			t.Errorf("unsupported error %v does not wrap ENOTTY", err)
		}
		t.Skipf("kernel without PAGEMAP_SCAN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestScanPresent(t *testing.T) {
	f := openOrSkip(t)
	mem := mmapRegion(t, 16)
	for _, p := range []int{1, 2, 3, 7, 12} {
		mem[p*pageSize] = 1
	}
	base := addrOf(mem)
	end := base + uintptr(len(mem))
	want := []int{1, 2, 3, 7, 12}
	// A roomy vector gets three runs in one call.
	if got := scanAll(t, f, base, end, 0, PageIsPresent, PageIsPresent, 16); !equalInts(got, want) {
		t.Errorf("present pages %v, want %v", got, want)
	}
	// A one-region vector stops after each run; walk_end resumes the scan.
	if got := scanAll(t, f, base, end, 0, PageIsPresent, PageIsPresent, 1); !equalInts(got, want) {
		t.Errorf("present pages with a one-region vector %v, want %v", got, want)
	}
	vec := make([]Region, 1)
	regions, walkEnd, err := f.Scan(base, end, 0, PageIsPresent, 0, 0, PageIsPresent, vec)
	if err != nil {
		t.Fatal(err)
	}
	if len(regions) != 1 || regions[0].Start != uint64(base)+uint64(pageSize) || regions[0].End != uint64(base)+4*uint64(pageSize) {
		t.Errorf("first region %+v, want pages 1-4", regions)
	}
	if walkEnd >= end || walkEnd < base+4*uintptr(pageSize) {
		t.Errorf("walk_end %#x after a full vector, want within [%#x, %#x)", walkEnd, base+4*uintptr(pageSize), end)
	}
	// Inverted: pages not present.
	vec = make([]Region, 16)
	regions, _, err = f.Scan(base, end, 0, PageIsPresent, 0, PageIsPresent, PageIsPresent, vec)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range regions {
		n += int(r.End-r.Start) / pageSize
		if r.Categories != 0 {
			t.Errorf("absent region %#x-%#x reports categories %#x", r.Start, r.End, r.Categories)
		}
	}
	if n != 16-len(want) {
		t.Errorf("%d absent pages, want %d", n, 16-len(want))
	}
}

func TestScanBadArgs(t *testing.T) {
	f := openOrSkip(t)
	mem := mmapRegion(t, 2)
	base := addrOf(mem)
	vec := make([]Region, 4)
	if _, _, err := f.Scan(base+1, base+uintptr(pageSize), 0, 0, 0, 0, PageIsPresent, vec); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unaligned start: %v, want EINVAL", err)
	}
	if _, _, err := f.Scan(base, base+uintptr(pageSize), 0, 0, 0, 0, 1<<40, vec); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unknown category: %v, want EINVAL", err)
	}
	// Not registered with userfaultfd: CHECK_WPASYNC refuses.
	if _, _, err := f.Scan(base, base+uintptr(len(mem)), WPMatching|CheckWPAsync, PageIsWritten, 0, 0, PageIsWritten, vec); !errors.Is(err, unix.EPERM) {
		t.Errorf("CHECK_WPASYNC on an unregistered range: %v, want EPERM", err)
	}
	f.Close()
	if _, _, err := f.Scan(base, base+uintptr(len(mem)), 0, 0, 0, 0, PageIsPresent, vec); !errors.Is(err, ErrClosed) {
		t.Errorf("scan after close: %v, want ErrClosed", err)
	}
	if err := f.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v, want ErrClosed", err)
	}
}

// TestScanWPAsync is the dirty-tracking cycle: write-protect with async
// userfaultfd, write some pages (including never-touched ones), and collect
// and re-protect them in one scan.
func TestScanWPAsync(t *testing.T) {
	f := openOrSkip(t)
	u, err := uffd.Open(uffd.OpenOptions{Features: uffd.FeatureWPAsync | uffd.FeatureWPUnpopulated})
	if errors.Is(err, uffd.ErrUnavailable) {
		t.Skipf("no userfaultfd: %v", err)
	}
	if err != nil {
		t.Fatalf("userfaultfd with WP_ASYNC|WP_UNPOPULATED: %v", err)
	}
	defer u.Close()
	const pages = 64
	mem := mmapRegion(t, pages)
	for p := 0; p < pages/2; p++ {
		mem[p*pageSize] = 1
	}
	base := addrOf(mem)
	end := base + uintptr(len(mem))
	if _, err := u.Register(base, uint64(len(mem)), uffd.RegisterModeWP); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteProtect(base, uint64(len(mem)), true, false); err != nil {
		t.Fatal(err)
	}
	const flags = WPMatching | CheckWPAsync
	if got := scanAll(t, f, base, end, flags, PageIsWritten, PageIsWritten, 8); len(got) != 0 {
		t.Fatalf("written right after write-protect: %v", got)
	}
	want := []int{0, 3, 4, 5, 31, 32, 40, 63} // 32 and up never touched before
	for _, p := range want {
		storeByte(&mem[p*pageSize+7], mem[p*pageSize+7]) // a silent store is a write too
	}
	if got := scanAll(t, f, base, end, flags, PageIsWritten, PageIsWritten, 2); !equalInts(got, want) {
		t.Errorf("written %v, want %v", got, want)
	}
	if got := scanAll(t, f, base, end, flags, PageIsWritten, PageIsWritten, 2); len(got) != 0 {
		t.Errorf("written again with no writes: %v", got)
	}
	mem[10*pageSize] = 2
	if got := scanAll(t, f, base, end, flags, PageIsWritten, PageIsWritten, 2); !equalInts(got, []int{10}) {
		t.Errorf("written %v, want [10]", got)
	}
	// Every page is WP-allowed.
	if got := scanAll(t, f, base, end, 0, PageIsWPAllowed, PageIsWPAllowed, 2); len(got) != pages {
		t.Errorf("%d WP-allowed pages, want %d", len(got), pages)
	}
}
