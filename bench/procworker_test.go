package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/procworker"
)

// echoScript is the Python echo worker both sides of the comparison run.
func echoScript(b *testing.B) string {
	b.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		b.Skip("python3 not found")
	}
	p, err := filepath.Abs(filepath.Join("..", "procworker", "python", "echo_worker.py"))
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// benchPayload is the call both sides send.
var benchPayload = json.RawMessage(`{"op":"echo","x":42}`)

// BenchmarkProcWorkerRoundTrip measures one caller's sequential calls to a
// Python echo worker through an Affinity pool (session, worker actor,
// procworker) next to the same frames written by hand to the same script
// over a bare os/exec pipe. Both run in one benchmark, in alternating
// chunks, so the ratio holds on a busy machine; it reports calls/s of each
// and pool/pipe.
func BenchmarkProcWorkerRoundTrip(b *testing.B) {
	script := echoScript(b)
	factory, err := procworker.Factory(procworker.Config{Command: "python3", Args: []string{script}, Env: []string{"PYTHONDONTWRITEBYTECODE=1"}})
	if err != nil {
		b.Fatal(err)
	}
	rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{
		{Name: "py", Size: 1, Affinity: actors.StrictQueue, NewWorker: factory},
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	pipe := startBarePipe(b, script)

	ctx := context.Background()
	s := rt.Session("bench")
	const chunk = 100
	var poolTime, pipeTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		t0 := time.Now()
		for range n {
			if _, err := s.Call(ctx, benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for range n {
			pipe.call(b)
		}
		poolTime += t1.Sub(t0)
		pipeTime += time.Since(t1)
	}
	b.StopTimer()
	poolRate := float64(b.N) / poolTime.Seconds()
	pipeRate := float64(b.N) / pipeTime.Seconds()
	b.ReportMetric(poolRate, "pool-calls/s")
	b.ReportMetric(pipeRate, "pipe-calls/s")
	b.ReportMetric(poolRate/pipeRate, "pool/pipe")
}

// barePipe is the baseline: the script driven directly, with the frames
// of docs/worker-protocol.md built by hand.
type barePipe struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	frame []byte
	id    uint64
	buf   []byte
}

func startBarePipe(b *testing.B, script string) *barePipe {
	cmd := exec.Command("python3", script)
	cmd.Env = append(cmd.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &barePipe{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 64<<10)}
	b.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	if typ := p.read(b); typ != 1 {
		b.Fatalf("first frame type %d, want ready", typ)
	}
	// The same metadata the pool sends for this call.
	meta := []byte(`{"session":"bench","pool":"py","worker":0,"incarnation":1}`)
	body := binary.BigEndian.AppendUint32(nil, uint32(len(meta)))
	body = append(append(body, meta...), benchPayload...)
	p.frame = binary.BigEndian.AppendUint32(nil, uint32(10+len(body)))
	p.frame = append(p.frame, 2, 0) // call, no flags
	p.frame = binary.BigEndian.AppendUint64(p.frame, 0)
	p.frame = append(p.frame, body...)
	return p
}

func (p *barePipe) call(b *testing.B) {
	p.id++
	binary.BigEndian.PutUint64(p.frame[6:], p.id)
	if _, err := p.in.Write(p.frame); err != nil {
		b.Fatal(err)
	}
	if typ := p.read(b); typ != 3 {
		b.Fatalf("frame type %d, want result", typ)
	}
}

// read reads one frame and returns its type.
func (p *barePipe) read(b *testing.B) byte {
	var hdr [14]byte
	if _, err := io.ReadFull(p.out, hdr[:]); err != nil {
		b.Fatal(err)
	}
	n := int(binary.BigEndian.Uint32(hdr[:4])) - 10
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(p.out, p.buf[:n]); err != nil {
		b.Fatal(err)
	}
	return hdr[4]
}

// BenchmarkProcWorkerPoolStartup measures the start of a pool of 4 Python
// workers: actors.Start returns once every process sent its ready frame.
func BenchmarkProcWorkerPoolStartup(b *testing.B) {
	script := echoScript(b)
	factory, err := procworker.Factory(procworker.Config{Command: "python3", Args: []string{script}, Env: []string{"PYTHONDONTWRITEBYTECODE=1"}})
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		rt, err := actors.Start(actors.Config{Pools: []actors.PoolConfig{
			{Name: fmt.Sprint("py", i), Size: 4, NewWorker: factory},
		}})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
		b.StopTimer()
		if err := rt.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/start")
}
