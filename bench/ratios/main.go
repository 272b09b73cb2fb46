// Command ratios reads `go test -bench` output of ./bench and prints the
// ratios that the performance targets are stated in, each with PASS or MISS.
// Each figure is the median over the runs (-count) of one benchmark.
//
//	go run ./bench/ratios bench.txt
//
// It exits 1 when a target is missed or its benchmark is missing.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Benchmark names as ./bench defines them, without the GOMAXPROCS suffix.
const (
	parallel    = "BenchmarkParallel/"
	hint        = "/affinity/hint"
	strict      = "/affinity/strict_queue"
	hintCancel  = "/affinity-cancellable/hint"
	strictCncl  = "/affinity-cancellable/strict_queue"
	hintOnCall  = "/affinity-runoncaller/hint"
	strictOnCl  = "/affinity-runoncaller/strict_queue"
	sticky      = "/sticky-channels"
	hashRouter  = "/protoactor-consistent-hash"
	chanPool    = "/channel-pool"
	actorTrip   = "BenchmarkActorRoundTrip/affinity-session"
	seqFuture   = "BenchmarkSequential/protoactor-request-future"
	idle        = "BenchmarkIdleSessions"
	smallLoad   = "c64-s1k-w8"
	largeLoad   = "c256-s100k-w16"
	p99Unit     = "p99-ns"
	nsUnit      = "ns/op"
	allocsUnit  = "allocs/op"
	sessionUnit = "B/session"
)

// contenders of the parallel benchmarks, in the order of the latency table.
var contenders = []string{hint, strict, hintCancel, strictCncl, hintOnCall, strictOnCl, sticky, hashRouter, chanPool}

// target is one figure and its bound.
type target struct {
	label    string
	value    func(m medians) (float64, bool)
	unit     string
	atLeast  bool // the figure must be >= bound, else <= bound
	bound    float64
	info     bool // reported without a verdict
	decimals int
}

var targets = buildTargets()

func buildTargets() []target {
	var ts []target
	for _, load := range []string{smallLoad, largeLoad} {
		for _, mode := range []string{hint, strict} {
			name := parallel + load + mode
			ts = append(ts,
				target{label: load + mode + " / sticky channels", value: ratio(name, parallel+load+sticky, nsUnit), unit: "x", bound: 1.3, decimals: 2},
				target{label: load + " consistent-hash router / " + mode[1:], value: ratio(parallel+load+hashRouter, name, nsUnit), unit: "x", atLeast: true, bound: 2.5, decimals: 2})
		}
		for _, mode := range []string{hintCancel, strictCncl, hintOnCall, strictOnCl} {
			ts = append(ts, target{label: load + mode + " / sticky channels", value: ratio(parallel+load+mode, parallel+load+sticky, nsUnit), unit: "x", info: true, decimals: 2})
		}
	}
	return append(ts,
		target{label: "actor round trip via a session / RequestFuture", value: ratio(actorTrip, seqFuture, nsUnit), unit: "x", bound: 0.5, decimals: 2},
		target{label: "allocs per hint call (" + smallLoad + ")", value: single(parallel+smallLoad+hint, allocsUnit), unit: " allocs/op", bound: 2, decimals: 0},
		target{label: "heap per idle bound session", value: single(idle, sessionUnit), unit: " B/session", bound: 512, decimals: 1},
	)
}

// medians maps benchmark name, then unit, to the median of its values.
type medians map[string]map[string]float64

func ratio(num, den, unit string) func(medians) (float64, bool) {
	return func(m medians) (float64, bool) {
		n, ok1 := m[num][unit]
		d, ok2 := m[den][unit]
		if !ok1 || !ok2 || d == 0 {
			return 0, false
		}
		return n / d, true
	}
}

func single(name, unit string) func(medians) (float64, bool) {
	return func(m medians) (float64, bool) {
		v, ok := m[name][unit]
		return v, ok
	}
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parse reads benchmark result lines ("BenchmarkX-8  100  12 ns/op  3 allocs/op")
// and returns the median of every (benchmark, unit).
func parse(r io.Reader) (medians, error) {
	values := map[string]map[string][]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // not a result line (e.g. a log line starting with the name)
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		if values[name] == nil {
			values[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: value %q: %w", f[0], f[i], err)
			}
			values[name][f[i+1]] = append(values[name][f[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	m := medians{}
	for name, units := range values {
		m[name] = map[string]float64{}
		for unit, vs := range units {
			m[name][unit] = median(vs)
		}
	}
	return m, nil
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// report writes one line per target and says whether all were met.
func report(w io.Writer, m medians) (allMet bool) {
	allMet = true
	for _, t := range targets {
		op := "<="
		if t.atLeast {
			op = ">="
		}
		goal := fmt.Sprintf("target %s %s%s", op, strconv.FormatFloat(t.bound, 'f', -1, 64), t.unit)
		v, ok := t.value(m)
		if t.info {
			if ok {
				fmt.Fprintf(w, "%-64s %16s   %-24s info\n", t.label, strconv.FormatFloat(v, 'f', t.decimals, 64)+t.unit, "no target")
			}
			continue
		}
		if !ok {
			allMet = false
			fmt.Fprintf(w, "%-64s %16s   %-24s MISSING\n", t.label, "n/a", goal)
			continue
		}
		met := v <= t.bound
		if t.atLeast {
			met = v >= t.bound
		}
		verdict := "PASS"
		if !met {
			verdict, allMet = "MISS", false
		}
		fmt.Fprintf(w, "%-64s %16s   %-24s %s\n", t.label, strconv.FormatFloat(v, 'f', t.decimals, 64)+t.unit, goal, verdict)
	}
	return allMet
}

// table writes the parallel benchmarks' mean time per call next to their
// p99 latency, one row per load and contender.
func table(w io.Writer, m medians) {
	fmt.Fprintf(w, "%-16s %-34s %10s %12s\n", "load", "contender", "ns/op", "p99")
	for _, load := range []string{smallLoad, largeLoad} {
		for _, c := range contenders {
			name := parallel + load + c
			ns, ok := m[name][nsUnit]
			if !ok {
				continue
			}
			p99 := "n/a"
			if v, ok := m[name][p99Unit]; ok {
				p99 = time.Duration(v).String()
			}
			fmt.Fprintf(w, "%-16s %-34s %10.0f %12s\n", load, c[1:], ns, p99)
		}
	}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: ratios bench.txt")
		return 2
	}
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer f.Close()
	m, err := parse(f)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	table(stdout, m)
	fmt.Fprintln(stdout)
	if !report(stdout, m) {
		return 1
	}
	return 0
}
