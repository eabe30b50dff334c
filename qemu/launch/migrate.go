package launch

import (
	"context"
	"fmt"
	"time"

	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// Migration configures Migrate.
type Migration struct {
	// ListenURI is where the destination listens (migrate-incoming; the destination must have
	// been started with Incoming "defer"); ConnectURI is where the source migrates to: the same
	// URI, or a proxy's in between.
	ListenURI, ConnectURI string
	// Preempt enables postcopy-preempt on both sides.
	Preempt bool
	// MaxBandwidth caps pre-copy in bytes/s (default 32 MiB/s: pre-copy of the test guest lasts
	// seconds, so the switch to post-copy happens with most of RAM still to send).
	MaxBandwidth uint64
	// PostcopyBandwidth caps post-copy's background transfer in bytes/s (0: unlimited).
	PostcopyBandwidth uint64
	// PostcopyAfter is how long pre-copy runs before migrate-start-postcopy (default 500 ms).
	PostcopyAfter time.Duration
	// Poll is the query-migrate interval (default 50 ms).
	Poll time.Duration
}

// Result is what Migrate observed.
type Result struct {
	// Source and Dest are the last query-migrate of each side (Dest carries the blocktime).
	Source, Dest qmp.MigrationInfo
	// Statuses is the source's sequence of distinct statuses.
	Statuses []string
	// Postcopy is the time from migrate-start-postcopy to the source's completion; Total from
	// migrate to the destination's completion.
	Postcopy, Total time.Duration
}

// Migrate runs a post-copy migration from src to dst: postcopy-ram on both sides (and
// postcopy-preempt if asked), postcopy-blocktime on the destination, migrate, pre-copy for
// PostcopyAfter, migrate-start-postcopy, then waits until both sides report completed. It fails
// if either side reports failed or postcopy-paused, or if the migration never entered
// post-copy (ErrNotPostcopy).
func Migrate(ctx context.Context, src, dst *VM, m Migration) (Result, error) {
	if m.MaxBandwidth == 0 {
		m.MaxBandwidth = 32 << 20
	}
	if m.PostcopyAfter == 0 {
		m.PostcopyAfter = 500 * time.Millisecond
	}
	if m.Poll == 0 {
		m.Poll = 50 * time.Millisecond
	}
	var res Result
	srcCaps := map[string]bool{"postcopy-ram": true}
	dstCaps := map[string]bool{"postcopy-ram": true, "postcopy-blocktime": true}
	if m.Preempt {
		srcCaps["postcopy-preempt"] = true
		dstCaps["postcopy-preempt"] = true
	}
	if err := src.QMP.SetCapabilities(ctx, srcCaps); err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	if err := dst.QMP.SetCapabilities(ctx, dstCaps); err != nil {
		return res, fmt.Errorf("destination: %w", err)
	}
	if err := src.QMP.SetParameters(ctx, map[string]any{
		"max-bandwidth":          m.MaxBandwidth,
		"max-postcopy-bandwidth": m.PostcopyBandwidth,
	}); err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	if err := dst.QMP.MigrateIncoming(ctx, m.ListenURI); err != nil {
		return res, fmt.Errorf("destination: %w", err)
	}
	start := time.Now()
	if err := src.QMP.Migrate(ctx, m.ConnectURI); err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	var switchAt time.Time
	sawPostcopy := false
	for {
		mi, err := src.QMP.QueryMigrate(ctx)
		if err != nil {
			return res, fmt.Errorf("source: %w", err)
		}
		res.Source = mi
		if n := len(res.Statuses); n == 0 || res.Statuses[n-1] != mi.Status {
			res.Statuses = append(res.Statuses, mi.Status)
		}
		switch mi.Status {
		case "failed", "postcopy-paused", "cancelled":
			return res, fmt.Errorf("source migration %s (%s); statuses %v", mi.Status, mi.ErrorDesc, res.Statuses)
		case "postcopy-active":
			sawPostcopy = true
		case "active":
			if switchAt.IsZero() && time.Since(start) >= m.PostcopyAfter {
				if err := src.QMP.StartPostcopy(ctx); err != nil {
					return res, fmt.Errorf("source: %w", err)
				}
				switchAt = time.Now()
			}
		}
		if mi.Status == "completed" {
			break
		}
		if d, err := dst.QMP.QueryMigrate(ctx); err == nil && (d.Status == "failed" || d.Status == "postcopy-paused") {
			return res, fmt.Errorf("destination migration %s (%s); source statuses %v", d.Status, d.ErrorDesc, res.Statuses)
		}
		if err := sleep(ctx, m.Poll); err != nil {
			return res, fmt.Errorf("waiting for the source to complete (statuses %v): %w", res.Statuses, err)
		}
	}
	if !switchAt.IsZero() {
		res.Postcopy = time.Since(switchAt)
	}
	for {
		d, err := dst.QMP.QueryMigrate(ctx)
		if err != nil {
			return res, fmt.Errorf("destination: %w", err)
		}
		res.Dest = d
		if d.Status == "completed" {
			break
		}
		if d.Status == "failed" || d.Status == "postcopy-paused" {
			return res, fmt.Errorf("destination migration %s (%s)", d.Status, d.ErrorDesc)
		}
		if err := sleep(ctx, m.Poll); err != nil {
			return res, fmt.Errorf("waiting for the destination to complete (last %q): %w", d.Status, err)
		}
	}
	res.Total = time.Since(start)
	if !sawPostcopy {
		return res, fmt.Errorf("%w (statuses %v)", ErrNotPostcopy, res.Statuses)
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
