package precopy_test

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/faulthandler"
	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/precopy"
)

// BenchmarkRound0 pre-copies an idle region of unique content over loopback
// TCP: scan, hash, send on N streams, verify and install on the target. It
// reports the region's bytes per second of round time (SetBytes).
func BenchmarkRound0(b *testing.B) {
	for _, streams := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			const n = 64 << 20 / 4096
			mem := mapRegion(b, n)
			fillUnique(mem, 0, n, 11)
			b.SetBytes(int64(len(mem)))
			var track, hash, total time.Duration
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(0, &ru0)
			for b.Loop() {
				b.StopTimer()
				rg := newBenchRig(b, mem, streams)
				b.StartTimer()
				st, err := rg.sender.Round(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				track += st.TrackTime
				hash += st.HashTime
				total += st.Duration
				rg.close()
				b.StartTimer()
			}
			syscall.Getrusage(0, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(track+hash)/float64(total)*100, "%track+hash")
			b.ReportMetric(float64(cpu)/float64(total), "cpus")
		})
	}
}

type benchRig struct {
	sender  *precopy.Sender
	closers []func()
}

func (r *benchRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// newBenchRig is newRig without testing.T's cleanups, so that each
// iteration tears its rig down before the next.
func newBenchRig(b *testing.B, mem []byte, streams int) *benchRig {
	r := &benchRig{}
	tr, err := precopy.NewTracker(precopy.TrackAuto, mem, pageSize)
	if err != nil {
		b.Fatal(err)
	}
	r.closers = append(r.closers, func() { tr.Close() })
	s, err := precopy.NewSender([]precopy.Region{{ID: 0, Mem: mem, Tracker: tr}}, precopy.SenderConfig{PageSize: pageSize})
	if err != nil {
		b.Fatal(err)
	}
	r.sender = s
	r.closers = append(r.closers, func() { s.Close() })
	src, err := pageserver.NewRegionSource("bench", mem, pageSize)
	if err != nil {
		b.Fatal(err)
	}
	srv := pageserver.New(src, pageserver.Options{Precopy: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	r.closers = append(r.closers, func() { srv.Close() })
	ctx := context.Background()
	h, err := faulthandler.Dial(ctx, "tcp", ln.Addr().String(), faulthandler.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r.closers = append(r.closers, func() { h.Close() })
	recv, err := precopy.Dial(ctx, "tcp", ln.Addr().String(), []*faulthandler.Handler{h}, precopy.ReceiverConfig{Streams: streams})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { recv.Run(rctx); close(done) }()
	r.closers = append(r.closers, func() { cancel(); <-done })
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	return r
}
