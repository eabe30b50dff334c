package switchctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewarp/pagewarp/hybrid"
	"github.com/pagewarp/pagewarp/qemu/qmp"
)

// simQEMU is a source QEMU reduced to what the controller sees: every query-migrate is one tick
// of 100 ms of a migration thread that sends bw pages per tick, while the guest dirties rate
// pages per tick (of its region pages), syncing when what remains is below bw x
// downtime-limit, as QEMU 7.2 does (see the package documentation).
type simQEMU struct {
	mu                       sync.Mutex
	total, region, bw, rate  uint64
	failAt                   int // tick at which the migration fails (0: never)
	status                   string
	caps                     map[string]bool
	limitMS                  uint64
	tick                     int
	syncs, remaining, dirty  uint64
	sent, postcopyPages      uint64
	startPostcopy, migrateTo string
	commands                 []string
}

func (s *simQEMU) threshold() uint64 { return s.bw * s.limitMS / 100 }

// step advances the migration by one tick.
func (s *simQEMU) step() {
	s.tick++
	if s.failAt > 0 && s.tick >= s.failAt && s.status != "completed" {
		s.status = "failed"
		return
	}
	switch s.status {
	case "setup":
		s.status, s.syncs, s.remaining = "active", 1, s.total
	case "active":
		if s.startPostcopy != "" && s.remaining >= s.threshold() {
			s.status = "postcopy-active"
			return
		}
		n := min(s.bw, s.remaining)
		s.remaining -= n
		s.sent += n
		s.dirty = min(s.dirty+s.rate, s.region)
		if s.remaining < s.threshold() {
			s.syncs++
			s.remaining += s.dirty
			s.dirty = 0
			if s.remaining < s.threshold() {
				s.sent += s.remaining
				s.remaining = 0
				s.status = "completed"
			}
		}
	case "postcopy-active":
		n := min(s.bw, s.remaining)
		s.remaining -= n
		s.postcopyPages += n
		if s.remaining == 0 {
			s.status = "completed"
		}
	}
}

func (s *simQEMU) info() map[string]any {
	mi := map[string]any{"status": s.status}
	if s.status != "none" && s.status != "setup" {
		mi["ram"] = map[string]any{
			"transferred": s.sent * 4096, "remaining": s.remaining * 4096, "total": s.total * 4096,
			"normal": s.sent, "duplicate": 0, "dirty-sync-count": s.syncs, "page-size": 4096,
			"mbps": float64(s.bw*4096*8) / 0.1 / 1e6, "postcopy-bytes": s.postcopyPages * 4096,
		}
		mi["total-time"] = s.tick * 100
		mi["setup-time"] = 1
	}
	return mi
}

// handle answers one command.
func (s *simQEMU) handle(cmd string, args json.RawMessage) (any, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands = append(s.commands, cmd)
	switch cmd {
	case "qmp_capabilities":
		return map[string]any{}, ""
	case "query-migrate":
		r := s.info()
		s.step()
		return r, ""
	case "migrate-set-capabilities":
		var a struct {
			Capabilities []struct {
				Capability string
				State      bool
			}
		}
		json.Unmarshal(args, &a)
		if running(s.status) {
			return nil, "There's a migration process in progress"
		}
		for _, c := range a.Capabilities {
			s.caps[c.Capability] = c.State
		}
		return map[string]any{}, ""
	case "query-migrate-capabilities":
		var l []map[string]any
		for k, v := range s.caps {
			l = append(l, map[string]any{"capability": k, "state": v})
		}
		return l, ""
	case "migrate-set-parameters":
		var a map[string]any
		json.Unmarshal(args, &a)
		if v, ok := a["downtime-limit"].(float64); ok {
			if v > 2000000 {
				return nil, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds"
			}
			s.limitMS = uint64(v)
		}
		return map[string]any{}, ""
	case "query-migrate-parameters":
		return map[string]any{"downtime-limit": s.limitMS}, ""
	case "migrate":
		var a struct{ URI string }
		json.Unmarshal(args, &a)
		s.migrateTo, s.status = a.URI, "setup"
		return map[string]any{}, ""
	case "migrate-start-postcopy":
		if !s.caps["postcopy-ram"] {
			return nil, "Enable postcopy with migrate-set-capabilities before the start of migration"
		}
		s.startPostcopy = "requested"
		return map[string]any{}, ""
	}
	return nil, "The command " + cmd + " has not been found"
}

// serve runs the QMP protocol for s on conn.
func (s *simQEMU) serve(conn net.Conn) {
	defer conn.Close()
	fmt.Fprint(conn, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`+"\r\n")
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        any             `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		ret, errDesc := s.handle(req.Execute, req.Arguments)
		var out []byte
		if errDesc != "" {
			out, _ = json.Marshal(map[string]any{"error": map[string]any{"class": "GenericError", "desc": errDesc}, "id": req.ID})
		} else {
			out, _ = json.Marshal(map[string]any{"return": ret, "id": req.ID})
		}
		if _, err := conn.Write(append(out, '\r', '\n')); err != nil {
			return
		}
	}
}

