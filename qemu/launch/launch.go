// Package launch starts and drives real QEMU processes for benchmarks and tests: a source and a
// destination qemu-system-x86_64 under TCG, booting a guest.Build boot sector, with their QMP
// sockets and serial logs in a directory of the caller's; a post-copy migration between them; a
// verified dump of the guest's memory. It does not import package testing: `pagewarp bench
// qemu` links it; package qemutest wraps it for tests (skips, t.Cleanup).
//
// Every VM is killed by Kill; the caller owns that. Nothing here needs root; QEMU must be
// installed (make deps-qemu).
package launch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pagewarp/pagewarp/internal/syncbuf"
	"github.com/pagewarp/pagewarp/qemu/guest"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// BinaryEnv names the environment variable that overrides the QEMU binary.
const BinaryEnv = "PAGEWARP_QEMU"

// Binary returns the path of qemu-system-x86_64 ($PAGEWARP_QEMU if set).
func Binary() (string, error) {
	if b := os.Getenv(BinaryEnv); b != "" {
		return b, nil
	}
	return exec.LookPath("qemu-system-x86_64")
}

// PostcopyUsable says why QEMU cannot use post-copy as this user, or returns nil. QEMU 7.2
// asks the kernel for a userfaultfd without UFFD_USER_MODE_ONLY, which a user without
// CAP_SYS_PTRACE gets only with the sysctl vm.unprivileged_userfaultfd = 1; otherwise
// migrate-set-capabilities postcopy-ram fails with "Postcopy is not supported".
func PostcopyUsable() error {
	if os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return nil // unknown, or allowed: let QEMU say
	}
	return fmt.Errorf("QEMU's post-copy needs userfaultfd, which the kernel refuses to uid %d while vm.unprivileged_userfaultfd = 0 (QEMU reports \"Postcopy is not supported\"): run as root or sysctl -w vm.unprivileged_userfaultfd=1", os.Geteuid())
}

// Options describe one VM.
type Options struct {
	// Name names the VM's files in Dir ("src", "dst").
	Name string
	// Dir holds the disk image, the QMP socket, the serial log and memory dumps. Its path must
	// be short enough for a unix socket (t.TempDir() is).
	Dir string
	// Boot is the boot sector (guest.Build).
	Boot []byte
	// MemMiB is the guest RAM in MiB (default 160).
	MemMiB int
	// CPUs is the number of vCPUs (-smp; default 1).
	CPUs int
	// Incoming is the -incoming argument ("defer", "tcp:127.0.0.1:PORT"); empty for none.
	Incoming string
	// Accel is the accelerator (default "tcg": the boot sector stalls under this machine's KVM).
	Accel string
	// Args are extra command-line arguments.
	Args []string
	// Wrap, if set, may rewrite the command before it starts (to run QEMU in a network
	// namespace, for instance); it gets the VM's Name.
	Wrap func(name string, cmd *exec.Cmd) *exec.Cmd
}

// VM is a running QEMU.
type VM struct {
	Name       string
	QMP        *qmp.Client
	QMPPath    string
	SerialPath string
	Dir        string

	cmd    *exec.Cmd
	exited chan struct{}
	stderr *syncbuf.Buffer
	once   sync.Once
}

