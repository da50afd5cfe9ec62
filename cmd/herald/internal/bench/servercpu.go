package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The server's CPU time over the measured part of a fan-out run, for the
// CPU per delivery: from /proc/PID/stat when the server is a process on
// this machine (Config.ServerPID), otherwise from the
// process_cpu_seconds_total the server exports on /metrics (at
// Config.ServerDebug, its --metrics-addr listener, if given, else at
// Config.URL). Both count in the kernel's clock ticks, 10 ms, so a run of
// a few seconds has the figure to within a fraction of a percent.

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// serverCPU returns the server's CPU seconds (user and system) so far.
func (r *run) serverCPU(ctx context.Context) (float64, error) {
	if pid := r.cfg.ServerPID; pid > 0 {
		return procCPU(pid)
	}
	base := r.cfg.ServerDebug
	if base == "" && len(r.cfg.urls) > 1 {
		// The first node's CPU per delivery of the whole cluster would mean nothing.
		return 0, errors.New("several nodes, whose CPU time is each their own")
	}
	if base == "" {
		base = r.cfg.URL
	}
	return metricsCPU(ctx, strings.TrimRight(base, "/")+"/metrics", r.cfg.TLS)
}

// procCPU reads utime and stime of process pid.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("failed to read server CPU time: %w", err)
	}
	// The command name, in parentheses, may contain spaces: fields are
	// counted after its closing parenthesis. utime and stime are fields
	// 14 and 15 of the line, 12 and 13 after the name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("failed to read server CPU time: bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("failed to read server CPU time: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("failed to read server CPU time: bad /proc/%d/stat", pid)
	}
	return float64(ut+st) / clockTicks, nil
}

// metricsCPU reads process_cpu_seconds_total from the Prometheus text at url.
func metricsCPU(ctx context.Context, url string, tlsConf *tls.Config) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("failed to read server CPU time: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("failed to read server CPU time: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("failed to read server CPU time: GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total")
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		if rest[0] == '{' {
			if j := strings.IndexByte(rest, '}'); j >= 0 {
				rest = rest[j+1:]
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("failed to read server CPU time: bad sample %q", sc.Text())
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("failed to read server CPU time: %w", err)
	}
	return 0, fmt.Errorf("failed to read server CPU time: no process_cpu_seconds_total at %s", url)
}
