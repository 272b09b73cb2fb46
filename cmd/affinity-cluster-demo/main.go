// Command affinity-cluster-demo runs an Affinity cluster on loopback: member
// processes (this same binary, with -member) find each other through
// protoactor's automanaged provider, and each one's callers call their
// own sessions and 50 sessions that every member calls, whose state lives
// on whichever member the sessions' grains chose. Part way through, one member is killed with SIGKILL and a new one
// joins. At the end every member prints what it saw: the sessions it holds,
// its calls, the sessions that had to start afresh elsewhere (moves), its
// errors by kind, and any broken guarantee (a strict or ref call that ran
// on the wrong worker, or a call that hung).
//
//	go run ./cmd/affinity-cluster-demo
//	go run ./cmd/affinity-cluster-demo -members 3 -duration 20s
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// say narrates the run: on stdout with the table, on stderr with -json.
var say = func(format string, args ...any) { fmt.Printf(format, args...) }

func main() {
	flag.CommandLine.Init("affinity-cluster-demo", flag.ExitOnError)
	var (
		members  = flag.Int("members", 3, "members at the start (one more joins later)")
		duration = flag.Duration("duration", 15*time.Second, "length of the run")
		sessions = flag.Int("sessions", 200, "sessions per member")
		callers  = flag.Int("callers", 4, "callers per member")
		member   = flag.Int("member", -1, "internal: run as member process N")
		port     = flag.Int("port", 0, "internal: the member's remote port")
		health   = flag.Int("health", 0, "internal: the member's health port")
		hosts    = flag.String("hosts", "", "internal: every member's health address, comma-separated")
		expect   = flag.Int("expect", 1, "internal: members to wait for before calling")
		asJSON   = flag.Bool("json", false, "print the members' reports as JSON lines instead of a table")
	)
	flag.Parse()
	if *member >= 0 {
		err := runMember(memberOptions{index: *member, port: *port, health: *health,
			hosts: strings.Split(*hosts, ","), sessions: *sessions, callers: *callers, expect: *expect})
		if err != nil {
			fmt.Fprintln(os.Stderr, "affinity-cluster-demo member:", err)
			os.Exit(1)
		}
		return
	}
	if *members < 2 || *duration < 3*time.Second || *sessions < 1 || *callers < 1 {
		fmt.Fprintln(os.Stderr, "affinity-cluster-demo: want -members >= 2, -duration >= 3s, positive -sessions and -callers")
		os.Exit(2)
	}
	if *asJSON {
		say = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format, args...) }
	}
	reports, err := orchestrate(*members, *duration, *sessions, *callers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "affinity-cluster-demo:", err)
		os.Exit(1)
	}
	broken := 0
	for _, r := range reports {
		broken += len(r.Violations)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		for _, r := range reports {
			_ = enc.Encode(r)
		}
	} else {
		printReports(reports)
	}
	if broken > 0 {
		os.Exit(1)
	}
}

// slot is one member process and its ports.
type slot struct {
	port, health int
	cmd          *exec.Cmd
	out          chan report
	ready        chan struct{}
}

