package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// TestServeTLSBadFlags checks the usage errors of --tls-cert, --tls-key
// and --h2c: exit status 2, before the server listens.
func TestServeTLSBadFlags(t *testing.T) {
	cert := heraldtest.NewCert(t)
	other := heraldtest.NewCert(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(t.TempDir(), "missing.pem")
	cases := []badServeCase{
		{"cert without key", []string{"--tls-cert", cert.CertFile}, nil, "--tls-cert and --tls-key go together"},
		{"key without cert", []string{"--tls-key", cert.KeyFile}, nil, "--tls-cert and --tls-key go together"},
		{"cert from env without key", nil, map[string]string{"HERALD_TLS_CERT": cert.CertFile}, "--tls-cert and --tls-key go together"},
		{"missing cert", []string{"--tls-cert", unreadable, "--tls-key", cert.KeyFile}, nil, "failed to load the certificate and key"},
		{"garbage cert", []string{"--tls-cert", garbage, "--tls-key", cert.KeyFile}, nil, "failed to load the certificate and key"},
		{"garbage key", []string{"--tls-cert", cert.CertFile, "--tls-key", garbage}, nil, "failed to load the certificate and key"},
		{"key of another cert", []string{"--tls-cert", cert.CertFile, "--tls-key", other.KeyFile}, nil, "private key does not match public key"},
		{"h2c with TLS", []string{"--h2c", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, nil, "--h2c is HTTP/2 without TLS"},
		{"h2c with TLS from env", []string{"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, map[string]string{"HERALD_H2C": "1"}, "--h2c is HTTP/2 without TLS"},
		{"h2c not a bool", nil, map[string]string{"HERALD_H2C": "yes please"}, "HERALD_H2C"},
		{"extended CONNECT with TLS", []string{"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, map[string]string{"GODEBUG": "http2xconnect=1"}, "GODEBUG=http2xconnect=1"},
		{"extended CONNECT with h2c", []string{"--h2c"}, map[string]string{"GODEBUG": "madvdontneed=1,http2xconnect=1"}, "GODEBUG=http2xconnect=1"},
	}
	runBadServe(t, cases)
	// Extended CONNECT matters only to HTTP/2: plain HTTP/1.1 starts.
	t.Run("extended CONNECT without HTTP/2", func(t *testing.T) {
		t.Setenv("GODEBUG", "http2xconnect=1")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var stderr bytes.Buffer
		if err := runServe(ctx, []string{"--addr", "127.0.0.1:0"}, io.Discard, &stderr, nil); err != nil {
			t.Errorf("runServe: %v\n%s", err, &stderr)
		}
	})
}
