package procworker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/actors"
	"github.com/affinity-go/affinity/messages"
)

// ProtocolVersion is the version a worker announces in its ready frame.
const ProtocolVersion = 1

// worker is one incarnation: one process. Its goroutines (waiter, reader,
// stderr logger, monitor) are owned by it and end in Close.
type worker struct {
	cfg  *Config
	info actors.WorkerInfo
	log  zerolog.Logger
	cmd  *exec.Cmd
	pid  int
	born time.Time

	stdin  *os.File // our ends of the child's pipes
	stdout *os.File
	stderr *os.File

	wmu  sync.Mutex // one frame at a time on stdin
	wbuf []byte

	mu        sync.Mutex
	pending   map[uint64]*pending // calls waiting for frames
	cancelled map[uint64]struct{} // calls given up on: late frames are dropped
	nextID    uint64
	taint     func(error)
	failure   error // first failure; set once
	closing   bool
	credit    bool // the process announced credit: streams get a window (set before ready closes)

	broken  chan struct{} // closed when failure is set
	ready   chan struct{} // closed by the reader on the ready frame
	exited  chan struct{} // closed once the process was reaped
	exitErr error         // how it ended; set before exited is closed
	stop    chan struct{} // closed by Close
	wg      sync.WaitGroup

	calls     atomic.Int64
	lastPong  atomic.Int64 // unix nanoseconds
	recycling atomic.Bool
	closeOnce sync.Once
}

var (
	_ actors.Worker          = (*worker)(nil)
	_ actors.StreamWorker    = (*worker)(nil)
	_ actors.SessionReleaser = (*worker)(nil)
	_ actors.HealthChecker   = (*worker)(nil)
	_ actors.SelfTainter     = (*worker)(nil)
	_ io.Closer              = (*worker)(nil)
)

// pending collects the frames of one call, in order. The reader never
// blocks on it, so a slow stream consumer cannot hold back pongs; a
// stream's window bounds how many it holds.
type pending struct {
	stream  bool
	window  int    // items the process may send ahead of the consumer; 0: no limit
	granted uint64 // items the host allowed so far; under worker.mu
	items   uint64 // item frames received; under worker.mu
	mu      sync.Mutex
	frames  []frame
	signal  chan struct{} // one token: frames were added
}

func (p *pending) push(f frame) {
	p.mu.Lock()
	p.frames = append(p.frames, f)
	p.mu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

func (p *pending) pop() (frame, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.frames) == 0 {
		return frame{}, false
	}
	f := p.frames[0]
	p.frames[0] = frame{}
	p.frames = p.frames[1:]
	return f, true
}

// start runs the process and waits for its ready frame.
func start(ctx context.Context, cfg *Config, info actors.WorkerInfo) (*worker, error) {
	w := &worker{
		cfg: cfg, info: info,
		pending: make(map[uint64]*pending), cancelled: make(map[uint64]struct{}),
		broken: make(chan struct{}), ready: make(chan struct{}), exited: make(chan struct{}), stop: make(chan struct{}),
	}
	var child [3]*os.File // stdin read end, stdout and stderr write ends
	var err error
	if child[0], w.stdin, err = os.Pipe(); err != nil {
		return nil, err
	}
	if w.stdout, child[1], err = os.Pipe(); err != nil {
		closeAll(child[0], w.stdin)
		return nil, err
	}
	if w.stderr, child[2], err = os.Pipe(); err != nil {
		closeAll(child[0], w.stdin, w.stdout, child[1])
		return nil, err
	}
	// Not CommandContext: the process outlives the factory's context.
	w.cmd = exec.Command(cfg.Command, cfg.Args...)
	w.cmd.Stdin, w.cmd.Stdout, w.cmd.Stderr = child[0], child[1], child[2]
	w.cmd.Dir = cfg.Dir
	w.cmd.Env = append(append(os.Environ(), cfg.Env...),
		"AFFINITY_POOL="+info.Pool, "AFFINITY_WORKER="+strconv.Itoa(info.ID),
		"AFFINITY_INCARNATION="+strconv.FormatUint(info.Incarnation, 10))
	w.cmd.SysProcAttr = sysProcAttr()
	err = w.cmd.Start()
	closeAll(child[:]...) // the child has its copies
	if err != nil {
		closeAll(w.stdin, w.stdout, w.stderr)
		return nil, fmt.Errorf("procworker: starting %s: %w", cfg.Command, err)
	}
	w.pid, w.born = w.cmd.Process.Pid, time.Now()
	w.log = cfg.Logger.With().Str("pool", info.Pool).Int("worker", info.ID).
		Uint64("incarnation", info.Incarnation).Int("pid", w.pid).Logger()

	w.wg.Add(3)
	go w.waitExit()
	go w.readLoop()
	go w.logStderr()

	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-w.ready:
		w.lastPong.Store(time.Now().UnixNano())
		if cfg.HeartbeatInterval > 0 {
			w.wg.Add(1)
			go w.monitor()
		}
		w.log.Debug().Msg("worker process ready")
		return w, nil
	case <-w.broken:
		err = w.err()
	case <-timer.C:
		err = fmt.Errorf("%w: %v (pid %d)", ErrStartTimeout, cfg.StartTimeout, w.pid)
	case <-ctx.Done():
		err = ctx.Err()
	}
	w.fail(err)
	_ = w.Close()
	return nil, err
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}