// orchestrate starts the members, kills one after a third of the run, adds
// one at half time, stops the rest at the end, and collects their reports.
func orchestrate(n int, d time.Duration, sessions, callers int) ([]report, error) {
	slots := make([]*slot, n+1)
	var hosts []string
	for i := range slots {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		slots[i] = &slot{port: ports[0], health: ports[1]}
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(ports[1]))
	}
	start := func(i, expect int) error {
		return slots[i].start(i, strings.Join(hosts, ","), sessions, callers, expect)
	}
	defer func() {
		for _, s := range slots {
			if s.cmd != nil && s.cmd.ProcessState == nil {
				_ = s.cmd.Process.Kill()
			}
		}
	}()
	for i := range n { // in parallel: each waits for all n before calling
		if err := start(i, n); err != nil {
			return nil, err
		}
	}
	for i := range n {
		if err := slots[i].waitReady(i); err != nil {
			return nil, err
		}
	}
	say("%d members on loopback; running %v: member 1 is killed at %v, member %d joins at %v\n",
		n, d, d/3, n, d/2)
	time.Sleep(d / 3)
	victim := slots[1]
	_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	_ = victim.cmd.Wait()
	say("%v: member 1 killed (SIGKILL)\n", d/3)
	time.Sleep(d/2 - d/3)
	if err := start(n, 1); err != nil {
		return nil, err
	}
	if err := slots[n].waitReady(n); err != nil {
		return nil, err
	}
	say("%v: member %d joined\n", d/2, n)
	time.Sleep(d - d/2)
	var reports []report
	for i, s := range slots {
		if s == victim {
			continue
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case r := <-s.out:
			reports = append(reports, r)
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, on stderr
			time.Sleep(time.Second)
			return reports, fmt.Errorf("member %d did not report within 30s", i)
		}
		if err := s.cmd.Wait(); err != nil {
			return reports, fmt.Errorf("member %d: %w", i, err)
		}
	}
	return reports, nil
}

// start runs member i; waitReady waits until it calls.
func (s *slot) start(i int, hosts string, sessions, callers, expect int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s.cmd = exec.Command(self, "-member", strconv.Itoa(i), "-port", strconv.Itoa(s.port),
		"-health", strconv.Itoa(s.health), "-hosts", hosts,
		"-sessions", strconv.Itoa(sessions), "-callers", strconv.Itoa(callers), "-expect", strconv.Itoa(expect))
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	s.out, s.ready = make(chan report, 1), make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		return err
	}
	go func() { // the member's report line (echo, under automanaged, prints a banner too)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r report
			if strings.HasPrefix(sc.Text(), `{"index"`) && json.Unmarshal(sc.Bytes(), &r) == nil {
				s.out <- r
			}
		}
	}()
	go func() { // stderr: readiness, then whatever the member says
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "member ") && strings.HasSuffix(sc.Text(), " ready") {
				close(s.ready)
				continue
			}
			fmt.Fprintf(os.Stderr, "[member %d] %s\n", i, sc.Text())
		}
	}()
	return nil
}

func (s *slot) waitReady(i int) error {
	select {
	case <-s.ready:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("member " + strconv.Itoa(i) + " did not start within 30s")
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// printReports writes the members' table, the first error of each kind and
// every broken guarantee.
func printReports(reports []report) {
	sort.Slice(reports, func(i, j int) bool { return reports[i].Index < reports[j].Index })
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "member\tsessions held\tworkers\tcalls ok\tmoves\terrors\tbroken guarantees")
	for _, r := range reports {
		var errs []string
		for kind, c := range r.Errors {
			errs = append(errs, fmt.Sprintf("%s: %d", kind, c))
		}
		sort.Strings(errs)
		if len(errs) == 0 {
			errs = []string{"none"}
		}
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%s\t%d\n", r.Index, r.Sessions, r.Workers, r.Calls, r.Moves, strings.Join(errs, "; "), len(r.Violations))
	}
	_ = w.Flush()
	fmt.Println("\nThe first error of each kind:")
	for _, r := range reports {
		kinds := make([]string, 0, len(r.Examples))
		for kind := range r.Examples {
			kinds = append(kinds, kind)
		}
		sort.Strings(kinds)
		for _, kind := range kinds {
			fmt.Printf("  member %d, %s: %s\n", r.Index, kind, r.Examples[kind])
		}
	}
	for _, r := range reports {
		for _, v := range r.Violations {
			fmt.Printf("member %d: %s\n", r.Index, v)
		}
	}
	fmt.Println(`
Sessions whose state was on the killed member: their calls in flight failed with
"worker failed"; then strict calls got "session worker unavailable" (never a silent
fresh start), the caller closed the session, and it started afresh elsewhere (a move).
Refs to the killed member's workers got "ref lost". Every other session kept its worker.`)
}