func newSim(t *testing.T, s *simQEMU) (*simQEMU, *qmp.Client) {
	t.Helper()
	if s.status == "" {
		s.status = "none"
	}
	s.caps = map[string]bool{"postcopy-ram": false}
	if s.limitMS == 0 {
		s.limitMS = 300
	}
	a, b := net.Pipe()
	go s.serve(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := qmp.NewClient(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

func runSim(t *testing.T, sim *simQEMU, policy string, maxRounds int) (*simQEMU, Result, error) {
	t.Helper()
	sim, c := newSim(t, sim)
	pol, err := hybrid.New(policy)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{Source: c, Policy: pol, MaxRounds: maxRounds, Migrate: "tcp:127.0.0.1:1", Poll: time.Millisecond})
	return sim, res, err
}

// A non-converging guest (it dirties as fast as the link sends): postcopy switches before any
// round, traditional after round 0; both end in post-copy.
func TestSwitchPolicies(t *testing.T) {
	for _, c := range []struct {
		policy string
		round  int // the round the switch was decided after
	}{{"postcopy", -1}, {"traditional", 0}} {
		t.Run(c.policy, func(t *testing.T) {
			sim, res, err := runSim(t, &simQEMU{total: 1000, region: 400, bw: 50, rate: 50}, c.policy, 0)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != OutcomePostcopy || !res.SwitchRequestedOK {
				t.Fatalf("outcome %q (%s), switch requested %v", res.Outcome, res.Note, res.SwitchRequestedOK)
			}
			last := res.Decisions[len(res.Decisions)-1]
			if last.Action != hybrid.Switch || last.Round != c.round || last.Acted != "migrate-start-postcopy" || last.Reason == "" {
				t.Fatalf("last decision %+v, want a switch after round %d", last, c.round)
			}
			if !sim.caps["postcopy-ram"] || sim.migrateTo != "tcp:127.0.0.1:1" {
				t.Fatalf("caps %v, migrated to %q", sim.caps, sim.migrateTo)
			}
			if want := []string{"setup", "active", "postcopy-active", "completed"}; strings.Join(res.Statuses, ",") != strings.Join(want, ",") {
				t.Fatalf("statuses %v, want %v", res.Statuses, want)
			}
			if c.policy == "traditional" {
				r := res.Rounds[0]
				// Round 0: every page dirty; it sends until what remains is below the
				// threshold (150 pages), then the sync adds the 50 pages/tick dirtied.
				if r.Index != 0 || r.Dirty != 1000 || r.Sent < 850 || r.Bytes != r.Sent*4096 || r.Remaining < 400 || r.Duration <= 0 {
					t.Fatalf("round 0 %+v", r)
				}
			}
		})
	}
}

// precopy gives up after --max-rounds on a guest that does not converge: stop-and-copy through
// a raised downtime-limit, restored afterwards.
func TestSwitchStopAndCopy(t *testing.T) {
	sim, res, err := runSim(t, &simQEMU{total: 1000, region: 400, bw: 50, rate: 50}, "precopy", 2)
	if err != nil {
		t.Fatal(err)
	}
	last := res.Decisions[len(res.Decisions)-1]
	if last.Action != hybrid.StopAndCopy || last.Converged || len(res.Rounds) != 2 || last.Acted != "downtime-limit 2000000 ms" {
		t.Fatalf("decisions %+v after %d rounds", res.Decisions, len(res.Rounds))
	}
	if res.Outcome != OutcomePrecopy || !strings.Contains(res.Note, "stop-and-copy") || res.SwitchRequestedOK {
		t.Fatalf("outcome %q: %s", res.Outcome, res.Note)
	}
	if sim.limitMS != 300 || res.Budget != 300*time.Millisecond {
		t.Fatalf("downtime-limit %d ms after the migration, budget %v; want 300 restored", sim.limitMS, res.Budget)
	}
}

// A guest that writes little converges in QEMU before adaptive needs to act.
func TestSwitchQEMUConverges(t *testing.T) {
	_, res, err := runSim(t, &simQEMU{total: 1000, region: 400, bw: 100, rate: 1}, "traditional", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Round 0 ends at the sync that finds less than the threshold remaining: QEMU completes
	// there, before the controller can ask the policy.
	if res.Outcome != OutcomePrecopy || res.SwitchRequestedOK || !strings.Contains(res.Note, "on its own") {
		t.Fatalf("outcome %q (%s), decisions %+v", res.Outcome, res.Note, res.Decisions)
	}
}

func TestSwitchFailure(t *testing.T) {
	_, res, err := runSim(t, &simQEMU{total: 1000, region: 400, bw: 50, rate: 50, failAt: 5}, "traditional", 0)
	if !errors.Is(err, ErrMigration) || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("error %v, want a failed migration", err)
	}
	if len(res.Statuses) == 0 || res.Statuses[len(res.Statuses)-1] != "failed" {
		t.Fatalf("statuses %v", res.Statuses)
	}
}

// A migration already running without postcopy-ram cannot be switched: a clear error.
func TestSwitchAttachWithoutPostcopy(t *testing.T) {
	sim, c := newSim(t, &simQEMU{total: 1000, region: 400, bw: 50, rate: 50, status: "active", syncs: 2})
	_ = sim
	pol, _ := hybrid.New("adaptive")
	_, err := Run(context.Background(), Config{Source: c, Policy: pol, Poll: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "without postcopy-ram") {
		t.Fatalf("error %v", err)
	}
}

func TestOutcomeNotes(t *testing.T) {
	if o, n := outcome(false, true, false); o != OutcomePrecopy || !strings.Contains(n, "below bandwidth x downtime-limit") {
		t.Fatalf("%s: %s", o, n)
	}
	if o, _ := outcome(true, true, false); o != OutcomePostcopy {
		t.Fatal(o)
	}
}