// err returns the failure that broke the worker.
func (w *worker) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}

// fail records the worker's first failure, kills the process (it is of no
// use any more, and a write blocked on its stdin must end) and taints the
// worker.
func (w *worker) fail(err error) {
	w.mu.Lock()
	if w.failure != nil {
		w.mu.Unlock()
		return
	}
	w.failure = err
	closing, taint := w.closing, w.taint
	close(w.broken)
	w.mu.Unlock()
	w.kill()
	if closing {
		return
	}
	w.log.Warn().Err(err).Msg("worker process failed")
	if taint != nil {
		taint(err)
	}
}

// recycle asks for a new process without treating this one as failed.
func (w *worker) recycle(why string) {
	if !w.recycling.CompareAndSwap(false, true) {
		return
	}
	w.mu.Lock()
	taint, closing := w.taint, w.closing
	w.mu.Unlock()
	if taint != nil && !closing {
		w.log.Info().Str("why", why).Msg("recycling worker process")
		taint(fmt.Errorf("%s: %w", why, actors.ErrRecycle))
	}
}

// SetTaint implements actors.SelfTainter: an exit or a bad frame between
// calls taints the worker at once.
func (w *worker) SetTaint(taint func(error)) {
	w.mu.Lock()
	w.taint = taint
	failure := w.failure
	w.mu.Unlock()
	if failure != nil {
		taint(failure) // it died between its ready frame and now
	}
}

// CheckHealth implements actors.HealthChecker, for runtimes that predate
// SelfTainter or lose its message: a failed process is unhealthy.
func (w *worker) CheckHealth(context.Context) error { return w.err() }

// waitExit reaps the process; its exit is a failure unless the worker was
// being closed.
func (w *worker) waitExit() {
	defer w.wg.Done()
	err := w.cmd.Wait()
	ee := &ExitError{Pid: w.pid, Code: w.cmd.ProcessState.ExitCode()}
	if ws, ok := w.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		ee.Signal, ee.Core = ws.Signal(), ws.CoreDump()
	}
	w.exitErr = ee
	w.log.Debug().AnErr("wait", err).Str("status", ee.Error()).Msg("worker process ended")
	// Recorded before exited closes: whoever waits for the exit (Close)
	// finds it as the worker's failure.
	w.fail(ee)
	close(w.exited)
}

// readLoop reads the process's frames until EOF or a protocol violation.
func (w *worker) readLoop() {
	defer w.wg.Done()
	r := bufio.NewReaderSize(w.stdout, 64<<10)
	first := true
	for {
		f, err := readFrame(r, w.cfg.MaxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				w.stdoutClosed()
			} else if errors.Is(err, io.ErrUnexpectedEOF) {
				w.stdoutClosed() // a process dying mid-frame: its exit is the reason
			} else {
				w.fail(fmt.Errorf("%w: bad frame: %w", ErrProtocol, err))
			}
			return
		}
		if first {
			first = false
			if err := w.checkReady(f); err != nil {
				w.fail(err)
				return
			}
			close(w.ready)
			continue
		}
		if err := w.dispatch(f); err != nil {
			w.fail(err)
			return
		}
	}
}

func (w *worker) checkReady(f frame) error {
	if f.typ != frameReady {
		return fmt.Errorf("%w: first frame is %s, want ready", ErrProtocol, typeName(f.typ))
	}
	var hello struct {
		Protocol int  `json:"protocol"`
		Credit   bool `json:"credit"` // it waits for credit frames on streams given a window
	}
	if len(f.body) > 0 {
		if err := json.Unmarshal(f.body, &hello); err != nil {
			return fmt.Errorf("%w: ready frame: %w", ErrProtocol, err)
		}
	}
	if hello.Protocol != 0 && hello.Protocol != ProtocolVersion {
		return fmt.Errorf("%w: worker speaks protocol %d, host %d", ErrProtocol, hello.Protocol, ProtocolVersion)
	}
	w.credit = hello.Credit
	return nil
}

