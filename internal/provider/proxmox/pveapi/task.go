package pveapi

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// TaskError is a task that ended with an exit status other than OK.
type TaskError struct {
	UPID       string
	ExitStatus string
	// Log holds the last lines of the task log.
	Log []string
}

func (e *TaskError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "task %s failed: %s", e.Type(), e.ExitStatus)
	if len(e.Log) > 0 {
		b.WriteString("\n    task log (last lines):")
		for _, l := range e.Log {
			b.WriteString("\n    | " + l)
		}
	}
	return b.String()
}

// Type is the task's type from its UPID (qmcreate, vzcreate, download...).
func (e *TaskError) Type() string {
	// UPID:node:pid:pstart:starttime:type:id:user:
	f := strings.Split(e.UPID, ":")
	if len(f) >= 7 {
		if f[6] != "" {
			return f[5] + " " + f[6]
		}
		return f[5]
	}
	return e.UPID
}

// NodeOfUPID returns the node a task runs on.
func NodeOfUPID(upid string) string {
	f := strings.Split(upid, ":")
	if len(f) > 1 && f[0] == "UPID" {
		return f[1]
	}
	return ""
}

// TaskLogLines is how many lines of a failed task's log are kept.
const TaskLogLines = 10

// WaitTask polls the task until it stops. A task that ends with an exit
// status other than OK is a *TaskError carrying the last lines of its log.
// progress, when not nil, is called with each new log line.
func (c *Client) WaitTask(ctx context.Context, upid string, progress func(line string)) error {
	node := NodeOfUPID(upid)
	if node == "" {
		return fmt.Errorf("waiting for task: %q is not a task id (UPID)", upid)
	}
	poll := c.Poll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	base := "/nodes/" + Seg(node) + "/tasks/" + Seg(upid)
	polls := 0
	for {
		var st struct {
			Status     string `json:"status"`
			ExitStatus string `json:"exitstatus"`
		}
		if err := c.Get(ctx, base+"/status", nil, &st); err != nil {
			return fmt.Errorf("waiting for task: %w", err)
		}
		if st.Status == "stopped" {
			if st.ExitStatus == "OK" {
				return nil
			}
			te := &TaskError{UPID: upid, ExitStatus: st.ExitStatus}
			te.Log, _ = c.TaskLog(ctx, upid, TaskLogLines)
			return te
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for task %s: %w", upid, ctx.Err())
		case <-time.After(poll):
		}
		// Long tasks (downloads) are polled less often after 10 polls.
		if polls++; polls == 10 {
			poll *= 2
		}
	}
}

// TaskLog returns the last n lines of a task's log.
func (c *Client) TaskLog(ctx context.Context, upid string, n int) ([]string, error) {
	node := NodeOfUPID(upid)
	var lines []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	q := url.Values{"start": {"0"}, "limit": {"1000"}}
	if err := c.Get(ctx, "/nodes/"+Seg(node)+"/tasks/"+Seg(upid)+"/log", q, &lines); err != nil {
		return nil, err
	}
	var out []string
	for _, l := range lines {
		if strings.TrimSpace(l.T) == "" || l.T == "no content" {
			continue
		}
		out = append(out, l.T)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}
