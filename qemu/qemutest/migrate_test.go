package qemutest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/qemu/guest"
)

// guestConfig is the test guest's region: 64 MiB in a 160 MiB VM.
var guestConfig = guest.Config{Pages: 16384}

// migrateLoopback migrates src to dst with post-copy over a free loopback port (Migrate's
// defaults), failing t with both QEMUs' output on error.
func migrateLoopback(t *testing.T, ctx context.Context, src, dst *VM) Result {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", port)
	res, err := Migrate(ctx, src, dst, Migration{ListenURI: uri, ConnectURI: uri})
	if err != nil {
		t.Fatalf("%v\nsrc: %s\ndst: %s", err, src.Stderr(), dst.Stderr())
	}
	return res
}

// TestPostcopyPlain migrates a running guest with post-copy, once per access pattern, and
// checks the destination's memory and that the guest kept running there.
func TestPostcopyPlain(t *testing.T) {
	Require(t)
	for _, p := range guest.Patterns {
		t.Run(p.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			src, dst := StartPair(t, ctx, p, guestConfig)
			before, err := src.Passes(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			res := migrateLoopback(t, ctx, src, dst)
			if _, err := src.QMP.WaitEvent(ctx, "STOP"); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.QMP.WaitEvent(ctx, "RESUME"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // let the guest run on the destination
			after, err := dst.Verify(ctx, p, guestConfig)
			if err != nil {
				t.Fatal(err)
			}
			if after <= before {
				t.Fatalf("guest made no progress: %d passes before migration, %d after", before, after)
			}
			bt := "-"
			if res.Dest.PostcopyBlocktime != nil {
				bt = fmt.Sprint(*res.Dest.PostcopyBlocktime)
			}
			t.Logf("%v: statuses %v, passes %d -> %d, requests %d, postcopy %v, total %v, blocktime %s ms, postcopy-bytes %d",
				p, res.Statuses, before, after, res.Source.RAM.PostcopyRequests, res.Postcopy.Round(time.Millisecond),
				res.Total.Round(time.Millisecond), bt, res.Source.RAM.PostcopyBytes)
		})
	}
}

// TestPostcopyTwoCPUs migrates a guest whose two vCPUs each run the pattern over their own half
// of the region (the second started by INIT-SIPI-SIPI), with post-copy, and checks both
// halves, both visit counters, and that both vCPUs kept running on the destination.
func TestPostcopyTwoCPUs(t *testing.T) {
	Require(t)
	for _, p := range []guest.Pattern{guest.Strided, guest.PointerChase} {
		t.Run(p.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			gc := guest.Config{Pages: 16384, CPUs: 2}
			src, dst := StartPair(t, ctx, p, gc)
			touches := func(v *VM, cpu int) uint32 {
				n, err := v.TouchesOf(ctx, cpu)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			// The second vCPU runs: its visit counter moves on the source.
			a := touches(src, 1)
			time.Sleep(100 * time.Millisecond)
			if b := touches(src, 1); b == a {
				t.Fatalf("the second vCPU is not running its pattern (visit counter %d, still %d 100 ms later)", a, b)
			}
			res := migrateLoopback(t, ctx, src, dst)
			if _, err := dst.QMP.WaitEvent(ctx, "RESUME"); err != nil {
				t.Fatal(err)
			}
			at := [2]uint32{touches(dst, 0), touches(dst, 1)}
			time.Sleep(300 * time.Millisecond)
			for cpu := range 2 {
				if now := touches(dst, cpu); now == at[cpu] {
					t.Fatalf("vCPU %d made no progress on the destination: %d visits, as many 300 ms later", cpu, now)
				}
			}
			if _, err := dst.Verify(ctx, p, gc); err != nil {
				t.Fatal(err)
			}
			t.Logf("%v, 2 vCPUs: statuses %v, requests %d, postcopy %v, vCPU blocktime %v ms", p, res.Statuses,
				res.Source.RAM.PostcopyRequests, res.Postcopy.Round(time.Millisecond), res.Dest.PostcopyVCPUBlocktime)
		})
	}
}
