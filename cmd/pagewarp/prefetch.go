package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/pagewarp/pagewarp/pageserver"
	"github.com/pagewarp/pagewarp/predictor"
	"github.com/pagewarp/pagewarp/wire"
)

// prefetchFlags are serve's push settings.
type prefetchFlags struct {
	predictor string
	budget    int
	fixed     bool
	warm      []string
}

func (p *prefetchFlags) register(f *pflag.FlagSet) {
	f.StringVar(&p.predictor, "predictor", "ppm", "predictor choosing the pages pushed after each demand fault: "+
		strings.Join(predictor.Names(), ", ")+" (none: no push)")
	f.IntVar(&p.budget, "push-budget", pageserver.DefaultPushBudget, "most pages pushed after one demand fault")
	f.BoolVar(&p.fixed, "push-fixed", false, "push the full budget after every fault instead of adapting the window to the target's reports")
	f.StringSliceVar(&p.warm, "warm", nil, "warm the predictor with these trace files (pagewarp trace record) for the region they name")
}

// options turns the flags into pageserver.Prefetch, reading the warm traces.
func (p *prefetchFlags) options(regions []wire.Region) (pageserver.Prefetch, error) {
	pf := pageserver.Prefetch{Predictor: p.predictor, Budget: p.budget, Fixed: p.fixed}
	if p.budget < 1 || p.budget > wire.MaxPagesPerRequest {
		return pf, fmt.Errorf("--push-budget %d: want 1..%d", p.budget, wire.MaxPagesPerRequest)
	}
	if _, err := predictor.New(p.predictor, predictor.Config{Pages: 1}); err != nil {
		return pf, fmt.Errorf("--predictor: %w", err)
	}
	for _, path := range p.warm {
		f, err := os.Open(path)
		if err != nil {
			return pf, fmt.Errorf("--warm: %w", err)
		}
		tr, err := predictor.ReadTrace(f)
		f.Close()
		if err != nil {
			return pf, fmt.Errorf("--warm %s: %w", path, err)
		}
		// A trace names no region: it warms the one region of its size.
		var match []uint32
		for _, r := range regions {
			if r.Pages == tr.Pages {
				match = append(match, r.ID)
			}
		}
		if len(match) != 1 {
			return pf, fmt.Errorf("--warm %s: the trace is of a region of %d pages; %d served regions have that size, want exactly 1", path, tr.Pages, len(match))
		}
		region := match[0]
		if pf.Warm == nil {
			pf.Warm = make(map[uint32][]uint64)
		}
		pf.Warm[region] = append(pf.Warm[region], tr.Seq...)
	}
	return pf, nil
}

func (p *prefetchFlags) describe() string {
	var s string
	if p.fixed {
		s += ", fixed window"
	} else {
		s += ", adaptive window"
	}
	if len(p.warm) > 0 {
		s += ", warmed with " + strings.Join(p.warm, ", ")
	}
	return s
}
