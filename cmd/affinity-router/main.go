// Command affinity-router is a reverse proxy with signed-cookie session
// affinity: every request of a client session goes to the same backend,
// with Heroku's failover (temporary by default) and even rebalancing when
// backends are added. Run it with -h for every flag.
//
//	affinity-router -keys-file keys.txt -backend http://10.0.0.1:8080 -backend http://10.0.0.2:8080
//
// SIGHUP re-reads the config file's backends and the keys file. SIGINT or
// SIGTERM drain and stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
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
func run(args []string, sigs <-chan os.Signal, ready func(proxy, admin string)) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		return fmt.Errorf("bad -log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	cfg, err := o.routerConfig()
	if err != nil {
		return err
	}
	cfg.Logger = &log
	rt, err := router.New(cfg)
	if err != nil {
		return err
	}

	proxy := &http.Server{Addr: o.listen, Handler: rt, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		_ = rt.Close(context.Background())
		return err
	}
	servers := []*http.Server{proxy}
	adminAddr := ""
	errc := make(chan error, 2)
	go func() {
		if o.tlsCert != "" {
			errc <- proxy.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			errc <- proxy.Serve(ln)
		}
	}()
	if o.admin != "" {
		aln, err := net.Listen("tcp", o.admin)
		if err != nil {
			_ = proxy.Close()
			_ = rt.Close(context.Background())
			return fmt.Errorf("admin listener: %w", err)
		}
		admin := &http.Server{Handler: rt.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, admin)
		go func() { errc <- admin.Serve(aln) }()
		adminAddr = aln.Addr().String()
		log.Info().Str("addr", adminAddr).Msg("admin listening")
	}
	log.Info().Str("addr", ln.Addr().String()).Msg("proxy listening")
	if ready != nil {
		ready(ln.Addr().String(), adminAddr)
	}
	for {
		select {
		case err := <-errc:
			shutdown(servers, rt)
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(o, rt, &log)
				continue
			}
			log.Info().Str("signal", sig.String()).Msg("shutting down")
			return shutdown(servers, rt)
		}
	}
}

// reload re-reads the backends (from the config file) and the keys file.
// Other settings need a restart. A bad file changes nothing.
func reload(o *options, rt *router.Router, log *zerolog.Logger) {
	if o.configFile != "" {
		fc, err := readFileConfig(o.configFile)
		if err == nil {
			err = rt.SetBackends(context.Background(), fc.Backends)
		}
		if err != nil {
			log.Error().Err(err).Msg("reload: backends unchanged")
		} else {
			log.Info().Int("backends", len(fc.Backends)).Msg("reload: backends applied")
		}
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
}

func shutdown(servers []*http.Server, rt *router.Router) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, rt.Close(ctx))
	return errors.Join(errs...)
}
