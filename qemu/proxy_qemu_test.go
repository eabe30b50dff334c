package qemu

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/qemu/guest"
	"github.com/pagewarp/pagewarp/qemu/qemutest"
)

var guestConfig = guest.Config{Pages: 16384}

// TestProxyQEMU migrates a running guest through the proxy, with predictors none and ppm, with
// and without postcopy-preempt, with one vCPU and two, and checks the destination's memory. Post-copy bandwidth is
// capped so that the destination's faults, not the background transfer, bring in most of what
// it touches, and the proxy has requests to predict from.
func TestProxyQEMU(t *testing.T) {
	qemutest.Require(t)
	for _, c := range []struct {
		pattern   guest.Pattern
		predictor string
		preempt   bool
		cpus      uint32
	}{
		{guest.Sequential, "none", false, 1},
		{guest.Sequential, "ppm", false, 1},
		{guest.Strided, "ppm", true, 1},
		{guest.PointerChase, "nextn", false, 1},
		{guest.Reverse, "ppm", true, 2},
	} {
		name := fmt.Sprintf("%v-%s", c.pattern, c.predictor)
		if c.preempt {
			name += "-preempt"
		}
		if c.cpus > 1 {
			name += fmt.Sprintf("-%dcpus", c.cpus)
		}
		guestConfig := guest.Config{Pages: guestConfig.Pages, CPUs: c.cpus}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			src, dst := qemutest.StartPair(t, ctx, c.pattern, guestConfig)
			blocks, err := src.QMP.RAMBlocks(ctx)
			if err != nil {
				t.Fatal(err)
			}
			port, err := qemutest.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			destAddr := fmt.Sprintf("127.0.0.1:%d", port)
			p, err := NewProxy(ProxyConfig{Listen: "127.0.0.1:0", Dest: destAddr, Blocks: blocks, Predictor: c.predictor})
			if err != nil {
				t.Fatal(err)
			}
			serveErr := make(chan error, 1)
			go func() { serveErr <- p.Serve(ctx) }()
			defer func() {
				p.Close()
				if err := <-serveErr; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()
			before, err := src.Passes(ctx, c.pattern)
			if err != nil {
				t.Fatal(err)
			}
			res, err := qemutest.Migrate(ctx, src, dst, qemutest.Migration{
				ListenURI:         "tcp:" + destAddr,
				ConnectURI:        "tcp:" + p.Addr().String(),
				Preempt:           c.preempt,
				PostcopyBandwidth: 32 << 20,
			})
			st := p.Stats()
			t.Logf("proxy: %+v", st)
			if err != nil {
				t.Fatalf("%v\nsrc: %s\ndst: %s", err, src.Stderr(), dst.Stderr())
			}
			time.Sleep(300 * time.Millisecond)
			after, err := dst.Verify(ctx, c.pattern, guestConfig)
			if err != nil {
				t.Fatal(err)
			}
			if after <= before {
				t.Fatalf("guest made no progress: %d passes before migration, %d after", before, after)
			}
			if st.InjectionDisabled {
				t.Fatalf("injection disabled on a real migration: %s", st.DisabledReason)
			}
			if st.RealRequests == 0 || st.BytesToDest < 64<<20 || st.BytesToSource == 0 {
				t.Fatalf("proxy saw no post-copy traffic: %+v", st)
			}
			if want := int64(1); c.preempt {
				want = 2
				if st.Connections != want {
					t.Fatalf("%d connections through the proxy, want %d", st.Connections, want)
				}
			} else if st.Connections != want {
				t.Fatalf("%d connections through the proxy, want %d", st.Connections, want)
			}
			if c.predictor == "none" && st.Injected != 0 {
				t.Fatalf("predictor none injected %d", st.Injected)
			}
			if c.predictor != "none" && st.Injected == 0 {
				t.Fatalf("predictor %s injected nothing", c.predictor)
			}
			if int64(res.Source.RAM.PostcopyRequests) < st.RealRequests+st.Injected {
				t.Fatalf("source counted %d requests, proxy sent %d real + %d injected",
					res.Source.RAM.PostcopyRequests, st.RealRequests, st.Injected)
			}
			bt := "-"
			if res.Dest.PostcopyBlocktime != nil {
				bt = fmt.Sprint(*res.Dest.PostcopyBlocktime)
			}
			t.Logf("statuses %v, passes %d -> %d, source requests %d, blocktime %s ms, postcopy %v",
				res.Statuses, before, after, res.Source.RAM.PostcopyRequests, bt, res.Postcopy.Round(time.Millisecond))
		})
	}
}
