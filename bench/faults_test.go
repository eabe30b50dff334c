package bench

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
)

// TestFaultModes runs the in-process and baseline fault modes on a small
// region; each checks the region byte for byte against the source.
func TestFaultModes(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	defer runtime.GOMAXPROCS(faulthandler.ReserveProcs(1))
	ps := os.Getpagesize()
	src := make([]byte, 3000*ps)
	Content{Seed: 5}.Fill(src, ps)
	for _, spin := range []int{0, 100000, 50000} {
		lat, err := inprocessFaults(src, ps, time.Duration(spin))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("in-process spin=%d: p50 %.1fµs p99 %.1fµs", spin, percentile(lat, .5), percentile(lat, .99))
	}
	lat, err := baselineFaults(src, ps)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: p50 %.1fµs p99 %.1fµs", percentile(lat, .5), percentile(lat, .99))
}
