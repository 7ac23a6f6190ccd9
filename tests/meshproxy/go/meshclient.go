// meshclient: a Go crypto/tls peer for the mesh proxy tests (Contrast's own components are Go).
// usage: meshclient ADDR SERVERNAME CAFILE [CERTCHAIN KEY]
// Dials ADDR with TLS (server verified against CAFILE under SERVERNAME, optional client certificate),
// sends an HTTP/1.0 GET and prints the response body; exits 1 on any error.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 4 && len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: meshclient ADDR SERVERNAME CAFILE [CERTCHAIN KEY]")
		os.Exit(2)
	}
	caPEM, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		fail(fmt.Errorf("no certificates in %s", os.Args[3]))
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: os.Args[2], MinVersion: tls.VersionTLS12}
	if len(os.Args) == 6 {
		cert, err := tls.LoadX509KeyPair(os.Args[4], os.Args[5])
		if err != nil {
			fail(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := tls.Dial("tcp", os.Args[1], cfg)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		fail(err)
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		fail(err)
	}
	if i := bytes.Index(resp, []byte("\r\n\r\n")); i >= 0 {
		resp = resp[i+4:]
	}
	fmt.Printf("%s %s", conn.ConnectionState().PeerCertificates[0].Subject.CommonName, resp)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "meshclient:", err)
	os.Exit(1)
}
