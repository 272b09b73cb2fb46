package main

import (
	"crypto/tls"
	"sync/atomic"
)

// certificate is the -tls-cert key pair, read again on SIGHUP: the
// listener keeps serving, and handshakes from then on present the new
// pair, so a renewed certificate needs no restart (which would cut every
// WebSocket).
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// loadCertificate reads the key pair, or fails with the reason.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	return c, c.reload()
}

// reload reads the files again; on error the pair in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cur.Store(&pair)
	return nil
}

// get is the tls.Config's GetCertificate.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }
