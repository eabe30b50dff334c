package bench

// Links between the source and the target of a migration benchmark.
//
// A link is one of three kinds:
//
//   - loopback: both processes in the current network namespace, talking
//     over 127.0.0.1, unshaped.
//   - veth: two network namespaces joined by a veth pair, each end shaped by
//     tc: tbf for the rate, netem (as tbf's child, the layout Mininet uses)
//     for the one-way delay. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN),
//     iproute2, and for a delay a kernel with sch_netem.
//   - shaped: loopback, with an in-process shaper on the connections the
//     source accepts (WrapListener) or the target dials (WrapConn): the
//     fallback when a veth link cannot be made.
//
// The in-process shaper (shapedConn) models each direction of a connection
// as a delay line: bytes entering it are timestamped with the time the link
// would finish serialising them (a token bucket of depth zero on bytes,
// kept as a virtual clock: departure = max(now, previous departure) +
// size/rate) plus the one-way delay, and leave it no earlier than that.
// Data is copied once, into the line's ring buffer; a bounded ring is the
// back-pressure (a writer blocks while the ring is full, as on a full socket
// buffer). Timing goes through a timerfd read by the runtime poller: the
// runtime's own timers are no finer than a millisecond on an idle machine
// (netpoll rounds an epoll_wait timeout up to 1 ms), which would add up to a
// millisecond to every delay.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
)

// Link kinds.
const (
	LinkLoopback = "loopback"
	LinkVeth     = "veth"
	LinkShaped   = "shaped"
)

// LinkSpec describes a link between the source and the target: Kind
// "loopback", "veth" or "shaped" (in-process), and for veth and shaped a
// rate and a one-way delay (applied in each direction).
type LinkSpec struct {
	Kind  string        `json:"kind"`
	Rate  float64       `json:"rate_bps"` // bits per second; 0 = unlimited
	Delay time.Duration `json:"delay"`    // one-way
}

// rateUnits are tc's rate units (tc(8), RATES), in bits per second: "bit"
// or a bare number is bits per second, "bps" is bytes per second.
var rateUnits = map[string]float64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30, "tibit": 1 << 40,
	"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
	"kibps": 8 << 10, "mibps": 8 << 20, "gibps": 8 << 30, "tibps": 8 << 40,
}

// ParseLink parses "loopback", or KIND[:ITEM[,ITEM]] with KIND veth or
// shaped and each item a rate with a tc unit ("1gbit", "200mbit", "10gbit";
// "bps" units are bytes per second, as in tc) or a one-way delay ("1ms",
// "500us"; Go durations, or tc's "usec", "msec", "sec"): "veth:1gbit,1ms",
// "veth:10gbit", "shaped:1gbit,500us", "shaped:2ms". A kind alone is an
// unshaped link.
func ParseLink(s string) (LinkSpec, error) {
	kind, params, hasParams := strings.Cut(strings.TrimSpace(s), ":")
	switch kind {
	case LinkLoopback:
		if hasParams {
			return LinkSpec{}, fmt.Errorf("link %q: loopback takes no rate or delay", s)
		}
		return LinkSpec{Kind: kind}, nil
	case LinkVeth, LinkShaped:
	default:
		return LinkSpec{}, fmt.Errorf("link %q: unknown kind %q (want loopback, veth:RATE[,DELAY] or shaped:RATE[,DELAY])", s, kind)
	}
	spec := LinkSpec{Kind: kind}
	if !hasParams {
		return spec, nil
	}
	var haveRate, haveDelay bool
	for item := range strings.SplitSeq(params, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return LinkSpec{}, fmt.Errorf("link %q: empty item (want RATE[,DELAY], e.g. veth:1gbit,1ms)", s)
		}
		if r, ok, err := parseRate(item); ok {
			if err != nil {
				return LinkSpec{}, fmt.Errorf("link %q: %w", s, err)
			}
			if haveRate {
				return LinkSpec{}, fmt.Errorf("link %q: two rates", s)
			}
			spec.Rate, haveRate = r, true
			continue
		}
		d, err := parseDelay(item)
		if err != nil {
			return LinkSpec{}, fmt.Errorf("link %q: %q is neither a rate (1gbit, 200mbit, 10kbit) nor a delay (1ms, 500us)", s, item)
		}
		if haveDelay {
			return LinkSpec{}, fmt.Errorf("link %q: two delays", s)
		}
		spec.Delay, haveDelay = d, true
	}
	return spec, nil
}

// parseRate parses a tc rate; ok is false when item has no rate unit (it
// may be a delay).
func parseRate(item string) (bps float64, ok bool, err error) {
	i := len(item)
	for i > 0 && unicode.IsLetter(rune(item[i-1])) {
		i--
	}
	num, unit := item[:i], strings.ToLower(item[i:])
	mult, known := rateUnits[unit]
	if unit == "" {
		mult, known = 1, true
	}
	if !known {
		return 0, false, nil
	}
	v, perr := strconv.ParseFloat(num, 64)
	if perr != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, true, fmt.Errorf("bad rate %q (want a number >= 0 and a unit: bit, kbit, mbit, gbit, ...)", item)
	}
	if r := v * mult; !math.IsInf(r, 0) {
		return r, true, nil
	}
	return 0, true, fmt.Errorf("rate %q out of range", item)
}

