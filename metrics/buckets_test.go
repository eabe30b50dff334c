package metrics

import (
	"math"
	"testing"
)

// TestServiceBuckets checks the conversion of the handler's 2^(1/4)
// buckets to Prometheus's cumulative ones at their edges.
func TestServiceBuckets(t *testing.T) {
	counts := make([]uint64, 160)
	counts[0] = 1   // < 1.19 ns
	counts[39] = 2  // [861 ns, 1024 ns): below the first bound
	counts[40] = 3  // [1024 ns, 1218 ns): below the second
	counts[83] = 4  // [1.76 ms, 2.10 ms): below 2^21 ns
	counts[119] = 5 // [0.90 s, 1.07 s): below the last bound
	counts[120] = 6 // from 1.07 s: +Inf only
	counts[159] = 7 // the catch-all bucket: +Inf only
	count, buckets := serviceBuckets(counts)
	if count != 28 {
		t.Fatalf("count %d, want 28", count)
	}
	if len(buckets) != serviceBucketMaxExp-serviceBucketMinExp+1 {
		t.Fatalf("%d buckets, want %d", len(buckets), serviceBucketMaxExp-serviceBucketMinExp+1)
	}
	want := func(k int) uint64 {
		switch {
		case k == 10:
			return 3
		case k < 21:
			return 6
		case k < 30:
			return 10
		default:
			return 15
		}
	}
	for k := serviceBucketMinExp; k <= serviceBucketMaxExp; k++ {
		le := math.Exp2(float64(k)) / 1e9
		got, ok := buckets[le]
		if !ok || got != want(k) {
			t.Errorf("bucket le=%g (2^%d ns): %d (present %v), want %d", le, k, got, ok, want(k))
		}
	}
	if c, b := serviceBuckets(make([]uint64, 160)); c != 0 || len(b) != 21 {
		t.Errorf("empty histogram: count %d, %d buckets; want 0 and 21", c, len(b))
	}
}