// stdoutClosed waits for the exit that usually follows, so the taint
// names the exit code or signal rather than the closed pipe.
func (w *worker) stdoutClosed() {
	t := time.NewTimer(w.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-w.exited: // waitExit reports it
	case <-w.stop:
	case <-t.C:
		w.fail(fmt.Errorf("%w: the process closed its stdout but kept running", ErrProtocol))
	}
}

// dispatch routes one frame from the process.
func (w *worker) dispatch(f frame) error {
	switch f.typ {
	case framePong:
		w.lastPong.Store(time.Now().UnixNano())
		return nil
	case frameResult, frameError, frameItem, frameEnd:
		return w.deliver(f)
	case frameReady, frameCall, frameRelease, framePing, frameCancel, frameCredit:
		return fmt.Errorf("%w: unexpected %s frame from the worker", ErrProtocol, typeName(f.typ))
	default:
		return fmt.Errorf("%w: unknown frame type %d", ErrProtocol, f.typ)
	}
}

func (w *worker) deliver(f frame) error {
	terminal := f.typ == frameResult || f.typ == frameError || f.typ == frameEnd
	w.mu.Lock()
	p, ok := w.pending[f.id]
	if !ok {
		_, late := w.cancelled[f.id]
		if late && terminal {
			delete(w.cancelled, f.id)
		}
		w.mu.Unlock()
		if late {
			return nil // its caller gave up
		}
		return fmt.Errorf("%w: %s frame for call %d, which is not running", ErrProtocol, typeName(f.typ), f.id)
	}
	if (f.typ == frameResult && p.stream) || ((f.typ == frameItem || f.typ == frameEnd) && !p.stream) {
		w.mu.Unlock()
		kind := "a plain"
		if p.stream {
			kind = "a streaming"
		}
		return fmt.Errorf("%w: %s frame for %s call %d", ErrProtocol, typeName(f.typ), kind, f.id)
	}
	if f.typ == frameItem && p.window > 0 {
		if p.items++; p.items > p.granted {
			items, granted := p.items, p.granted
			w.mu.Unlock()
			return fmt.Errorf("%w: item %d of call %d beyond the %d granted", ErrProtocol, items, f.id, granted)
		}
	}
	if terminal {
		delete(w.pending, f.id)
	}
	w.mu.Unlock()
	p.push(f)
	return nil
}

// logStderr sends the process's stderr to the logger, a line at a time.
func (w *worker) logStderr() {
	defer w.wg.Done()
	r := bufio.NewReaderSize(w.stderr, 16<<10)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			w.log.Info().Str("stream", "stderr").Msg(string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return // EOF, or closed by Close
		}
	}
}

// monitor pings the process and checks its age and memory every
// heartbeat interval.
func (w *worker) monitor() {
	defer w.wg.Done()
	interval := w.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-w.stop:
			return
		case <-w.broken:
			return
		case <-t.C:
		}
		now := time.Now()
		if silent := now.Sub(time.Unix(0, w.lastPong.Load())); silent > time.Duration(w.cfg.MissedHeartbeats)*interval {
			w.fail(fmt.Errorf("%w: no pong for %v (%d intervals of %v)", ErrHeartbeat, silent.Round(time.Millisecond), w.cfg.MissedHeartbeats, interval))
			return
		}
		if w.cfg.MaxAge > 0 && now.Sub(w.born) >= w.cfg.MaxAge {
			w.recycle(fmt.Sprintf("older than MaxAge %v", w.cfg.MaxAge))
		}
		if w.cfg.MaxRSS > 0 {
			if rss, err := readRSS(w.pid); err == nil && rss > w.cfg.MaxRSS {
				w.recycle(fmt.Sprintf("resident memory %d bytes above MaxRSS %d", rss, w.cfg.MaxRSS))
			}
		}
		seq++
		w.ping(seq, interval)
	}
}

// ping writes a ping unless a call is being written (then the process is
// busy reading, and the next tick pings). The deadline keeps a process
// that stopped reading from blocking the monitor.
func (w *worker) ping(seq uint64, deadline time.Duration) {
	if !w.wmu.TryLock() {
		return
	}
	defer w.wmu.Unlock()
	_ = w.stdin.SetWriteDeadline(time.Now().Add(deadline))
	w.wbuf = appendFrame(w.wbuf[:0], frame{typ: framePing, id: seq})
	_, err := w.stdin.Write(w.wbuf)
	_ = w.stdin.SetWriteDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.fail(fmt.Errorf("%w: stdin blocked for %v", ErrHeartbeat, deadline))
	}
	// Other errors: the process is gone, and waitExit says how.
}

// callMeta is the JSON metadata of a call frame.
type callMeta struct {
	Session     string `json:"session"`
	Pool        string `json:"pool"`
	Worker      int    `json:"worker"`
	Incarnation uint64 `json:"incarnation"`
	Ref         string `json:"ref,omitempty"`
	Window      int    `json:"window,omitempty"` // a stream's initial credit (see Config.StreamWindow)
}

// encodePayload: []byte goes raw, json.RawMessage as is, anything else
// through encoding/json.
func encodePayload(v any) ([]byte, byte, error) {
	switch p := v.(type) {
	case []byte:
		return p, flagRaw, nil
	case json.RawMessage:
		if len(p) == 0 {
			return []byte("null"), 0, nil
		}
		return p, 0, nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, 0, fmt.Errorf("procworker: encoding the payload: %w: %w", actors.ErrInvalidArgument, err)
		}
		return b, 0, nil
	}
}

// send registers a call and writes its frame.
func (w *worker) send(call messages.Call, flags byte) (*pending, uint64, error) {
	payload, pflags, err := encodePayload(call.Payload)
	if err != nil {
		return nil, 0, err
	}
	m := callMeta{Session: call.Session, Pool: call.Pool, Worker: call.Worker, Incarnation: call.Incarnation}
	if call.Ref != nil {
		m.Ref = call.Ref.Key
	}
	p := &pending{stream: flags&flagStream != 0, signal: make(chan struct{}, 1)}
	if p.stream && w.credit && w.cfg.StreamWindow > 0 {
		p.window, p.granted = w.cfg.StreamWindow, uint64(w.cfg.StreamWindow)
		m.Window = p.window
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, 0, err
	}
	w.mu.Lock()
	if w.failure != nil {
		err := w.failure
		w.mu.Unlock()
		return nil, 0, actors.Fatal(err)
	}
	w.nextID++
	id := w.nextID
	w.pending[id] = p
	w.mu.Unlock()

	w.wmu.Lock()
	w.wbuf = binary32(w.wbuf[:0], headerLen+4+len(meta)+len(payload))
	w.wbuf = append(w.wbuf, frameCall, flags|pflags)
	w.wbuf = binary64(w.wbuf, id)
	w.wbuf = appendCallBody(w.wbuf, meta, payload)
	_, err = w.stdin.Write(w.wbuf)
	if cap(w.wbuf) > 1<<20 {
		w.wbuf = nil // do not keep a huge payload's buffer
	}
	w.wmu.Unlock()
	if err != nil {
		return nil, 0, actors.Fatal(w.writeFailed(err))
	}
	return p, id, nil
}

// writeFailed turns a failed write into the worker's failure, preferring
// the exit status when the process is exiting.
func (w *worker) writeFailed(err error) error {
	t := time.NewTimer(w.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-w.broken:
	case <-t.C:
		w.fail(fmt.Errorf("%w: writing to the worker's stdin: %w", ErrProtocol, err))
	}
	return w.err()
}

// await returns the call's next frame.
func (w *worker) await(ctx context.Context, p *pending, id uint64) (frame, error) {
	for {
		if f, ok := p.pop(); ok {
			return f, nil
		}
		select {
		case <-p.signal:
		case <-w.broken:
			if f, ok := p.pop(); ok {
				return f, nil // it arrived just before the failure
			}
			return frame{}, actors.Fatal(w.err())
		case <-ctx.Done():
			w.abandon(id)
			return frame{}, ctx.Err()
		}
	}
}

// abandon tells the process the caller of call id gave up; frames it still
// sends for that call are dropped.
func (w *worker) abandon(id uint64) {
	w.mu.Lock()
	_, running := w.pending[id]
	if running {
		delete(w.pending, id)
		w.cancelled[id] = struct{}{}
	}
	w.mu.Unlock()
	if running {
		w.write(frame{typ: frameCancel, id: id})
	}
}

