package qmp

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// SetCapabilities sets migration capabilities (migrate-set-capabilities), e.g.
// {"postcopy-ram": true}. On the destination it must run before the incoming migration starts.
func (c *Client) SetCapabilities(ctx context.Context, caps map[string]bool) error {
	type cap struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	list := make([]cap, 0, len(caps))
	for name, on := range caps {
		list = append(list, cap{name, on})
	}
	return c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}

// SetParameters sets migration parameters (migrate-set-parameters), e.g.
// {"max-bandwidth": 64 << 20, "downtime-limit": 300}.
func (c *Client) SetParameters(ctx context.Context, params map[string]any) error {
	return c.Execute(ctx, "migrate-set-parameters", params, nil)
}

// Migrate starts an outgoing migration to uri (e.g. "tcp:127.0.0.1:4444").
func (c *Client) Migrate(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil)
}

// MigrateIncoming starts listening for an incoming migration on uri (QEMU started with
// -incoming defer).
func (c *Client) MigrateIncoming(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil)
}

// StartPostcopy asks the source to switch to post-copy (migrate-start-postcopy). On QEMU 7.2 it
// only sets a flag: the switch happens when the migration thread next decides, and only if the
// remaining data is at least bandwidth x downtime-limit; otherwise pre-copy just completes.
func (c *Client) StartPostcopy(ctx context.Context) error {
	return c.Execute(ctx, "migrate-start-postcopy", nil, nil)
}

// Stop pauses the guest.
func (c *Client) Stop(ctx context.Context) error { return c.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest.
func (c *Client) Cont(ctx context.Context) error { return c.Execute(ctx, "cont", nil, nil) }

// Status is the reply of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// QueryStatus returns the run state of the guest.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// RAMStats is the "ram" member of query-migrate (bytes unless named otherwise).
type RAMStats struct {
	Transferred      uint64  `json:"transferred"`
	Remaining        uint64  `json:"remaining"`
	Total            uint64  `json:"total"`
	Duplicate        uint64  `json:"duplicate"`
	Normal           uint64  `json:"normal"`
	NormalBytes      uint64  `json:"normal-bytes"`
	DirtyPagesRate   uint64  `json:"dirty-pages-rate"` // pages/s, refreshed at most once a second
	DirtySyncCount   uint64  `json:"dirty-sync-count"`
	Mbps             float64 `json:"mbps"`
	PageSize         uint64  `json:"page-size"`
	PostcopyRequests uint64  `json:"postcopy-requests"` // every request message, injected ones too
	PrecopyBytes     uint64  `json:"precopy-bytes"`
	PostcopyBytes    uint64  `json:"postcopy-bytes"`
	DowntimeBytes    uint64  `json:"downtime-bytes"`
}

// MigrationInfo is the reply of query-migrate, with the fields the QEMU integration uses.
// Times are in milliseconds.
type MigrationInfo struct {
	Status                string    `json:"status"`
	RAM                   *RAMStats `json:"ram,omitempty"`
	TotalTime             uint64    `json:"total-time"`
	ExpectedDowntime      uint64    `json:"expected-downtime"`
	Downtime              uint64    `json:"downtime"`
	SetupTime             uint64    `json:"setup-time"`
	PostcopyBlocktime     *uint64   `json:"postcopy-blocktime,omitempty"`      // destination, once completed
	PostcopyVCPUBlocktime []uint64  `json:"postcopy-vcpu-blocktime,omitempty"` // destination, once completed
	ErrorDesc             string    `json:"error-desc,omitempty"`
}

// QueryMigrate returns the migration state (query-migrate).
func (c *Client) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var mi MigrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &mi)
	return mi, err
}

// HumanMonitorCommand runs an HMP command line and returns its output.
func (c *Client) HumanMonitorCommand(ctx context.Context, line string) (string, error) {
	var out string
	err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": line}, &out)
	return out, err
}