// Start starts a VM and connects to its QMP socket; ctx bounds the start.
func Start(ctx context.Context, o Options) (*VM, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if o.MemMiB == 0 {
		o.MemMiB = 160
	}
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	img := filepath.Join(o.Dir, o.Name+".img")
	if err := os.WriteFile(img, o.Boot, 0o644); err != nil {
		return nil, err
	}
	v := &VM{
		Name:       o.Name,
		Dir:        o.Dir,
		QMPPath:    filepath.Join(o.Dir, o.Name+".qmp"),
		SerialPath: filepath.Join(o.Dir, o.Name+".serial"),
		exited:     make(chan struct{}),
		stderr:     &syncbuf.Buffer{Max: 1 << 20},
	}
	args := []string{
		"-name", o.Name,
		"-accel", o.Accel,
		"-m", fmt.Sprintf("%dM", o.MemMiB),
		"-smp", fmt.Sprint(max(o.CPUs, 1)),
		"-display", "none", "-monitor", "none", "-nodefaults", "-vga", "std",
		"-serial", "file:" + v.SerialPath,
		"-qmp", "unix:" + v.QMPPath + ",server=on,wait=off",
		"-drive", "file=" + img + ",format=raw,if=ide",
	}
	if o.Incoming != "" {
		args = append(args, "-incoming", o.Incoming)
	}
	args = append(args, o.Args...)
	v.cmd = exec.Command(bin, args...)
	if o.Wrap != nil {
		v.cmd = o.Wrap(o.Name, v.cmd)
	}
	v.cmd.Stdout = v.stderr
	v.cmd.Stderr = v.stderr
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Name, err)
	}
	go func() { v.cmd.Wait(); close(v.exited) }()
	for {
		c, err := qmp.Dial(ctx, v.QMPPath)
		if err == nil {
			v.QMP = c
			return v, nil
		}
		select {
		case <-v.exited:
			return nil, fmt.Errorf("%s exited at start: %s", o.Name, v.Stderr())
		case <-ctx.Done():
			v.Kill()
			return nil, fmt.Errorf("%s: QMP not up: %w (last: %v)", o.Name, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill kills the QEMU process and closes its QMP connection; it is safe to call twice.
func (v *VM) Kill() {
	v.once.Do(func() {
		if v.QMP != nil {
			v.QMP.Close()
		}
		v.cmd.Process.Kill()
		<-v.exited
	})
}

// Exited is closed when the QEMU process has ended.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Stderr returns what QEMU printed (the first MiB).
func (v *VM) Stderr() string { return v.stderr.String() }

// Serial returns the guest's serial output so far.
func (v *VM) Serial() string {
	b, _ := os.ReadFile(v.SerialPath)
	return string(b)
}

// WaitSerial waits until the serial output contains s.
func (v *VM) WaitSerial(ctx context.Context, s string) error {
	for !strings.Contains(v.Serial(), s) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: serial %q never showed %q: %w", v.Name, v.Serial(), s, ctx.Err())
		case <-v.exited:
			return fmt.Errorf("%s exited: %s", v.Name, v.Stderr())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Dump reads size bytes of guest physical memory at addr (pmemsave into Dir).
func (v *VM) Dump(ctx context.Context, addr, size uint64) ([]byte, error) {
	f := filepath.Join(v.Dir, fmt.Sprintf("%s-%x-%x.mem", v.Name, addr, size))
	defer os.Remove(f)
	if err := v.QMP.PMemSave(ctx, addr, size, f); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != size {
		return nil, fmt.Errorf("%s: pmemsave wrote %d bytes, want %d", v.Name, len(b), size)
	}
	return b, nil
}

// Passes returns the guest's completed passes (its header read with pmemsave; the guest may run).
func (v *VM) Passes(ctx context.Context, p guest.Pattern) (uint32, error) {
	h, err := v.Dump(ctx, guest.HeaderAddr, guest.HeaderSize)
	if err != nil {
		return 0, err
	}
	return guest.Passes(p, h)
}

// Touches returns vCPU 0's page-visit counter (guest.TouchesAddr; it wraps at 2^32).
func (v *VM) Touches(ctx context.Context) (uint32, error) { return v.TouchesOf(ctx, 0) }

// TouchesOf returns vCPU cpu's page-visit counter (guest.TouchesAddrOf).
func (v *VM) TouchesOf(ctx context.Context, cpu int) (uint32, error) {
	b, err := v.Dump(ctx, guest.TouchesAddrOf(cpu), 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// Verify stops the guest, dumps each CPU's header, part of the region and visit counter, and
// checks them with guest.Check and guest.CheckTouches. It returns the passes CPU 0 completed.
func (v *VM) Verify(ctx context.Context, p guest.Pattern, c guest.Config) (uint32, error) {
	if err := v.QMP.Stop(ctx); err != nil {
		return 0, err
	}
	cpus := max(int(c.CPUs), 1)
	var passes0 uint32
	for cpu := range cpus {
		part := c.Part(cpu)
		h, err := v.Dump(ctx, guest.HeaderAddrOf(cpu), guest.HeaderSize)
		if err != nil {
			return 0, err
		}
		r, err := v.Dump(ctx, part.PartStart(), part.RegionBytes())
		if err != nil {
			return 0, err
		}
		touches, err := v.TouchesOf(ctx, cpu)
		if err != nil {
			return 0, err
		}
		passes, err := guest.Check(p, part, h, r)
		if err == nil {
			err = guest.CheckTouches(p, part, h, r, touches)
		}
		if err != nil {
			if cpus > 1 {
				err = fmt.Errorf("CPU %d: %w", cpu, err)
			}
			return passes, err
		}
		if cpu == 0 {
			passes0 = passes
		}
	}
	return passes0, nil
}

// StartPair starts a source running pattern p over the region of c and a destination waiting
// for an incoming migration (-incoming defer), both booting the same image with the options of
// o (Dir, MemMiB, Accel, Args; Name, Boot and Incoming are StartPair's), and waits until the
// source's guest has completed a pass (so progress on the destination shows, and the region
// holds data: the first pass runs flat out). On error both are killed; on success the caller
// kills them.
func StartPair(ctx context.Context, o Options, p guest.Pattern, c guest.Config) (src, dst *VM, err error) {
	boot, err := guest.Build(p, c)
	if err != nil {
		return nil, nil, err
	}
	if o.CPUs == 0 {
		o.CPUs = int(c.CPUs)
	}
	so, do := o, o
	so.Name, so.Boot, so.Incoming = "src", boot, ""
	do.Name, do.Boot, do.Incoming = "dst", boot, "defer"
	src, err = Start(ctx, so)
	if err != nil {
		return nil, nil, err
	}
	dst, err = Start(ctx, do)
	if err != nil {
		src.Kill()
		return nil, nil, err
	}
	if err := waitFirstPass(ctx, src, p); err != nil {
		src.Kill()
		dst.Kill()
		return nil, nil, err
	}
	return src, dst, nil
}

func waitFirstPass(ctx context.Context, src *VM, p guest.Pattern) error {
	if err := src.WaitSerial(ctx, "A"); err != nil {
		return err
	}
	for {
		n, err := src.Passes(ctx, p)
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("%s: waiting for the guest's first pass: %w", src.Name, err)
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ErrNotPostcopy is returned by Migrate when the migration completed without entering post-copy.
var ErrNotPostcopy = errors.New("migration completed in pre-copy: post-copy never started")