// parseDelay parses a Go duration, or one with tc's usec, msec, sec units.
func parseDelay(item string) (time.Duration, error) {
	for _, r := range [...]struct{ tc, gosuf string }{{"usec", "us"}, {"msec", "ms"}, {"secs", "s"}, {"sec", "s"}} {
		if strings.HasSuffix(item, r.tc) {
			item = strings.TrimSuffix(item, r.tc) + r.gosuf
			break
		}
	}
	d, err := time.ParseDuration(item)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("negative delay %q", item)
	}
	return d, nil
}

// String returns the spec in ParseLink's syntax.
func (l LinkSpec) String() string {
	var items []string
	if l.Rate > 0 {
		items = append(items, formatRate(l.Rate))
	}
	if l.Delay > 0 {
		items = append(items, formatDelay(l.Delay))
	}
	if len(items) == 0 || l.Kind == LinkLoopback {
		return l.Kind
	}
	return l.Kind + ":" + strings.Join(items, ",")
}

// formatRate writes bits per second with the largest decimal tc unit that
// keeps the number whole: 1gbit, 2500mbit, 12345bit.
func formatRate(bps float64) string {
	for _, u := range [...]struct {
		name string
		v    float64
	}{{"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if q := bps / u.v; q >= 1 && q == math.Trunc(q) && q*u.v == bps {
			return strconv.FormatFloat(q, 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatFloat(bps, 'f', -1, 64) + "bit"
}

// formatDelay writes a duration in whole ms, us or ns (ASCII, which both
// time.ParseDuration and tc read).
func formatDelay(d time.Duration) string {
	switch {
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	case d%time.Microsecond == 0:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "us"
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

// Link is a set-up link. The source listens on SourceListenAddr (through
// WrapListener), prints the address it got, and the target dials that.
type Link struct {
	spec  LinkSpec
	note  string
	veth  *vethLink // Kind veth
	shape *shape    // Kind shaped; nil when it would shape nothing

	closeOnce sync.Once
	closeErr  error
}

// linkTools names the commands SetupLink runs; tests replace them to make
// the setup fail.
type linkTools struct {
	ip, tc string
	// capCheck reports whether the process may make namespaces (nil: read
	// /proc/self/status).
	capCheck func() error
}

var defaultLinkTools = linkTools{ip: "ip", tc: "tc"}

// errNoQdisc marks a tc failure because the kernel lacks a queueing
// discipline (tc: "Specified qdisc kind is unknown").
var errNoQdisc = errors.New("qdisc not available in this kernel")

// SetupLink creates the link spec describes. For veth it creates two network
// namespaces, pagewarp-src-PID and pagewarp-dst-PID (with a -N suffix for
// further links of one process), joined by a veth pair addressed
// 10.250.x.y/30 (.1 the source end, .2 the target end; the namespaces hold
// nothing else, so the addresses cannot clash with the host's), with lo and
// both ends up and each end shaped with tc (tbf for the rate, netem for the
// delay). If the veth link cannot be made (no ip, no privileges, no netem
// for a delay) and allowFallback, SetupLink returns a shaped link with the
// same rate and delay, whose Note says why; otherwise the error. A
// cancelled ctx is returned as an error, never a fallback.
//
// For loopback and shaped links SetupLink changes nothing on the system: a
// child process can rebuild the link from its parent's Spec() to wrap its
// listener. A veth link is made once, by the parent.
func SetupLink(ctx context.Context, spec LinkSpec, allowFallback bool) (*Link, error) {
	return setupLink(ctx, spec, allowFallback, defaultLinkTools)
}

func setupLink(ctx context.Context, spec LinkSpec, allowFallback bool, tools linkTools) (*Link, error) {
	if spec.Rate < 0 || math.IsNaN(spec.Rate) || math.IsInf(spec.Rate, 0) || spec.Delay < 0 {
		return nil, fmt.Errorf("link %v: bad rate or delay", spec)
	}
	switch spec.Kind {
	case LinkLoopback:
		return &Link{spec: LinkSpec{Kind: LinkLoopback}}, nil
	case LinkShaped:
		return newShapedLink(spec, ""), nil
	case LinkVeth:
	default:
		return nil, fmt.Errorf("link %v: unknown kind %q", spec, spec.Kind)
	}
	v, err := setupVeth(ctx, spec, tools)
	if err == nil {
		return &Link{spec: spec, veth: v}, nil
	}
	if !allowFallback || ctx.Err() != nil {
		return nil, err
	}
	fb := spec
	fb.Kind = LinkShaped
	return newShapedLink(fb, fmt.Sprintf("veth link unavailable: %v", err)), nil
}

func newShapedLink(spec LinkSpec, note string) *Link {
	l := &Link{spec: spec, note: note}
	if spec.Rate > 0 || spec.Delay > 0 {
		l.shape = newShape(spec.Rate, spec.Delay)
	}
	return l
}

// Spec returns what was set up: Kind is "shaped" after a fallback from veth.
func (l *Link) Spec() LinkSpec { return l.spec }

// Note returns why SetupLink fell back to the in-process shaper, or "".
func (l *Link) Note() string { return l.note }

// Describe returns one line for reports saying which link is used.
func (l *Link) Describe() string {
	switch l.spec.Kind {
	case LinkVeth:
		v := l.veth
		return fmt.Sprintf("veth between netns %s (%s) and %s (%s), %s", v.src, v.srcAddr, v.dst, v.dstAddr, v.shaping)
	case LinkShaped:
		s := "in-process shaper on loopback 127.0.0.1"
		if l.spec.Rate > 0 || l.spec.Delay > 0 {
			s += fmt.Sprintf(" (%s), on the connections of the wrapped side, both directions", shapingWords(l.spec))
		} else {
			s += " (no rate or delay: unshaped)"
		}
		if l.note != "" {
			s += "; fallback: " + l.note
		}
		return s
	}
	return "loopback 127.0.0.1, unshaped"
}

// shapingWords says "rate 1gbit, one-way delay 1ms".
func shapingWords(s LinkSpec) string {
	var w []string
	if s.Rate > 0 {
		w = append(w, "rate "+formatRate(s.Rate))
	}
	if s.Delay > 0 {
		w = append(w, "one-way delay "+formatDelay(s.Delay))
	}
	return strings.Join(w, ", ")
}

// SourceCmd makes cmd run in the source namespace of a veth link (as `ip
// netns exec NS PATH ARGS...`, rewriting cmd.Path and cmd.Args in place) and
// returns it; for loopback and shaped links it returns cmd unchanged. Call
// it before cmd.Start.
func (l *Link) SourceCmd(cmd *exec.Cmd) *exec.Cmd {
	if l.veth == nil {
		return cmd
	}
	return l.veth.wrapCmd(l.veth.src, cmd)
}

// TargetCmd is SourceCmd for the target namespace.
func (l *Link) TargetCmd(cmd *exec.Cmd) *exec.Cmd {
	if l.veth == nil {
		return cmd
	}
	return l.veth.wrapCmd(l.veth.dst, cmd)
}

// TargetAddr is the target's address on the link: the target end of the veth pair, or
// 127.0.0.1.
func (l *Link) TargetAddr() netip.Addr {
	if l.veth != nil {
		return l.veth.dstAddr
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// InSource runs f on an OS thread in the source namespace of a veth link (for other kinds, as
// it is): the sockets f creates (a listener, a dialled connection) belong to that namespace for
// their whole life, whichever goroutine uses them afterwards. The thread is never handed back
// to the runtime, which ends it with f's goroutine, so no other goroutine runs in the wrong
// namespace.
func (l *Link) InSource(f func() error) error {
	if l.veth == nil {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread exits with this goroutine
		fd, err := unix.Open("/run/netns/"+l.veth.src, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", l.veth.src, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", l.veth.src, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// SourceListenAddr is where the source process listens: the source end of
// the veth pair, or 127.0.0.1, with port 0.
func (l *Link) SourceListenAddr() string {
	if l.veth != nil {
		return netip.AddrPortFrom(l.veth.srcAddr, 0).String()
	}
	return "127.0.0.1:0"
}

// WrapListener shapes every connection ln accepts, in both directions, for
// a shaped link; otherwise it returns ln. Shape one side of a connection
// only: a listener wrapped on the source, or a conn wrapped on the target
// (WrapConn), never both, which would apply the delay twice.
//
// A shaped connection is not a *net.TCPConn and has no SyscallConn: code
// that reads the descriptor directly (faulthandler's urgent connection,
// pageserver's busy-poll) falls back to plain reads, which go through the
// shaper.
func (l *Link) WrapListener(ln net.Listener) net.Listener {
	if l.shape == nil {
		return ln
	}
	return &shapedListener{Listener: ln, shape: l.shape}
}

// WrapConn shapes c in both directions for a shaped link; otherwise it
// returns c. See WrapListener.
func (l *Link) WrapConn(c net.Conn) net.Conn {
	if l.shape == nil {
		return c
	}
	return newShapedConn(c, l.shape)
}

// Close deletes a veth link's pair and namespaces; it does nothing for
// other kinds. It is idempotent. Stop the processes started in the
// namespaces first: a namespace (and its veth end) lives on while a process
// is in it, though `ip netns list` no longer shows it.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		if l.veth != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l.closeErr = l.veth.teardown(ctx)
		}
	})
	return l.closeErr
}

// vethLink is a veth pair between two namespaces made by setupVeth.
type vethLink struct {
	ip               string // path of ip
	src, dst         string // namespace names
	srcIf, dstIf     string
	srcAddr, dstAddr netip.Addr
	shaping          string // for Describe
	madeNS           []string
}

var linkSeq atomic.Uint32

// setupVeth makes the namespaces, the pair and the qdiscs; on failure it
// removes what it made.
func setupVeth(ctx context.Context, spec LinkSpec, tools linkTools) (v *vethLink, err error) {
	check := tools.capCheck
	if check == nil {
		check = checkNetnsCaps
	}
	if err := check(); err != nil {
		return nil, err
	}
	ip, err := exec.LookPath(tools.ip)
	if err != nil {
		return nil, fmt.Errorf("iproute2: %w", err)
	}
	var tc string
	if spec.Rate > 0 || spec.Delay > 0 {
		if tc, err = exec.LookPath(tools.tc); err != nil {
			return nil, fmt.Errorf("iproute2 tc: %w", err)
		}
	}
	v = &vethLink{ip: ip, srcIf: "pw-src", dstIf: "pw-dst"}
	defer func() {
		if err != nil {
			// Tear down with a context of its own: ctx may be why we stop.
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if terr := v.teardown(tctx); terr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, terr)
			}
		}
	}()
	pid := os.Getpid()
	for try := 0; ; try++ {
		seq := linkSeq.Add(1)
		v.src, v.dst = fmt.Sprintf("pagewarp-src-%d", pid), fmt.Sprintf("pagewarp-dst-%d", pid)
		if seq > 1 {
			v.src, v.dst = fmt.Sprintf("%s-%d", v.src, seq), fmt.Sprintf("%s-%d", v.dst, seq)
		}
		// A /30 from 10.250.0.0/16 per (pid, seq), so that two links
		// show different addresses in reports.
		idx := (uint32(pid)*16 + seq) % (1 << 14)
		base := netip.AddrFrom4([4]byte{10, 250, byte(idx >> 6), byte(idx&63) * 4})
		v.srcAddr, v.dstAddr = base.Next(), base.Next().Next()
		err = runTool(ctx, ip, "netns", "add", v.src)
		if err != nil && strings.Contains(err.Error(), "File exists") && try < 8 {
			continue // left by a dead process with our pid
		}
		if err != nil {
			return v, err
		}
		v.madeNS = append(v.madeNS, v.src)
		if err = runTool(ctx, ip, "netns", "add", v.dst); err != nil {
			return v, err
		}
		v.madeNS = append(v.madeNS, v.dst)
		break
	}
	steps := [][]string{
		{"link", "add", v.srcIf, "netns", v.src, "type", "veth", "peer", "name", v.dstIf, "netns", v.dst},
		{"-n", v.src, "addr", "add", v.srcAddr.String() + "/30", "dev", v.srcIf},
		{"-n", v.dst, "addr", "add", v.dstAddr.String() + "/30", "dev", v.dstIf},
		{"-n", v.src, "link", "set", "lo", "up"},
		{"-n", v.dst, "link", "set", "lo", "up"},
		{"-n", v.src, "link", "set", v.srcIf, "up"},
		{"-n", v.dst, "link", "set", v.dstIf, "up"},
	}
	for _, s := range steps {
		if err = runTool(ctx, ip, s...); err != nil {
			return v, err
		}
	}
	qdiscs, words := vethQdiscs(spec)
	for _, end := range [...][2]string{{v.src, v.srcIf}, {v.dst, v.dstIf}} {
		for _, q := range qdiscs {
			args := append([]string{"-n", end[0], "qdisc", "add", "dev", end[1]}, q.args...)
			if err = runTool(ctx, tc, args...); err != nil {
				if errors.Is(err, errNoQdisc) {
					err = fmt.Errorf("this kernel has no %s qdisc (sch_%s), needed for the %s: %w", q.kind, q.kind, q.purpose, err)
				}
				return v, err
			}
		}
	}
	v.shaping = words
	return v, nil
}

// qdisc is a tc qdisc to add to each end of a veth pair.
type qdisc struct {
	kind, purpose string
	args          []string // after "qdisc add dev IF"
}

// vethQdiscs returns the qdiscs that shape each end, and their description.
//
// The rate is a tbf at the root. Its burst is 128 KiB or 1 ms of traffic,
// whichever is larger: veth hands tbf GSO packets of up to 64 KiB, and a
// packet larger than the burst is split in software. Its queue holds 5 ms
// of traffic (at least 4 bursts). tbf counts whole frames: TCP payload gets
// 1448/1514 = 0.956 of the rate. The delay is a netem, as tbf's child when
// there is a rate (the layout Mininet uses), so packets wait out the delay
// and then the rate; its limit (packets) covers the delay's worth of
// 1500-byte packets twice over.
func vethQdiscs(spec LinkSpec) ([]qdisc, string) {
	var qs []qdisc
	var words []string
	parent := []string{"root"}
	if spec.Rate > 0 {
		bytesPerSec := spec.Rate / 8
		burst := max(128<<10, int64(bytesPerSec/1000))
		limit := max(4*burst, int64(bytesPerSec*0.005))
		qs = append(qs, qdisc{"tbf", "rate", []string{"root", "handle", "1:", "tbf",
			"rate", strconv.FormatFloat(math.Round(spec.Rate), 'f', 0, 64) + "bit",
			"burst", strconv.FormatInt(burst, 10), "limit", strconv.FormatInt(limit, 10)}})
		words = append(words, fmt.Sprintf("tc tbf rate %s (burst %d, limit %d bytes)", formatRate(spec.Rate), burst, limit))
		parent = []string{"parent", "1:1"}
	}
	if spec.Delay > 0 {
		limit := int64(1000)
		if spec.Rate > 0 {
			limit = max(limit, int64(2*spec.Rate/8*spec.Delay.Seconds()/1500))
		}
		qs = append(qs, qdisc{"netem", "delay", append(parent, "handle", "10:", "netem",
			"delay", strconv.FormatInt(spec.Delay.Microseconds(), 10)+"us", "limit", strconv.FormatInt(limit, 10))})
		words = append(words, "tc netem delay "+formatDelay(spec.Delay))
	}
	if len(words) == 0 {
		return nil, "unshaped"
	}
	return qs, strings.Join(words, " + ") + " on both ends"
}

// runTool runs ip or tc; its error carries the command and what it printed.
func runTool(ctx context.Context, path string, args ...string) error {
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(string(out))
	name := path[strings.LastIndexByte(path, '/')+1:]
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
	}
	if strings.Contains(msg, "Specified qdisc kind is unknown") {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), errNoQdisc, msg)
	}
	return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
}

// checkNetnsCaps fails with EPERM unless the process has CAP_SYS_ADMIN (ip
// netns add mounts) and CAP_NET_ADMIN (links, addresses, qdiscs).
func checkNetnsCaps() error {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hex, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return fmt.Errorf("CapEff %q: %w", hex, err)
		}
		const need = 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_NET_ADMIN
		if caps&need != need {
			return fmt.Errorf("need CAP_SYS_ADMIN and CAP_NET_ADMIN (root) to make network namespaces, have CapEff %#x (uid %d): %w",
				caps, os.Geteuid(), unix.EPERM)
		}
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("no CapEff in /proc/self/status")
}