// PMemSave writes size bytes of guest physical memory at addr to file (a path on QEMU's host).
func (c *Client) PMemSave(ctx context.Context, addr, size uint64, file string) error {
	return c.Execute(ctx, "pmemsave", map[string]any{"val": addr, "size": size, "filename": file}, nil)
}

// RAMBlock is one migratable RAM block as x-query-ramblock lists it.
type RAMBlock struct {
	// Name is QEMU's internal block name (idstr), the name return-path requests carry.
	Name string
	// PageSize is the block's host page size in bytes.
	PageSize uint64
	// Offset is the block's offset in QEMU's ram_addr_t space.
	Offset uint64
	// Used is the used length in bytes: requests must lie inside [0, Used).
	Used uint64
	// Total is the maximum length in bytes.
	Total uint64
}

// RAMBlocks lists the RAM blocks with x-query-ramblock (QEMU 6.2+), whose reply is
// {"human-readable-text": "..."} with the same table as HMP `info ramblock`.
func (c *Client) RAMBlocks(ctx context.Context) ([]RAMBlock, error) {
	var r struct {
		Text *string `json:"human-readable-text"`
	}
	if err := c.Execute(ctx, "x-query-ramblock", nil, &r); err != nil {
		return nil, err
	}
	if r.Text == nil {
		return nil, fmt.Errorf("x-query-ramblock: %w: no human-readable-text", ErrProtocol)
	}
	blocks, err := ParseRAMBlocks(*r.Text)
	if err != nil {
		return nil, fmt.Errorf("x-query-ramblock: %w", err)
	}
	return blocks, nil
}

// ParseRAMBlocks parses the table of x-query-ramblock / HMP `info ramblock`:
//
//	Block Name    PSize              Offset               Used              Total
//	    pc.ram    4 KiB  0x0000000000000000 0x0000000008000000 0x0000000008000000
//
// (columns after Total, should a later QEMU add any, are ignored). A block name cannot
// contain spaces (QEMU builds them from device paths), so the columns split on white space; the
// page size is a number and a unit (B, KiB, MiB, GiB). Any other line shape is an error.
func ParseRAMBlocks(text string) ([]RAMBlock, error) {
	var blocks []RAMBlock
	sc := bufio.NewScanner(strings.NewReader(text))
	header := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !header {
			if len(f) < 6 || f[0] != "Block" || f[1] != "Name" || f[2] != "PSize" || f[3] != "Offset" || f[4] != "Used" || f[5] != "Total" {
				return nil, fmt.Errorf("%w: ramblock table header %q", ErrProtocol, sc.Text())
			}
			header = true
			continue
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("%w: ramblock line %q", ErrProtocol, sc.Text())
		}
		ps, err := parseSize(f[1], f[2])
		if err != nil {
			return nil, fmt.Errorf("%w: ramblock line %q: %v", ErrProtocol, sc.Text(), err)
		}
		b := RAMBlock{Name: f[0], PageSize: ps}
		for i, p := range []*uint64{&b.Offset, &b.Used, &b.Total} {
			s := f[3+i]
			if !strings.HasPrefix(s, "0x") {
				return nil, fmt.Errorf("%w: ramblock line %q: %q is not hex", ErrProtocol, sc.Text(), s)
			}
			if *p, err = strconv.ParseUint(s[2:], 16, 64); err != nil {
				return nil, fmt.Errorf("%w: ramblock line %q: %v", ErrProtocol, sc.Text(), err)
			}
		}
		if b.Used > b.Total || len(b.Name) > 255 {
			return nil, fmt.Errorf("%w: ramblock line %q: used > total or name too long", ErrProtocol, sc.Text())
		}
		blocks = append(blocks, b)
	}
	if !header {
		return nil, fmt.Errorf("%w: empty ramblock table", ErrProtocol)
	}
	return blocks, nil
}

func parseSize(num, unit string) (uint64, error) {
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"B": 0, "KiB": 10, "MiB": 20, "GiB": 30}
	s, ok := shift[unit]
	if !ok || n == 0 {
		return 0, fmt.Errorf("page size %s %s", num, unit)
	}
	return n << s, nil
}
