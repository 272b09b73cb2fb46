package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 named cn,
// and its key, to cert and key.
func writeSelfSigned(t *testing.T, cn, cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(priv)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
}

// A renewed certificate is served after SIGHUP, without a restart; a
// broken one leaves the one in use.
func TestSIGHUPReloadsTheTLSCertificate(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer backend.Close()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, "first", cert, key)
	keys := writeFile(t, dir, "keys", key1+"\n")

	sigs := make(chan os.Signal) // unbuffered: a send returns once run takes it
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-keys-file", keys, "-backend", backend.URL, "-listen", "127.0.0.1:0", "-admin", "",
			"-tls-cert", cert, "-tls-key", key, "-log-level", "error"}, sigs, func(p []string, _ string) { addrs <- p[0] })
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	served := func() string {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	require.Equal(t, "first", served())

	writeSelfSigned(t, "renewed", cert, key)
	sigs <- syscall.SIGHUP
	require.Eventually(t, func() bool { return served() == "renewed" }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, os.WriteFile(key, []byte("not a key"), 0o600))
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGHUP // taken once the first was handled
	require.Equal(t, "renewed", served(), "a broken pair leaves the one in use")
	sigs <- syscall.SIGTERM
	require.NoError(t, <-done)
}

func TestAnUnreadableCertificateIsAClearError(t *testing.T) {
	dir := t.TempDir()
	keys := writeFile(t, dir, "keys", key1+"\n")
	bad := writeFile(t, dir, "bad.pem", "not a certificate")
	err := run([]string{"-keys-file", keys, "-backend", "http://127.0.0.1:1", "-listen", "127.0.0.1:0", "-admin", "",
		"-tls-cert", bad, "-tls-key", bad, "-log-level", "error"}, make(chan os.Signal), nil)
	require.ErrorContains(t, err, "-tls-cert")
}
