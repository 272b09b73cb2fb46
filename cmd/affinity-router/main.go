// Command affinity-router is a reverse proxy with signed-cookie session
// affinity: every request of a client session goes to the same backend,
// with Heroku's failover (temporary by default) and even rebalancing when
// backends are added. Run it with -h for every flag.
//
//	affinity-router -keys-file keys.txt -backend http://10.0.0.1:8080 -backend http://10.0.0.2:8080
//
// -listen may be repeated. SIGHUP re-reads the config file's backends
// (unless -backend gave them), the keys file, the admin token file and the
// TLS key pair, reopens the access log, and warns of the other settings
// changed in the file, which need a restart. SIGINT or SIGTERM drain and
// stop: running requests get -shutdown-grace, WebSockets get a close frame
// and a second to answer it, and the exit status is 0 after a clean drain.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/affinity-go/affinity/router"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	if err := run(os.Args[1:], sigs, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "affinity-router:", err)
		os.Exit(2)
	}
}

// run serves until a signal on sigs stops it. ready, when set, learns the
// listeners' addresses once they accept connections.
func run(args []string, sigs <-chan os.Signal, ready func(proxy []string, admin string)) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		return fmt.Errorf("bad -log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	rt, accessLog, err := newRouter(o, &log)
	if err != nil {
		return err
	}
	if accessLog != nil {
		defer accessLog.Close()
	}
	floor := heapFloor(o.gcHeapFloorMiB)
	defer runtime.KeepAlive(floor)

	sv, err := startServers(o, rt, &log)
	if err != nil {
		_ = rt.Close(context.Background())
		return err
	}
	if ready != nil {
		ready(sv.proxyAddrs, sv.adminAddr)
	}
	for {
		select {
		case err := <-sv.errc:
			_ = shutdown(sv.servers, rt, o.shutdownGrace)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if f, ok := accessLog.(*accessLogFile); ok {
					if err := f.reopen(); err != nil {
						log.Error().Err(err).Msg("reload: access log not reopened")
					}
				}
				sv.reloadCertificate(&log)
				reload(o, rt, &log)
				continue
			}
			log.Info().Str("signal", sig.String()).Msg("shutting down")
			return shutdown(sv.servers, rt, o.shutdownGrace)
		}
	}
}

// newRouter builds the router of o, and opens its access log (nil when
// there is none), which the caller closes.
func newRouter(o *options, log *zerolog.Logger) (*router.Router, io.WriteCloser, error) {
	cfg, err := o.routerConfig()
	if err != nil {
		return nil, nil, err
	}
	cfg.Logger = log
	var accessLog io.WriteCloser
	if o.accessLog != "" {
		if accessLog, err = openAccessLog(o.accessLog); err != nil {
			return nil, nil, fmt.Errorf("-access-log: %w", err)
		}
		al := zerolog.New(accessLog).With().Timestamp().Logger()
		cfg.AccessLog = &al
	}
	rt, err := router.New(cfg)
	if err != nil {
		if accessLog != nil {
			_ = accessLog.Close()
		}
		return nil, nil, err
	}
	return rt, accessLog, nil
}

// serving is what startServers started.
type serving struct {
	servers    []shutdowner
	errc       chan error   // each Serve's error
	proxyAddrs []string     // one per -listen
	adminAddr  string       // empty without an admin listener
	cert       *certificate // nil without TLS
}

// reloadCertificate reads the TLS key pair again, if there is one.
func (sv *serving) reloadCertificate(log *zerolog.Logger) {
	if sv.cert == nil {
		return
	}
	if err := sv.cert.reload(); err != nil {
		log.Error().Err(err).Msg("reload: TLS certificate unchanged")
		return
	}
	log.Info().Msg("reload: TLS certificate applied")
}

// startServers listens and serves the proxy and, unless -admin is empty,
// the admin API. On error nothing is left running but rt.
func startServers(o *options, rt *router.Router, log *zerolog.Logger) (*serving, error) {
	sv := &serving{errc: make(chan error, len(o.listen)+1)} // never blocks a Serve's end
	if o.tlsCert != "" {
		var err error
		if sv.cert, err = loadCertificate(o.tlsCert, o.tlsKey); err != nil {
			return nil, fmt.Errorf("-tls-cert: %w", err)
		}
	}
	lns, err := listenAll(o.listen)
	if err != nil {
		return nil, err
	}
	proxy, err := startProxy(o, rt, sv.cert, lns, sv.errc)
	if err != nil {
		return nil, err
	}
	sv.servers = append(sv.servers, proxy)
	for _, ln := range lns {
		sv.proxyAddrs = append(sv.proxyAddrs, ln.Addr().String())
	}
	if o.admin != "" {
		admin, addr, err := startAdmin(o, rt, sv.errc, log)
		if err != nil {
			_ = proxy.Close()
			return nil, err
		}
		sv.servers, sv.adminAddr = append(sv.servers, admin), addr
	}
	for _, addr := range sv.proxyAddrs {
		log.Info().Str("addr", addr).Msg("proxy listening")
	}
	return sv, nil
}