// wrapCmd rewrites cmd to run through `ip netns exec ns`.
func (v *vethLink) wrapCmd(ns string, cmd *exec.Cmd) *exec.Cmd {
	args := make([]string, 0, 5+len(cmd.Args))
	args = append(args, v.ip, "netns", "exec", ns, cmd.Path)
	if len(cmd.Args) > 1 {
		args = append(args, cmd.Args[1:]...)
	}
	cmd.Path, cmd.Args = v.ip, args
	return cmd
}

// teardown deletes the pair (at once, even if a process still holds a
// namespace) and the namespaces made.
func (v *vethLink) teardown(ctx context.Context) error {
	var errs []error
	if len(v.madeNS) > 0 {
		// Deleting one end deletes the pair; it may not exist yet.
		if err := runTool(ctx, v.ip, "-n", v.madeNS[0], "link", "del", v.srcIf); err != nil &&
			!strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	for _, ns := range v.madeNS {
		if err := runTool(ctx, v.ip, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	v.madeNS = nil
	return errors.Join(errs...)
}

// The in-process shaper.

const (
	// segmentSpan is the span of release times merged into one segment of a
	// delay line (bytes may leave up to this much late, never early), and
	// the serialisation time of the chunks a large write is cut into.
	segmentSpan = 100 * time.Microsecond
	// releaseSlack releases what is due this soon rather than sleeping again.
	releaseSlack = 10 * time.Microsecond
	// lingerTimeout bounds how long a closed connection keeps sending what
	// it had queued to a peer that does not read.
	lingerTimeout = 10 * time.Second
	// unlimitedSizing is the rate assumed to size the ring of a connection
	// with a delay and no rate: more than loopback carries on a small VM.
	unlimitedSizing = 40e9 // bits per second
)

// shape is the parameters of an in-process link.
type shape struct {
	bytesPerNs float64 // 0: unlimited
	delay      int64   // ns
	chunk      int     // bytes: a large write is scheduled in chunks of this size
	ring       int     // bytes of each direction's ring
}

func newShape(rateBps float64, delay time.Duration) *shape {
	s := &shape{bytesPerNs: rateBps / 8 / 1e9, delay: int64(delay)}
	sizing := rateBps
	if sizing == 0 {
		sizing = unlimitedSizing
	}
	// Room for what is on the wire (rate × delay) and 4 ms of queue, as a
	// socket buffer would give.
	ring := sizing/8*(delay+4*time.Millisecond).Seconds() + 256<<10
	s.ring = int(min(max(ring, 256<<10), 64<<20))
	s.chunk = 1 << 30
	if rateBps > 0 {
		s.chunk = max(1500, int(s.bytesPerNs*float64(segmentSpan)))
	}
	return s
}

// shapedListener shapes the connections it accepts.
type shapedListener struct {
	net.Listener
	shape *shape
}

func (l *shapedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newShapedConn(c, l.shape), nil
}

// segment is a run of a delay line's bytes released together.
type segment struct {
	end   int64 // the run is (previous end, end]
	at    int64 // release time, ns on the line's clock
	first int64 // release time of the run's first write (for merging)
}

// segQueue is a FIFO of segments.
type segQueue struct {
	s []segment
	h int
}

func (q *segQueue) len() int        { return len(q.s) - q.h }
func (q *segQueue) front() *segment { return &q.s[q.h] }
func (q *segQueue) back() *segment  { return &q.s[len(q.s)-1] }
func (q *segQueue) push(s segment)  { q.s = append(q.s, s) }

func (q *segQueue) pop() {
	q.h++
	switch {
	case q.h == len(q.s):
		q.s, q.h = q.s[:0], 0
	case q.h >= 1024 && 2*q.h >= len(q.s):
		q.s, q.h = q.s[:copy(q.s, q.s[q.h:])], 0
	}
}

// delayLine is one direction of a shaped connection: a ring of bytes with a
// single producer (the writer, or the goroutine reading the inner conn) and
// a single consumer (the goroutine writing the inner conn, or the reader).
// Bytes are counted from the start: head ≤ rel ≤ tail; [head, rel) is
// released and not yet consumed, [rel, tail) waits in segs. The producer
// fills the free space [tail, head+len(buf)) without the lock and then
// commits it; the consumer reads [head, rel) without the lock and then
// consumes it.
type delayLine struct {
	shape *shape
	epoch time.Time
	buf   []byte

	mu              sync.Mutex
	head, rel, tail int64
	segs            segQueue
	next            float64 // virtual time the link finishes serialising what it was given (ns)
	end             error   // after the data: io.EOF, an inner read error, or errFIN
	endAt           int64   // release time of end
	endRel          bool    // end is released
	shut            bool    // producer side closed: no more commits

	more     chan struct{} // data or end added (to the releasing goroutine)
	readable chan struct{} // rel advanced or end released (to the consumer)
	space    chan struct{} // head advanced (to the producer)
}

func newDelayLine(s *shape, epoch time.Time) *delayLine {
	return &delayLine{
		shape: s, epoch: epoch, buf: make([]byte, s.ring),
		more: make(chan struct{}, 1), readable: make(chan struct{}, 1), space: make(chan struct{}, 1),
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (l *delayLine) now() int64 { return int64(time.Since(l.epoch)) }

// free returns the contiguous free space at the tail. l.mu held.
func (l *delayLine) free() []byte {
	size := int64(len(l.buf))
	used := l.tail - l.head
	if used == size {
		return nil
	}
	start := l.tail % size
	return l.buf[start:min(size, start+size-used)]
}

// ready returns the released bytes, in one or two pieces. l.mu held.
func (l *delayLine) ready() (a, b []byte) {
	size := int64(len(l.buf))
	if l.rel == l.head {
		return nil, nil
	}
	start, end := l.head%size, l.rel%size
	if end > start {
		return l.buf[start:end], nil
	}
	return l.buf[start:], l.buf[:end]
}

// commit appends n bytes written into free() at time now, scheduling them:
// each chunk departs when the link has serialised it and everything before
// it, and is released a delay later. It reports false (and appends
// nothing) after shutProducer. l.mu held.
func (l *delayLine) commit(n int, now int64) bool {
	if l.shut {
		return false
	}
	s := l.shape
	start := max(float64(now), l.next)
	for n > 0 {
		c := min(n, s.chunk)
		n -= c
		l.tail += int64(c)
		if s.bytesPerNs > 0 {
			start += float64(c) / s.bytesPerNs
		}
		at := int64(math.Ceil(start)) + s.delay
		if q := &l.segs; q.len() > 0 && at-q.back().first < int64(segmentSpan) {
			q.back().end, q.back().at = l.tail, at
		} else {
			q.push(segment{end: l.tail, at: at, first: at})
		}
	}
	l.next = start
	notify(l.more)
	return true
}

// finish appends end (once) after the data, released like a byte sent now.
// l.mu held.
func (l *delayLine) finish(end error, now int64) {
	if l.end != nil {
		return
	}
	l.end, l.endAt = end, int64(math.Ceil(max(float64(now), l.next)))+l.shape.delay
	notify(l.more)
}

// releaseDue releases what is due at now and returns how long until the
// next release (-1: nothing waits), and whether anything was released.
// l.mu held.
func (l *delayLine) releaseDue(now int64) (wait time.Duration, changed bool) {
	lim := now + int64(releaseSlack)
	for l.segs.len() > 0 {
		s := l.segs.front()
		if s.at > lim {
			return time.Duration(s.at - now), changed
		}
		l.rel = s.end
		l.segs.pop()
		changed = true
	}
	if l.end != nil && !l.endRel {
		if l.endAt > lim {
			return time.Duration(l.endAt - now), changed
		}
		l.endRel, changed = true, true
	}
	return -1, changed
}

// consume marks n released bytes consumed. l.mu held.
func (l *delayLine) consume(n int) {
	l.head += int64(n)
	notify(l.space)
}

var errFIN = errors.New("shaped conn: write side closed")

// shapedConn is a net.Conn shaped in both directions. Three goroutines
// serve it: sendLoop (out: releases what Write queued and writes it to the
// inner conn), recvLoop (in: reads the inner conn into the line) and
// releaseLoop (in: releases what recvLoop queued to Read).
//
// Close returns at once; Read and Write then fail with net.ErrClosed. As a
// kernel socket does, a closed conn lingers: sendLoop still delivers what
// was queued (within lingerTimeout), then closes the inner conn. CloseWrite
// queues the inner conn's CloseWrite after the data written before it.
type shapedConn struct {
	inner net.Conn
	out   *delayLine
	in    *delayLine

	wmu, rmu  sync.Mutex // one Write, one Read at a time
	rdl, wdl  deadline
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	relSleep  *sleeper // releaseLoop's, interrupted by Close

	// Under out.mu:
	werr    error // the inner conn's write error
	closing bool
	closeAt int64 // when the inner conn is closed after Close
}

func newShapedConn(c net.Conn, s *shape) *shapedConn {
	epoch := time.Now()
	sc := &shapedConn{
		inner: c, out: newDelayLine(s, epoch), in: newDelayLine(s, epoch),
		rdl: makeDeadline(), wdl: makeDeadline(), done: make(chan struct{}),
		relSleep: newSleeper(),
	}
	go sc.sendLoop(newSleeper())
	go sc.recvLoop()
	go sc.releaseLoop()
	return sc
}

func (c *shapedConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.inner.LocalAddr().Network(), Source: c.inner.LocalAddr(), Addr: c.inner.RemoteAddr(), Err: err}
}

func (c *shapedConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Read reads released bytes; after them, the inner conn's read error
// (io.EOF when the peer closed) a delay after it was seen.
func (c *shapedConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	l := c.in
	for {
		if c.isClosed() {
			return 0, c.opError("read", net.ErrClosed)
		}
		if isClosedChan(c.rdl.wait()) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		if len(b) == 0 {
			return 0, nil
		}
		l.mu.Lock()
		p, q := l.ready()
		end, endRel := l.end, l.endRel
		l.mu.Unlock()
		if len(p) > 0 {
			n := copy(b, p)
			n += copy(b[n:], q)
			l.mu.Lock()
			l.consume(n)
			l.mu.Unlock()
			return n, nil
		}
		if endRel {
			return 0, end
		}
		select {
		case <-l.readable:
		case <-c.done:
		case <-c.rdl.wait():
		}
	}
}

// Write queues b (copying it into the ring) and returns once all of it is
// queued; it blocks while the ring is full.
func (c *shapedConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	l := c.out
	written := 0
	for {
		if c.isClosed() {
			return written, c.opError("write", net.ErrClosed)
		}
		if isClosedChan(c.wdl.wait()) {
			return written, c.opError("write", os.ErrDeadlineExceeded)
		}
		l.mu.Lock()
		werr, shut, f := c.werr, l.shut, l.free()
		l.mu.Unlock()
		switch {
		case werr != nil:
			return written, werr
		case shut:
			return written, c.opError("write", syscall.EPIPE)
		case written == len(b):
			return written, nil
		case len(f) == 0:
			select {
			case <-l.space:
			case <-c.done:
			case <-c.wdl.wait():
			}
			continue
		}
		n := copy(f, b[written:])
		l.mu.Lock()
		ok := l.commit(n, l.now())
		l.mu.Unlock()
		if ok {
			written += n
		}
	}
}

// CloseWrite half-closes: the inner conn's CloseWrite is called once the
// data written before it has been delivered. It fails if the inner conn has
// no CloseWrite.
func (c *shapedConn) CloseWrite() error {
	if _, ok := c.inner.(interface{ CloseWrite() error }); !ok {
		return c.opError("close", fmt.Errorf("%T has no CloseWrite", c.inner))
	}
	if c.isClosed() {
		return c.opError("close", net.ErrClosed)
	}
	l := c.out
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.shut {
		l.shut = true
		l.finish(errFIN, l.now())
	}
	return nil
}

// Close closes the conn: see shapedConn.
func (c *shapedConn) Close() error {
	c.closeOnce.Do(func() {
		l := c.out
		l.mu.Lock()
		c.closing = true
		c.closeAt = int64(math.Ceil(max(float64(l.now()), l.next))) + l.shape.delay
		l.mu.Unlock()
		close(c.done)
		notify(l.more)
		c.inner.SetReadDeadline(time.Now()) // stops recvLoop
		c.relSleep.interrupt()
		c.inner.SetWriteDeadline(time.Now().Add(lingerTimeout))
	})
	return nil
}

func (c *shapedConn) LocalAddr() net.Addr  { return c.inner.LocalAddr() }
func (c *shapedConn) RemoteAddr() net.Addr { return c.inner.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the shaped conn (the
// inner conn's deadlines belong to the shaper).
func (c *shapedConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *shapedConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *shapedConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// sendLoop releases the outgoing line and writes it to the inner conn.
// After Close it drains the line, then closes the inner conn and returns.
func (c *shapedConn) sendLoop(sl *sleeper) {
	defer sl.close()
	l := c.out
	var vec [2][]byte
	finSent := false
	for {
		l.mu.Lock()
		now := l.now()
		wait, _ := l.releaseDue(now)
		p, q := l.ready()
		fin := l.endRel && !finSent && l.rel == l.tail
		werr, closing, closeAt := c.werr, c.closing, c.closeAt
		l.mu.Unlock()
		switch {
		case len(p) > 0:
			n := len(p) + len(q)
			if werr == nil {
				bufs := net.Buffers(vec[:0])
				bufs = append(bufs, p)
				if len(q) > 0 {
					bufs = append(bufs, q)
				}
				if _, err := bufs.WriteTo(c.inner); err != nil {
					werr = err
				}
			}
			l.mu.Lock()
			if c.werr == nil {
				c.werr = werr
			}
			l.consume(n)
			l.mu.Unlock()
		case fin:
			finSent = true
			if werr == nil {
				c.inner.(interface{ CloseWrite() error }).CloseWrite()
			}
		case wait >= 0:
			sl.sleep(wait, nil)
		case closing:
			if d := time.Duration(closeAt - now); d > 0 {
				sl.sleep(d, nil)
				continue
			}
			c.inner.Close()
			return
		default:
			select {
			case <-l.more:
			case <-c.done:
			}
		}
	}
}

// recvLoop reads the inner conn into the incoming line until it fails or
// the conn is closed.
func (c *shapedConn) recvLoop() {
	l := c.in
	for {
		l.mu.Lock()
		f := l.free()
		l.mu.Unlock()
		if len(f) == 0 {
			select {
			case <-l.space:
				continue
			case <-c.done:
				return
			}
		}
		n, err := c.inner.Read(f)
		if c.isClosed() {
			return
		}
		l.mu.Lock()
		now := l.now()
		if n > 0 {
			l.commit(n, now)
		}
		if err != nil {
			l.finish(err, now)
		}
		l.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// releaseLoop releases the incoming line to Read, on time, until the end
// (the inner conn's read error) is released or the conn is closed.
func (c *shapedConn) releaseLoop() {
	sl := c.relSleep
	defer sl.close()
	l := c.in
	for !c.isClosed() {
		l.mu.Lock()
		wait, changed := l.releaseDue(l.now())
		endRel := l.endRel
		l.mu.Unlock()
		if changed {
			notify(l.readable)
		}
		switch {
		case endRel:
			return
		case wait >= 0:
			sl.sleep(wait, c.done)
		default:
			select {
			case <-l.more:
			case <-c.done:
			}
		}
	}
}

// sleeper sleeps with the kernel's timer precision: a timerfd read through
// the runtime poller, whose epoll_wait returns when the timerfd fires. The
// file's read deadline, a runtime timer, is set to the same time as a
// backstop: on a busy machine the runtime checks its timers more often than
// the poller. Without a timerfd it uses a runtime timer.
type sleeper struct {
	f      *os.File // nil: no timerfd
	raw    syscall.RawConn
	broken bool // the timerfd failed: runtime timers from now on
	buf    [8]byte
}

func newSleeper() *sleeper {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return &sleeper{}
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return &sleeper{}
	}
	return &sleeper{f: f, raw: raw}
}

// sleep sleeps for d, or until done is closed and interrupt called.
func (s *sleeper) sleep(d time.Duration, done <-chan struct{}) {
	if d <= 0 {
		return
	}
	if s.f != nil && !s.broken {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
		var serr error
		err := s.raw.Control(func(fd uintptr) { serr = unix.TimerfdSettime(int(fd), 0, &spec, nil) })
		if err == nil && serr == nil {
			// Set the deadline before looking at done, so an interrupt
			// (done closed, then the deadline moved to the past) is not
			// overwritten.
			s.f.SetReadDeadline(time.Now().Add(d))
			select {
			case <-done:
				return
			default:
			}
			_, err = s.f.Read(s.buf[:])
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
		s.broken = true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
}

// interrupt ends a sleep whose done is closed.
func (s *sleeper) interrupt() {
	if f := s.f; f != nil {
		f.SetReadDeadline(time.Unix(1, 0))
	}
}

func (s *sleeper) close() {
	if s.f != nil {
		s.f.Close()
	}
}

// deadline is a settable deadline whose expiry closes a channel (as in
// net.Pipe).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set sets the deadline; zero clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for its close
	}
	d.timer = nil
	closed := isClosedChan(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var _ io.ReadWriteCloser = (*shapedConn)(nil)
