package faulthandler_test

import (
	"net"
	"os"
	"testing"

	"github.com/pagewarp/pagewarp/bench"
	"github.com/pagewarp/pagewarp/internal/uffdtest"
	"github.com/pagewarp/pagewarp/pageserver"
)

// TestPushEndToEnd migrates a region to a target process whose threads run a
// workload with no background pull, so every page arrives by demand or by
// push, from a page server that pushes predicted pages. Every byte must
// match, the pushes must replace most demand faults on a sequential
// workload, and the target's probe reports must reach the server.
func TestPushEndToEnd(t *testing.T) {
	uffdtest.SkipIfUnavailable(t)
	const size = 32 << 20
	ps := os.Getpagesize()
	pages := uint64(size / ps)
	for _, tc := range []struct {
		name, predictor, workload string
		probeEvery                int
		maxDemand                 uint64 // demand faults at most
		pull                      bool
	}{
		// 4 threads, 16 pages pushed per fault: 1/17 of the pages at best.
		{"ppm-sequential", "ppm", "sequential", 0, pages / 8, false},
		{"nextn-sequential-exact-probes", "nextn", "sequential", 1, pages / 8, false},
		{"ppm-strided", "ppm", "strided", 0, pages / 4, false},
		// Unwarmed ppm learns nothing from a random order: it must not lose pages.
		{"ppm-random", "ppm", "random", 0, pages, false},
		// With the background pull too: pushes and background requests
		// share the pages, none is lost or sent twice but for races.
		{"ppm-sequential-pull", "ppm", "sequential", 0, pages / 8, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := bench.Content{Seed: 9, ZeroFraction: 0.25}
			mem := make([]byte, size)
			c.Fill(mem, ps)
			src, err := pageserver.NewRegionSource("test", mem, ps)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := pageserver.New(src, pageserver.Options{Prefetch: pageserver.Prefetch{Predictor: tc.predictor}})
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })

			cmd, out, errb := startTarget(t, targetSpec{Addr: ln.Addr().String(), Threads: 4, Seed: c.Seed, Zero: c.ZeroFraction,
				Workload: tc.workload, NoPull: !tc.pull, ProbeEvery: tc.probeEvery})
			rep := waitTarget(t, cmd, out, errb)
			if rep.Mismatch != -1 {
				t.Fatalf("page %d differs from the source", rep.Mismatch)
			}
			st := rep.Stats
			if !st.Complete || st.Resident != pages {
				t.Fatalf("stats %+v: want every one of %d pages resident", st, pages)
			}
			if got := st.DemandPages + st.ZeroPages + st.PushedPages + st.BackgroundPages; got != pages || (!tc.pull && st.BackgroundPages != 0) {
				t.Errorf("pages by kind: %d demand + %d zero + %d pushed + %d background = %d, want %d",
					st.DemandPages, st.ZeroPages, st.PushedPages, st.BackgroundPages, got, pages)
			}
			if st.DemandRequests > tc.maxDemand {
				t.Errorf("%d demand requests, want at most %d of %d pages", st.DemandRequests, tc.maxDemand, pages)
			}
			sst := srv.Stats()
			if sst.PagesPushed != st.PushedReceived {
				t.Errorf("server announced %d pushed pages, target received %d", sst.PagesPushed, st.PushedReceived)
			}
			// A page goes out twice only when a demand request overtook its push.
			if sent := sst.PagesSent + sst.ZeroPagesSent; !tc.pull && sent > pages+st.DemandRequests {
				t.Errorf("server sent %d pages for %d pages and %d demand requests", sent, pages, st.DemandRequests)
			}
			// One pushed page in 8 (by a salted hash) is a probe: with few
			// pushed pages (the pull got ahead of them) there may be none.
			if st.PushedPages >= 128 {
				if st.ProbesStaged == 0 || st.ProbesUsed+st.ProbesUnused > st.ProbesStaged {
					t.Errorf("probes: %d staged, %d used, %d unused", st.ProbesStaged, st.ProbesUsed, st.ProbesUnused)
				}
				if tc.workload == "sequential" && (st.ProbesUsed == 0 || sst.PushReportedUsed == 0) {
					t.Errorf("sequential pushes: %d probes touched, %d reported used at the server; want some", st.ProbesUsed, sst.PushReportedUsed)
				}
				if tc.probeEvery == 1 && st.ProbesStaged != st.PushedPages {
					t.Errorf("every pushed page a probe: %d probes for %d pushed pages", st.ProbesStaged, st.PushedPages)
				}
			}
			t.Logf("%d pages: %d demand requests, %d pushed after %d notices, probes %d (%d used, %d unused), coalesced %d, %v",
				pages, st.DemandRequests, st.PushedPages, st.PushNotices, st.ProbesStaged, st.ProbesUsed, st.ProbesUnused, st.FaultsCoalesced, st.Elapsed)
		})
	}
}
