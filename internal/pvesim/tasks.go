package pvesim

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"
)

// startTask starts a worker of the given type. finish runs when the task's
// latency has elapsed (with the simulator locked); failed is the injected
// failure message or "". A non-nil error from finish becomes the exit status.
// Callers hold s.mu.
func (s *Sim) startTask(node, typ, id, user string, finish func(failed string) error) string {
	s.pidSeq++
	now := s.now()
	t := &Task{
		Node: node, Type: typ, ID: id, User: user,
		PID: 0x10000 + s.pidSeq, PStart: 0x100000 + rand.IntN(0xfffff), StartTime: now.Unix(),
		Status: "running",
	}
	t.UPID = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.PID, t.PStart, t.StartTime, typ, id, user)
	t.Log = append(t.Log, fmt.Sprintf("starting %s %s", typ, id))
	s.st.Tasks = append(s.st.Tasks, t)
	var failed string
	if q := s.taskFails[typ]; len(q) > 0 {
		failed, s.taskFails[typ] = q[0], q[1:]
	}
	done := func() {
		err := finish(failed)
		if err == nil && failed != "" {
			err = fmt.Errorf("%s", failed)
		}
		t.Status = "stopped"
		if err != nil {
			msg := strings.TrimSpace(err.Error())
			t.ExitStatus = msg
			t.Log = append(t.Log, "TASK ERROR: "+msg)
			return
		}
		t.ExitStatus = "OK"
		t.Log = append(t.Log, "TASK OK")
	}
	d := s.scaled(s.taskLat[typ])
	if d <= 0 {
		done()
		return t.UPID
	}
	s.timers = append(s.timers, time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		done()
	}))
	return t.UPID
}

func (s *Sim) task(upid string) *Task {
	for _, t := range s.st.Tasks {
		if t.UPID == upid {
			return t
		}
	}
	return nil
}

func init() {
	handle("GET /nodes/{node}/tasks/{upid}/status", func(s *Sim, r *req) (any, error) {
		t := s.task(r.str("upid"))
		if t == nil || t.Node != r.str("node") {
			return nil, errf(500, "unable to parse worker upid '%s'", r.str("upid"))
		}
		out := map[string]any{
			"upid": t.UPID, "node": t.Node, "pid": t.PID, "pstart": t.PStart, "starttime": t.StartTime,
			"type": t.Type, "id": t.ID, "user": t.User, "status": t.Status,
		}
		if t.Status == "stopped" {
			out["exitstatus"] = t.ExitStatus
		}
		return out, nil
	})
	handle("GET /nodes/{node}/tasks/{upid}/log", func(s *Sim, r *req) (any, error) {
		t := s.task(r.str("upid"))
		if t == nil || t.Node != r.str("node") {
			return nil, errf(500, "unable to parse worker upid '%s'", r.str("upid"))
		}
		start, limit := r.intOr("start", 0), r.intOr("limit", 50)
		out := []map[string]any{}
		for i := start; i < len(t.Log) && len(out) < limit; i++ {
			out = append(out, map[string]any{"n": i + 1, "t": t.Log[i]})
		}
		return out, nil
	})
	handle("GET /nodes/{node}/tasks", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, t := range s.st.Tasks {
			if t.Node != r.str("node") {
				continue
			}
			e := map[string]any{"upid": t.UPID, "node": t.Node, "pid": t.PID, "pstart": t.PStart, "starttime": t.StartTime,
				"type": t.Type, "id": t.ID, "user": t.User}
			if t.Status == "stopped" {
				e["status"] = t.ExitStatus
			}
			out = append(out, e)
		}
		return out, nil
	})
}

var upidRE = regexp.MustCompile(`^UPID:[a-zA-Z0-9\-]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:\s]+:[^:\s]*:[^:\s]+:$`)