// listenAll opens a listener on every address, or none.
func listenAll(addrs []string) ([]net.Listener, error) {
	lns := make([]net.Listener, 0, len(addrs))
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, open := range lns {
				_ = open.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// startProxy serves rt on lns, one server for all. Plain-text clients go
// to router.Server, which answers the common request itself and hands
// every other connection to an http.Server; TLS (and so HTTP/2) is the
// http.Server's alone.
func startProxy(o *options, rt *router.Router, cert *certificate, lns []net.Listener, errc chan<- error) (shutdowner, error) {
	// No ReadTimeout or WriteTimeout: they would cut long uploads, streams
	// and WebSockets. The router bounds request bodies itself
	// (-body-read-timeout, -min-upload-rate) and upgraded connections
	// (-upgrade-idle-timeout).
	proxy := &http.Server{Handler: rt, ReadHeaderTimeout: o.readHeaderTO, IdleTimeout: o.idleTO}
	if cert != nil {
		proxy.TLSConfig = &tls.Config{GetCertificate: cert.get, MinVersion: tls.VersionTLS12}
		for _, ln := range lns {
			go func() { errc <- proxy.ServeTLS(ln, "", "") }()
		}
		return proxy, nil
	}
	front, err := router.NewServer(proxy)
	if err != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return nil, err
	}
	for _, ln := range lns {
		go func() { errc <- front.Serve(ln) }()
	}
	return front, nil
}

// startAdmin serves rt's admin API on -admin.
func startAdmin(o *options, rt *router.Router, errc chan<- error, log *zerolog.Logger) (shutdowner, string, error) {
	ln, err := net.Listen("tcp", o.admin)
	if err != nil {
		return nil, "", fmt.Errorf("admin listener: %w", err)
	}
	admin := &http.Server{Handler: rt.AdminHandler(), ReadHeaderTimeout: o.readHeaderTO, IdleTimeout: o.idleTO,
		ReadTimeout: 30 * time.Second} // admin bodies are small
	if o.adminTokenFile == "" && !loopback(o.admin) {
		log.Warn().Str("addr", o.admin).Msg("admin API reachable beyond loopback without a token: set -admin-token-file")
	}
	go func() { errc <- admin.Serve(ln) }()
	addr := ln.Addr().String()
	log.Info().Str("addr", addr).Str("page", "http://"+addr+"/ui/").Msg("admin listening; the live page is on /ui/")
	return admin, addr, nil
}

// reload re-reads the backends (from the config file, unless -backend
// gave them), the keys file and the admin token file. Other settings need
// a restart: it warns of those that changed in the file. A bad file
// changes nothing.
func reload(o *options, rt *router.Router, log *zerolog.Logger) {
	if o.configFile != "" {
		reloadFile(o, rt, log)
	}
	if o.keysFile != "" {
		keys, err := readKeys(o.keysFile)
		if err == nil {
			err = rt.SetKeys(keys)
		}
		if err != nil {
			log.Error().Err(err).Msg("reload: keys unchanged")
		} else {
			log.Info().Int("keys", len(keys)).Msg("reload: keys applied")
		}
	}
	if o.adminTokenFile != "" {
		token, err := readToken(o.adminTokenFile)
		if err == nil {
			err = rt.SetAdminToken(token)
		}
		if err != nil {
			log.Error().Err(err).Msg("reload: admin token unchanged")
		} else {
			log.Info().Msg("reload: admin token applied")
		}
	}
}

// reloadFile applies the config file's backends, when they are the ones
// in use, and warns of the changed settings a reload does not apply.
func reloadFile(o *options, rt *router.Router, log *zerolog.Logger) {
	fc, err := readFileConfig(o.configFile)
	if err != nil {
		log.Error().Err(err).Msg("reload: config file not applied")
		return
	}
	if names := o.restartOnly(fc); len(names) > 0 {
		log.Warn().Strs("settings", names).Msg("reload: these changed in the config file and take effect only on a restart")
	}
	if !o.backendsFromFile {
		return // -backend wins over the file, as it did at start
	}
	if err := rt.SetBackends(context.Background(), fc.Backends); err != nil {
		log.Error().Err(err).Msg("reload: backends unchanged")
		return
	}
	log.Info().Int("backends", len(fc.Backends)).Msg("reload: backends applied")
}

// shutdown stops accepting, lets running requests finish within grace,
// then closes the router, which ends upgraded connections (http.Server
// does not track those) and stops the runtime. nil means a clean drain.
func shutdown(servers []shutdowner, rt *router.Router, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = s.Close() // grace is over: what is left ends now
		}
	}
	errs = append(errs, rt.Close(ctx))
	return errors.Join(errs...)
}

// heapFloor returns a never-touched allocation of mib MiB (nil for 0).
// Held for the router's life, it counts as live heap, so Go's collector
// lets the heap grow by at least that much between collections: at the
// router's usual live heap of a few MB it otherwise collects every few MB
// of garbage, which cost about 3% of its CPU under load. A []byte has no
// pointers to scan and its pages are never written, so it takes address
// space, not resident memory.
func heapFloor(mib int) []byte {
	if mib <= 0 {
		return nil
	}
	return make([]byte, mib<<20)
}

// shutdowner is a server that drains, or closes: http.Server and
// router.Server.
type shutdowner interface {
	Shutdown(ctx context.Context) error
	Close() error
}

// loopback reports whether addr listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