// grant lets stream call id send n more items: counted before the frame
// goes, so an item sent on this credit is never taken for one beyond it.
func (w *worker) grant(p *pending, id uint64, n int) {
	w.mu.Lock()
	p.granted += uint64(n)
	w.mu.Unlock()
	w.write(frame{typ: frameCredit, id: id, body: binary32(nil, n)})
}

// write writes a frame; a failed write surfaces as the process's failure.
func (w *worker) write(f frame) {
	w.wmu.Lock()
	w.wbuf = appendFrame(w.wbuf[:0], f)
	_, _ = w.stdin.Write(w.wbuf)
	w.wmu.Unlock()
}

// value turns a result or item frame into what the caller gets.
func value(call messages.Call, f frame) any {
	switch {
	case f.flags&flagRef != 0:
		return call.NewRef(string(f.body))
	case f.flags&flagRaw != 0:
		if f.body == nil {
			return []byte{}
		}
		return f.body
	default:
		return json.RawMessage(f.body)
	}
}

// remoteError decodes an error frame.
func remoteError(f frame) error {
	re := &RemoteError{}
	if err := json.Unmarshal(f.body, re); err != nil {
		re = &RemoteError{Type: "undecodable", Message: string(f.body)}
	}
	if re.Fatal {
		return actors.Fatal(re)
	}
	return re
}

// afterCall counts a finished call and recycles at MaxCalls.
func (w *worker) afterCall() {
	n := w.calls.Add(1)
	if w.cfg.MaxCalls > 0 && n >= int64(w.cfg.MaxCalls) {
		w.recycle(fmt.Sprintf("%d calls (MaxCalls)", n))
	}
}

// Handle implements actors.Worker: one call frame, one result or error.
func (w *worker) Handle(ctx context.Context, call messages.Call) (any, error) {
	p, id, err := w.send(call, 0)
	if err != nil {
		return nil, err
	}
	f, err := w.await(ctx, p, id)
	if err != nil {
		return nil, err
	}
	w.afterCall()
	if f.typ == frameError {
		return nil, remoteError(f)
	}
	return value(call, f), nil
}

// HandleStream implements actors.StreamWorker: items until an end or an
// error frame.
func (w *worker) HandleStream(ctx context.Context, call messages.Call, send func(any) error) error {
	p, id, err := w.send(call, flagStream)
	if err != nil {
		return err
	}
	taken := 0 // items the consumer took since the last grant
	for {
		f, err := w.await(ctx, p, id)
		if err != nil {
			return err
		}
		switch f.typ {
		case frameItem:
			if err := send(value(call, f)); err != nil {
				w.abandon(id)
				return err
			}
			if taken++; p.window > 0 && taken >= max(p.window/2, 1) {
				w.grant(p, id, taken)
				taken = 0
			}
		case frameEnd:
			w.afterCall()
			return nil
		default: // frameError
			w.afterCall()
			return remoteError(f)
		}
	}
}

// ReleaseSession implements actors.SessionReleaser.
func (w *worker) ReleaseSession(_ context.Context, session string, source messages.CleanupSource) {
	if w.err() != nil {
		return
	}
	body, _ := json.Marshal(struct {
		Session string `json:"session"`
		Source  string `json:"source"`
	}{session, source.String()})
	w.write(frame{typ: frameRelease, body: body})
}

// Close implements io.Closer: the incarnation ended. It stops the process
// gracefully (stdin closed, then SIGTERM, then SIGKILL, StopGrace apart)
// and waits for the worker's goroutines.
func (w *worker) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		close(w.stop)
		_ = w.stdin.Close() // a well-behaved worker exits on EOF
		if !w.waitExited(w.cfg.StopGrace) {
			w.terminate()
			if !w.waitExited(w.cfg.StopGrace) {
				w.kill()
				<-w.exited // SIGKILL cannot be ignored
			}
		}
		w.kill()          // whatever it left running
		w.fail(ErrClosed) // calls still waiting (Capacity > 1) end
		// The reader and the stderr logger end at EOF once every holder of
		// the pipes is gone; a grandchild that left the group may keep them
		// open, so closing our ends bounds the wait.
		done := make(chan struct{})
		go func() { w.wg.Wait(); close(done) }()
		if !waitFor(done, time.Second) {
			closeAll(w.stdout, w.stderr)
			<-done
		}
		closeAll(w.stdout, w.stderr)
		w.log.Debug().Str("status", w.exitErr.Error()).Msg("worker process stopped")
	})
	return nil
}

func (w *worker) waitExited(d time.Duration) bool { return waitFor(w.exited, d) }

func waitFor(c <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
		return false
	}
}

func binary32(b []byte, v int) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func binary64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
